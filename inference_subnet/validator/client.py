"""``MinerClient``: how every validator service calls miners.

A miner is untrusted and often broken: slow, refusing connections, answering 5xx or garbage. None of that
is an exception here; every call returns a :class:`CallResult` with its outcome and latency, so loops that
call hundreds of miners never die on one of them. Connections are pooled per miner address with a limit per
miner and an overall cap, every call has a deadline, and every request (and every retry) is signed afresh
with btauth/1 for the receiving hotkey.

The transport is aiohttp's client: its C HTTP parser and per-address connection lookup cost about a fifth of
the CPU per call of httpx's pooled transport (``benchmarks/gateway.py`` measures both through the gateway),
and a validator's CPU is mostly this client. Redirects are never followed, requests carry no credentials but
their signature, no cookie is kept (one set by one miner must not travel to another miner on the same IP),
and a miner's response head is bounded in line length, field size and number of fields.

What a miner sends is read with a cap, never whole: an answer (a body, or a whole stream) up to the task's
``max_response_bytes``, each streamed line up to ``max_stream_line_bytes``, an error body only up to
``max_error_body_bytes`` for its reason. A declared length over the cap is refused before any byte of the
body is read; past a cap the call is ``invalid`` and the connection is closed rather than returned to the
pool (its unread rest would otherwise be the next answer). Bodies are read raw: no compression is asked
for, and an encoded answer is refused, because a few compressed kilobytes can inflate to gigabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from yarl import URL

import aiohttp
from bittensor_wallet import Keypair
from pydantic import BaseModel, ValidationError

from inference_subnet.chain.types import Neuron
from inference_subnet.protocol import btauth
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import CapacityInfo
from inference_subnet.settings import ValidatorSettings

Outcome = Literal["ok", "timeout", "http_error", "invalid", "connect_error"]

DEFAULT_GRACE = 0.5
"""Seconds added to a task's timeout by default, so a miner's own 504 arrives before our deadline."""
URL_CACHE_LIMIT = 4096
"""Parsed miner URLs kept (axons times routes); past it the cache starts over, so that the URLs of axons
that moved cannot pile up."""
_LIMITS = ValidatorSettings.model_fields
DEFAULT_MAX_RESPONSE_BYTES: int = _LIMITS["max_response_bytes"].default
DEFAULT_MAX_STREAM_LINE_BYTES: int = _LIMITS["max_stream_line_bytes"].default
DEFAULT_MAX_ERROR_BODY_BYTES: int = _LIMITS["max_error_body_bytes"].default
MAX_TOTAL_CONNECTIONS = 1024
"""Connections open to all miners together, whatever the limit per miner: a metagraph has at most a few
hundred axons, and a validator's file descriptors are finite."""
MAX_HEAD_LINE_BYTES = 8190
"""Longest status line or header field a miner may send (aiohttp's default, stated here as a bound)."""
MAX_HEAD_FIELDS = 64
"""Most header fields in a miner's answer: with :data:`MAX_HEAD_LINE_BYTES`, at most half a MiB of head."""
MAX_CAPACITY_BYTES = 65_536
"""Largest ``GET /capacity`` answer read: a few task names and numbers."""


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
    quota_reason: str | None = None
    """From a 429: why (``beyond_share``: past this validator's guaranteed pace and nothing to lend;
    ``capacity``: the miner's epoch capacity is used up), from the ``x-quota-reason`` header."""


class StreamError(Exception):
    """A stream failed: before the first chunk (no answer) or in the middle (a broken stream)."""

    def __init__(self, message: str, *, outcome: Outcome, status: int | None = None, hotkey: str = ""):
        super().__init__(message)
        self.outcome = outcome
        self.status = status
        self.hotkey = hotkey


class AnswerRefused(ValueError):
    """An answer the client stopped reading: over its cap, a streamed line too long, or encoded."""


class LineSplitter:
    """NDJSON lines out of byte chunks as they arrive, holding at most one line.

    ``feed`` refuses (:class:`AnswerRefused`) a line longer than ``max_line`` and a stream longer than
    ``max_total`` as soon as the chunk that passes the cap arrives, so what it buffers stays under the caps
    however the miner cuts its bytes. Lines are split on ``\\n`` only: a ``\\r`` before it is JSON whitespace.
    """

    __slots__ = ("max_line", "max_total", "_pending", "_total")

    def __init__(self, *, max_line: int, max_total: int) -> None:
        self.max_line = max_line
        self.max_total = max_total
        self._pending = bytearray()
        self._total = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes (empty ones included; the caller skips them)."""
        self._total += len(chunk)
        if self._total > self.max_total:
            raise AnswerRefused(f"the stream passed its cap of {self.max_total} bytes")
        lines: list[bytes] = []
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if self._pending:
                self._pending += chunk[start:end]
                line = bytes(self._pending)
                self._pending.clear()
            else:
                line = chunk[start:end]
            if len(line) > self.max_line:
                raise AnswerRefused(f"a streamed line passed its cap of {self.max_line} bytes")
            lines.append(line)
            start = end + 1
        if len(self._pending) + len(chunk) - start > self.max_line:
            raise AnswerRefused(f"a streamed line passed its cap of {self.max_line} bytes")
        if start < len(chunk):
            self._pending += memoryview(chunk)[start:]
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the stream did not end with a newline."""
        if not self._pending:
            return []
        line = bytes(self._pending)
        self._pending.clear()
        return [line]


def _check_encoding(response: aiohttp.ClientResponse) -> None:
    encoding = response.headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise AnswerRefused(f"content-encoding {encoding[:40]!r} was not asked for")


def _check_declared(response: aiohttp.ClientResponse, cap: int) -> None:
    """Refuse a body whose declared length passes ``cap`` before reading any of it (the parser has checked
    the header is a number, and ends the body there)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise AnswerRefused(f"the miner declared {declared} bytes, over the cap of {cap}")


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, or :class:`AnswerRefused` as soon as it passes ``cap`` bytes."""
    _check_encoding(response)
    _check_declared(response, cap)
    parts: list[bytes] = []
    total = 0
    while chunk := await response.content.readany():
        total += len(chunk)
        if total > cap:
            raise AnswerRefused(f"the answer passed its cap of {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (an error's reason); the rest is never read."""
    parts: list[bytes] = []
    total = 0
    while total < limit and (chunk := await response.content.readany()):
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:limit]


async def _lines(response: aiohttp.ClientResponse, splitter: LineSplitter) -> AsyncGenerator[bytes, None]:
    while chunk := await response.content.readany():
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.end():
        yield line


def _parse_answer(task: Task, content: bytes, max_line: int) -> BaseModel:
    """A whole answer as ``task.Response``: the JSON body, or for a streaming task the NDJSON chunks
    assembled (so synthetic rounds and non-streaming callers can use streaming tasks too), each line within
    ``max_line`` bytes as in :meth:`MinerClient.stream`."""
    if not task.streaming or task.Chunk is None:
        return task.Response.model_validate_json(content)
    splitter = LineSplitter(max_line=max_line, max_total=len(content))
    lines = [*splitter.feed(content), *splitter.end()]
    chunks = [task.Chunk.model_validate_json(line) for line in lines if line.strip()]
    if not chunks:
        raise ValueError("the miner sent an empty stream")
    return task.assemble(chunks)


def _miner_error(content: bytes) -> tuple[str | None, str]:
    """(error code, reason) from the start of a miner's error answer, tolerating bodies that are not
    ErrorBody (or were cut at the error-body cap)."""
    try:
        data = json.loads(content)
        return str(data.get("error")), str(data.get("reason", ""))[:300]
    except (ValueError, AttributeError, RecursionError):
        return None, content[:200].decode("utf-8", "replace")


class MinerClient:
    """Signed, pooled, deadline-bound HTTP calls to miners."""

    def __init__(
        self,
        keypair: Keypair,
        *,
        max_connections: int = 256,
        max_total_connections: int = MAX_TOTAL_CONNECTIONS,
        ip_override: str | None = None,
        connect_timeout: float = 2.0,
        grace: float = DEFAULT_GRACE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_stream_line_bytes: int = DEFAULT_MAX_STREAM_LINE_BYTES,
        max_error_body_bytes: int = DEFAULT_MAX_ERROR_BODY_BYTES,
    ) -> None:
        self.keypair = keypair
        self.ip_override = ip_override
        self.grace = grace
        self.max_response_bytes = max_response_bytes
        """Cap of a whole answer for tasks that set no ``max_response_bytes`` of their own."""
        self.max_stream_line_bytes = max_stream_line_bytes
        self.max_error_body_bytes = max_error_body_bytes
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._max_total = max(max_connections, max_total_connections)
        self._urls: dict[tuple[str, int, str], URL] = {}
        self._session: aiohttp.ClientSession | None = None
        """Made on the first call, inside the event loop that uses it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_total, limit_per_host=self._max_connections, use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                max_line_size=MAX_HEAD_LINE_BYTES,
                max_field_size=MAX_HEAD_LINE_BYTES,
                max_headers=MAX_HEAD_FIELDS,
            )
        return self._session

    async def _send(
        self,
        method: str,
        url: URL,
        timeout: float,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """One request on the pool, up to the answer's head; the caller reads the body (with a cap) and
        releases the response: a finished body returns the connection to the pool, an unfinished one
        closes it. Waiting for a free connection counts against the connect deadline."""
        connect = min(self._connect_timeout, timeout)
        return await self._http().request(
            method,
            url,
            data=body if method != "GET" else None,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=connect, sock_read=timeout),
        )

    def _cap(self, task: Task) -> int:
        return task.max_response_bytes or self.max_response_bytes

    def _url(self, neuron: Neuron, path: str) -> URL | None:
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
            url = self._urls[key] = URL(axon.url(self.ip_override) + path)
        return url

    def _signed(self, neuron: Neuron, path: str, body: bytes) -> dict[str, str]:
        headers = btauth.sign(self.keypair, method="POST", path=path, body=body, receiver_ss58=neuron.hotkey)
        headers["Content-Type"] = "application/json"
        return headers

    async def call(
        self, task: Task, neuron: Neuron, request: BaseModel, *, timeout: float | None = None
    ) -> CallResult:
        """Send ``request`` to ``neuron`` and parse a ``task.Response``. Never raises on miner faults."""
        deadline = task.timeout + self.grace if timeout is None else timeout
        start = time.perf_counter()

        def result(outcome: Outcome, *, status: int | None = None, response: BaseModel | None = None,
                   error: str | None = None, retry_after: float | None = None,
                   error_code: str | None = None, quota_reason: str | None = None) -> CallResult:
            return CallResult(
                ok=outcome == "ok", status=status, response=response, latency=time.perf_counter() - start,
                error=error, hotkey=neuron.hotkey, uid=neuron.uid, outcome=outcome,
                identity=neuron.identity, retry_after=retry_after, error_code=error_code,
                quota_reason=quota_reason,
            )

        url = self._url(neuron, task.route)
        if url is None:
            return result("connect_error", error="miner serves no axon")
        body = request.model_dump_json().encode()
        status: int | None = None
        try:
            async with asyncio.timeout(deadline):
                response = await self._send(
                    "POST", url, deadline, body=body, headers=self._signed(neuron, task.route, body)
                )
                try:
                    status = response.status
                    if status == 200:
                        content = await _read_capped(response, self._cap(task))
                    else:
                        content = await _read_prefix(response, self.max_error_body_bytes)
                finally:
                    response.release()  # (a body not read to its end closes the connection)
        except AnswerRefused as exc:
            return result("invalid", status=status, error=f"invalid response: {exc}"[:300])
        except aiohttp.ConnectionTimeoutError:
            return result("connect_error", error="connect timeout")
        except TimeoutError:
            return result("timeout", error=f"no answer within {deadline:g}s")
        except aiohttp.ClientResponseError as exc:  # not HTTP: a bad head, or bytes past the declared body
            return result("invalid", status=status, error=f"invalid response: {exc.message}"[:300])
        except aiohttp.ClientError as exc:
            return result("connect_error", error=f"{type(exc).__name__}: {exc}"[:300])
        if status != 200:
            code, reason = _miner_error(content)
            retry_after = None
            quota_reason = None
            if status == 429:
                try:
                    retry_after = float(response.headers.get("retry-after", ""))
                except ValueError:
                    retry_after = None
                quota_reason = response.headers.get("x-quota-reason", "")[:32] or None
            outcome: Outcome = "timeout" if status == 504 else "http_error"
            return result(outcome, status=status, error=f"HTTP {status}: {reason}", retry_after=retry_after,
                          error_code=code, quota_reason=quota_reason)
        try:
            parsed = _parse_answer(task, content, self.max_stream_line_bytes)
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
        all), and when the stream breaks, stalls past ``timeout`` overall, or sends an invalid chunk later;
        a line over ``max_stream_line_bytes`` or a stream over the task's cap is an invalid chunk.
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
        sending = self._send("POST", url, timeout, body=body, headers=self._signed(neuron, task.route, body))
        try:
            response = await asyncio.wait_for(sending, first_end - loop.time())
        except aiohttp.ConnectionTimeoutError as exc:
            raise StreamError("cannot reach miner: connect timeout", outcome="connect_error",
                              hotkey=neuron.hotkey) from exc
        except TimeoutError as exc:
            raise StreamError("no answer before the first-byte deadline", outcome="timeout",
                              hotkey=neuron.hotkey) from exc
        except aiohttp.ClientError as exc:
            raise StreamError(f"cannot reach miner: {type(exc).__name__}", outcome="connect_error",
                              hotkey=neuron.hotkey) from exc
        lines: AsyncGenerator[bytes, None] | None = None
        try:
            if response.status != 200:
                reason = ""
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):  # no reason is still an HTTP error
                    async with asyncio.timeout_at(end):
                        _, reason = _miner_error(await _read_prefix(response, self.max_error_body_bytes))
                raise StreamError(f"HTTP {response.status}: {reason}",
                                  outcome="timeout" if response.status == 504 else "http_error",
                                  status=response.status, hotkey=neuron.hotkey)
            cap = self._cap(task)
            try:
                _check_encoding(response)
                _check_declared(response, cap)
            except AnswerRefused as exc:
                raise StreamError(str(exc), outcome="invalid", status=200, hotkey=neuron.hotkey) from exc
            lines = _lines(response, LineSplitter(max_line=self.max_stream_line_bytes, max_total=cap))
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
                except TimeoutError as exc:
                    raise StreamError("the stream stalled past its deadline", outcome="timeout", status=200,
                                      hotkey=neuron.hotkey) from exc
                except aiohttp.ClientError as exc:
                    raise StreamError(f"the stream broke: {type(exc).__name__}", outcome="connect_error",
                                      status=200, hotkey=neuron.hotkey) from exc
                except AnswerRefused as exc:
                    raise StreamError(str(exc), outcome="invalid", status=200, hotkey=neuron.hotkey) from exc
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
            if lines is not None:
                await lines.aclose()
            response.release()  # (a body not read to its end closes the connection instead of pooling it)

    async def capacity(self, neuron: Neuron, *, timeout: float = 5.0) -> CapacityInfo | None:
        """The miner's declared capacities, or ``None`` when it cannot say (unreachable, invalid)."""
        url = self._url(neuron, "/capacity")
        if url is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                response = await self._send("GET", url, timeout)
                try:
                    if response.status != 200:
                        return None
                    content = await _read_capped(response, MAX_CAPACITY_BYTES)
                finally:
                    response.release()
            return CapacityInfo.model_validate_json(content)
        except (TimeoutError, aiohttp.ClientError, ValidationError, AnswerRefused):
            return None
