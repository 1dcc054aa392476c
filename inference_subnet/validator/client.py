"""``MinerClient``: how every validator service calls miners.

A miner is untrusted and often broken: slow, refusing connections, answering 5xx or garbage. None of that
is an exception here; every call returns a :class:`CallResult` with its outcome and latency, so loops that
call hundreds of miners never die on one of them. Connections are pooled with a hard limit, every call has
a deadline, and every request (and every retry) is signed afresh with btauth/1 for the receiving hotkey.

Requests go straight to httpx's pooled transport (``AsyncHTTPTransport``), not through an ``AsyncClient``:
the client layer's per-request work (URL and header merging, cookie extraction, the auth and redirect
flows) cost about a fifth of a whole call, and none of it applies here. Redirects are never followed,
requests carry no credentials but their signature, and a cookie set by one miner must not travel to
another miner on the same IP.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import httpx
from bittensor_wallet import Keypair
from pydantic import BaseModel, ValidationError

from inference_subnet.chain.types import Neuron
from inference_subnet.protocol import btauth
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import CapacityInfo

Outcome = Literal["ok", "timeout", "http_error", "invalid", "connect_error"]

DEFAULT_GRACE = 0.5
"""Seconds added to a task's timeout by default, so a miner's own 504 arrives before our deadline."""
URL_CACHE_LIMIT = 4096
"""Parsed miner URLs kept (axons times routes); past it the cache starts over, so that the URLs of axons
that moved cannot pile up."""


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one call to one miner came to. ``ok`` means a 200 whose body is a valid ``task.Response``."""

    ok: bool
    status: int | None
    response: BaseModel | None
    latency: float
    """Seconds from sending to the full answer (or to the failure)."""
    error: str | None
    hotkey: str
    uid: int
    outcome: Outcome = "ok"
    identity: str = ""
    """``hotkey@registration_block``: the key under which scores and quotas are kept."""
    retry_after: float | None = None
    """From a 429: seconds until the miner grants this validator quota again."""
    error_code: str | None = None
    """The miner's ``ErrorBody.error`` when it sent one (e.g. ``rate_limited``, ``timeout``)."""


class StreamError(Exception):
    """A stream failed: before the first chunk (no answer) or in the middle (a broken stream)."""

    def __init__(self, message: str, *, outcome: Outcome, status: int | None = None, hotkey: str = ""):
        super().__init__(message)
        self.outcome = outcome
        self.status = status
        self.hotkey = hotkey


def _parse_answer(task: Task, content: bytes) -> BaseModel:
    """A whole answer as ``task.Response``: the JSON body, or for a streaming task the NDJSON chunks
    assembled (so synthetic rounds and non-streaming callers can use streaming tasks too)."""
    if not task.streaming or task.Chunk is None:
        return task.Response.model_validate_json(content)
    chunks = [task.Chunk.model_validate_json(line) for line in content.splitlines() if line.strip()]
    if not chunks:
        raise ValueError("the miner sent an empty stream")
    return task.assemble(chunks)


def _miner_error(response: httpx.Response) -> tuple[str | None, str]:
    """(error code, reason) from a miner's error answer, tolerating bodies that are not ErrorBody."""
    try:
        data = response.json()
        return str(data.get("error")), str(data.get("reason", ""))[:300]
    except (ValueError, AttributeError):
        return None, response.text[:200]


class MinerClient:
    """Signed, pooled, deadline-bound HTTP calls to miners."""

    def __init__(
        self,
        keypair: Keypair,
        *,
        max_connections: int = 256,
        ip_override: str | None = None,
        connect_timeout: float = 2.0,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.keypair = keypair
        self.ip_override = ip_override
        self.grace = grace
        self._connect_timeout = connect_timeout
        self._urls: dict[tuple[str, int, str], httpx.URL] = {}
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        timeout: float,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request on the pool; the body is read (and the connection returned) unless ``stream``."""
        extensions = {"timeout": self._timeout(timeout).as_dict()}
        request = httpx.Request(method, url, content=body, headers=headers, extensions=extensions)
        response = await self._transport.handle_async_request(request)
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    def _url(self, neuron: Neuron, path: str) -> httpx.URL | None:
        """The miner's URL for ``path``, parsed once per axon and route rather than on every call."""
        axon = neuron.axon
        if axon is None or axon.port == 0:
            return None
        if not self.ip_override and not axon.is_served:
            return None
        key = (axon.ip, axon.port, path)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= URL_CACHE_LIMIT:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(axon.url(self.ip_override) + path)
        return url

    def _signed(self, neuron: Neuron, path: str, body: bytes) -> dict[str, str]:
        headers = btauth.sign(self.keypair, method="POST", path=path, body=body, receiver_ss58=neuron.hotkey)
        headers["Content-Type"] = "application/json"
        return headers

    def _timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(self._connect_timeout, seconds))

    async def call(
        self, task: Task, neuron: Neuron, request: BaseModel, *, timeout: float | None = None
    ) -> CallResult:
        """Send ``request`` to ``neuron`` and parse a ``task.Response``. Never raises on miner faults."""
        deadline = task.timeout + self.grace if timeout is None else timeout
        start = time.perf_counter()

        def result(outcome: Outcome, *, status: int | None = None, response: BaseModel | None = None,
                   error: str | None = None, retry_after: float | None = None,
                   error_code: str | None = None) -> CallResult:
            return CallResult(
                ok=outcome == "ok", status=status, response=response, latency=time.perf_counter() - start,
                error=error, hotkey=neuron.hotkey, uid=neuron.uid, outcome=outcome,
                identity=neuron.identity, retry_after=retry_after, error_code=error_code,
            )

        url = self._url(neuron, task.route)
        if url is None:
            return result("connect_error", error="miner serves no axon")
        body = request.model_dump_json().encode()
        try:
            async with asyncio.timeout(deadline):
                response = await self._send(
                    "POST", url, deadline, body=body, headers=self._signed(neuron, task.route, body)
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                return result("connect_error", error="connect timeout")
            return result("timeout", error=f"no answer within {deadline:g}s")
        except httpx.TransportError as exc:
            return result("connect_error", error=f"{type(exc).__name__}: {exc}"[:300])
        status = response.status_code
        if status != 200:
            code, reason = _miner_error(response)
            retry_after = None
            if status == 429:
                try:
                    retry_after = float(response.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
            outcome: Outcome = "timeout" if status == 504 else "http_error"
            return result(outcome, status=status, error=f"HTTP {status}: {reason}", retry_after=retry_after,
                          error_code=code)
        try:
            parsed = _parse_answer(task, response.content)
        except ValidationError as exc:
            return result("invalid", status=status, error=f"invalid response: {exc.error_count()} error(s)")
        except (ValueError, NotImplementedError) as exc:
            return result("invalid", status=status, error=f"invalid response: {exc}"[:300])
        return result("ok", status=status, response=parsed)

    async def stream(
        self,
        task: Task,
        neuron: Neuron,
        request: BaseModel,
        *,
        first_byte_timeout: float,
        timeout: float,
    ) -> AsyncIterator[BaseModel]:
        """Yield ``task.Chunk`` models as the miner streams them.

        Raises :class:`StreamError` when no valid first chunk arrives within ``first_byte_timeout`` (or at
        all), and when the stream breaks, stalls past ``timeout`` overall, or sends an invalid chunk later.
        """
        chunk_model = task.Chunk
        if chunk_model is None:
            raise ValueError(f"task {task.name!r} does not stream")
        url = self._url(neuron, task.route)
        if url is None:
            raise StreamError("miner serves no axon", outcome="connect_error", hotkey=neuron.hotkey)
        body = request.model_dump_json().encode()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        first_end = min(end, loop.time() + first_byte_timeout)
        sending = self._send("POST", url, timeout, body=body, headers=self._signed(neuron, task.route, body),
                             stream=True)
        try:
            response = await asyncio.wait_for(sending, first_end - loop.time())
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise StreamError("no answer before the first-byte deadline", outcome="timeout",
                              hotkey=neuron.hotkey) from exc
        except httpx.TransportError as exc:
            raise StreamError(f"cannot reach miner: {type(exc).__name__}", outcome="connect_error",
                              hotkey=neuron.hotkey) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                _, reason = _miner_error(response)
                raise StreamError(f"HTTP {response.status_code}: {reason}",
                                  outcome="timeout" if response.status_code == 504 else "http_error",
                                  status=response.status_code, hotkey=neuron.hotkey)
            lines = response.aiter_lines()
            first = True
            while True:
                limit = first_end if first else end
                try:
                    line = await asyncio.wait_for(anext(lines), max(0.0, limit - loop.time()))
                except StopAsyncIteration:
                    if first:
                        raise StreamError("the miner sent an empty stream", outcome="invalid",
                                          status=200, hotkey=neuron.hotkey) from None
                    return
                except (TimeoutError, httpx.TimeoutException) as exc:
                    raise StreamError("the stream stalled past its deadline", outcome="timeout", status=200,
                                      hotkey=neuron.hotkey) from exc
                except httpx.TransportError as exc:
                    raise StreamError(f"the stream broke: {type(exc).__name__}", outcome="connect_error",
                                      status=200, hotkey=neuron.hotkey) from exc
                if not line.strip():
                    continue
                try:
                    chunk = chunk_model.model_validate_json(line)
                except ValidationError as exc:
                    raise StreamError("invalid chunk", outcome="invalid", status=200,
                                      hotkey=neuron.hotkey) from exc
                first = False
                yield chunk
        finally:
            await response.aclose()

    async def capacity(self, neuron: Neuron, *, timeout: float = 5.0) -> CapacityInfo | None:
        """The miner's declared capacities, or ``None`` when it cannot say (unreachable, invalid)."""
        url = self._url(neuron, "/capacity")
        if url is None:
            return None
        try:
            response = await self._send("GET", url, timeout)
            if response.status_code != 200:
                return None
            return CapacityInfo.model_validate_json(response.content)
        except (httpx.HTTPError, ValidationError, json.JSONDecodeError):
            return None
