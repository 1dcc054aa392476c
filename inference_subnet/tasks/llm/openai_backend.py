"""An ``llm`` miner handler that forwards each request to an OpenAI-compatible inference server: vLLM,
SGLang, TGI, llama.cpp's ``llama-server``, Ollama, or ``inference-subnet llm serve``.

``miner --handler inference_subnet.tasks.llm.openai_backend:make_handler`` with
``ISN_EXAMPLES__LLM_BACKEND_URL=http://127.0.0.1:8000/v1`` (and ``..._MODEL``, ``..._API_KEY`` when the
server wants them; handler options of the same names win). The reply streams token by token: each SSE event
becomes an :class:`LLMChunk`, the last one carrying the finish reason and the server's token counts.

The server is trusted no more than any peer: its stream is read through :class:`EventReader` (one line and
one event at most ``max_line_bytes``, the whole stream at most ``max_stream_bytes``), compressed answers are
refused, and the first token and the whole reply each have a deadline within the task's timeout. Whatever
goes wrong becomes a :class:`BackendError` with one clean line naming the server (its URL with any password
masked) and the cause, never the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from inference_subnet.protocol.task import Handler, HandlerError
from inference_subnet.redaction import redact_url
from inference_subnet.tasks.llm.model import FinishReason
from inference_subnet.tasks.llm.sse import EventReader, SSEError
from inference_subnet.tasks.llm.task import LLMChunk, LLMRequest, LLMResponse, LLMTask

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 65_536
"""Largest SSE line or event: one token's chunk is a few hundred bytes."""
MAX_STREAM_BYTES = 8 * 1024 * 1024
"""Largest whole stream: 512 tokens of verbose chunks fit many times over."""
MAX_ERROR_BYTES = 4096
"""Read of an error answer, for its reason."""
MAX_TEXT_CHARS: int = LLMResponse.model_fields["text"].metadata[0].max_length
CONNECT_TIMEOUT = 2.0
"""A server on the same host or network connects in milliseconds; a dead one should fail fast."""
DEADLINE_SHARE = 0.95
"""Of the task's timeout: the handler gives up a little before the miner's own deadline, so its reason is
what the miner logs."""


class BackendError(HandlerError):
    """The inference server failed, answered an error, or broke the stream; the message is one line (the
    miner logs it without a traceback and answers 502)."""


@dataclass(frozen=True)
class BackendConfig:
    """Where to forward and within what bounds."""

    base_url: str
    model: str
    api_key: SecretStr | None = None
    timeout: float = LLMTask.timeout * DEADLINE_SHARE
    first_byte_timeout: float | None = None
    """Seconds to the first token (``None``: the whole ``timeout``)."""
    connections: int = 64
    max_line_bytes: int = MAX_LINE_BYTES
    max_stream_bytes: int = MAX_STREAM_BYTES

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the backend URL must start with http:// or https://: {redact_url(self.base_url)}")

    @property
    def where(self) -> str:
        """The server as messages name it: its URL, any password masked."""
        return redact_url(self.base_url)

    @property
    def chat_url(self) -> str:
        return chat_completions_url(self.base_url)

    def __repr__(self) -> str:  # never the key, even in a traceback's locals
        return f"BackendConfig(base_url={self.where!r}, model={self.model!r})"


def chat_completions_url(base_url: str) -> str:
    """``BASE/chat/completions`` for a base ending in ``/v1`` (or any path), ``/v1/chat/completions`` for a
    bare host, and a full ``.../chat/completions`` URL unchanged."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    scheme, _, rest = base.partition("://")
    return f"{base}/chat/completions" if "/" in rest else f"{base}/v1/chat/completions"


def config_from(options: Mapping[str, Any]) -> BackendConfig:
    """The handler options over the ``examples`` settings: ``base_url`` (``examples.llm_backend_url``),
    ``model`` (``examples.llm_backend_model``, else ``examples.llm_model``), ``api_key``
    (``examples.llm_backend_api_key``), ``connections``, and ``timeout`` (default: the ``llm`` task's)."""
    from inference_subnet.tasks.tiny import example_settings

    examples = example_settings()
    base_url = options.get("base_url") or examples.llm_backend_url
    if not base_url:
        raise ValueError(
            "examples.llm_backend_url is not set: the OpenAI-compatible server to forward llm requests to, "
            "e.g. ISN_EXAMPLES__LLM_BACKEND_URL=http://127.0.0.1:8000/v1"
        )
    key = options.get("api_key", examples.llm_backend_api_key)
    timeout = float(options.get("timeout", LLMTask.timeout)) * DEADLINE_SHARE
    first = options.get("first_byte_timeout")
    return BackendConfig(
        base_url=str(base_url),
        model=str(options.get("model") or examples.llm_backend_model or examples.llm_model),
        api_key=key if isinstance(key, SecretStr) or key is None else SecretStr(str(key)),
        timeout=timeout,
        first_byte_timeout=min(float(first), timeout) if first is not None else None,
        connections=int(options.get("connections", examples.llm_backend_connections)),
        max_line_bytes=int(options.get("max_line_bytes", MAX_LINE_BYTES)),
        max_stream_bytes=int(options.get("max_stream_bytes", MAX_STREAM_BYTES)),
    )


# -- the wire, pure ----------------------------------------------------------------------------------------


def request_body(request: LLMRequest, model: str) -> dict[str, Any]:
    """The chat completion asked of the server: the request's conversation, budget, temperature and seed,
    streamed with usage."""
    return {
        "model": model,
        "messages": [m.model_dump() for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
        "stream": True,
        "stream_options": {"include_usage": True},
        # vLLM's (and `inference-subnet llm serve`'s) extension: the reply's token ids, which spare the
        # validator re-encoding the text (a re-encoding may split it otherwise than the model did).
        "return_token_ids": True,
    }


def finish_reason_of(value: Any) -> FinishReason | None:
    """The task's finish reason for a server's: ``length`` is the budget; anything else that ends the turn
    (``stop``, ``eos``, a stop sequence, ``content_filter``) is ``stop``."""
    if value is None:
        return None
    return "length" if value == "length" else "stop"


@dataclass
class Event:
    """What one chat completion chunk says."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_ids: list[int] | None = None


MAX_TOKEN_IDS = 4096
"""Most token ids the handler keeps of one reply (a task's replies are far shorter)."""


def _ids(value: Any) -> list[int] | None:
    if isinstance(value, list) and len(value) <= MAX_TOKEN_IDS and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in value
    ):
        return value
    return None


def _count(usage: Mapping[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_event(data: str) -> Event:
    """One SSE event's ``data`` as an :class:`Event`; :class:`BackendError` for an error event or a chunk
    that is not a chat completion chunk."""
    try:
        payload = json.loads(data)
    except ValueError:
        raise BackendError("sent an event that is not JSON") from None
    if not isinstance(payload, dict):
        raise BackendError("sent an event that is not a JSON object")
    if "error" in payload or payload.get("object") == "error":
        raise BackendError(f"failed mid-stream: {error_reason(payload)}")
    event = Event()
    usage = payload.get("usage")
    if isinstance(usage, dict):
        event.prompt_tokens = _count(usage, "prompt_tokens")
        event.completion_tokens = _count(usage, "completion_tokens")
    choices = payload.get("choices")
    if choices is None and isinstance(usage, dict):
        return event
    if not isinstance(choices, list):
        raise BackendError("sent a chunk without choices")
    if not choices:
        return event
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BackendError("sent a chunk whose choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise BackendError("sent a chunk whose content is not text")
    event.text = content or ""
    event.finish_reason = finish_reason_of(choice.get("finish_reason"))
    event.token_ids = _ids(choice.get("token_ids"))
    return event


def error_reason(payload: Any) -> str:
    """The reason in an error answer, whatever the server's spelling (``{"error": {"message"}}``,
    ``{"error": "..."}``, ``{"message"}``, ``{"detail"}``), on one short line."""
    reason: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            reason = error.get("message")
        elif isinstance(error, str):
            reason = error
        reason = reason or payload.get("message") or payload.get("detail")
    text = reason if isinstance(reason, str) else json.dumps(payload)[:300]
    return one_line(text)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- the calls ---------------------------------------------------------------------------------------------


class OpenAIBackend:
    """Chat completions streamed from one server, over a bounded pool opened in the running event loop."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # a pool belongs to the loop that opened it
            c = self.config
            headers = {"content-type": "application/json", "accept": "text/event-stream",
                       "accept-encoding": "identity"}
            if c.api_key is not None and c.api_key.get_secret_value():
                headers["authorization"] = f"Bearer {c.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(c.timeout, connect=min(CONNECT_TIMEOUT, c.timeout)),
                limits=httpx.Limits(max_connections=c.connections, max_keepalive_connections=c.connections),
                follow_redirects=False,
                trust_env=False,  # no proxy or .netrc from the environment between a miner and its server
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """The reply to ``request`` as chunks; :class:`BackendError` when the server fails."""
        c = self.config
        where = c.where
        loop = asyncio.get_running_loop()
        end = loop.time() + c.timeout
        first_end = min(end, loop.time() + (c.first_byte_timeout or c.timeout))
        client = self._http()
        body = json.dumps(request_body(request, c.model)).encode()
        try:
            async with asyncio.timeout_at(first_end):
                response = await client.send(client.build_request("POST", c.chat_url, content=body), stream=True)
        except TimeoutError:
            seconds = c.first_byte_timeout or c.timeout
            raise BackendError(f"{where} did not answer within {seconds:g}s") from None
        except httpx.TimeoutException as exc:
            raise BackendError(f"{where} did not answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach {where}: {type(exc).__name__}: {one_line(str(exc))}") from None
        try:
            if response.status_code != 200:
                raise BackendError(f"{where} answered HTTP {response.status_code}: "
                                   f"{await self._reason(response, end)}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise BackendError(f"{where} sent a {one_line(encoding, 40)!r}-encoded stream it was not asked for")
            async for chunk in self._chunks(response, first_end, end):
                yield chunk
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response, first_end: float, end: float) -> AsyncIterator[LLMChunk]:
        c = self.config
        where = c.where
        reader = EventReader(max_line=c.max_line_bytes, max_total=c.max_stream_bytes)
        raw = response.aiter_raw()
        last = Event()
        ids: list[int] | None = []
        chars = 0
        first = True
        done = saw_done = False
        first_seconds = c.first_byte_timeout or c.timeout
        try:
            while not done:
                try:
                    async with asyncio.timeout_at(first_end if first else end):
                        chunk = await anext(raw)
                    events = reader.feed(chunk)
                except StopAsyncIteration:
                    events = reader.end()
                    done = True
                except TimeoutError:
                    what = f"sent no token within {first_seconds:g}s" if first else (
                        f"did not finish within {c.timeout:g}s")
                    raise BackendError(f"{where} {what}") from None
                except SSEError as exc:
                    raise BackendError(f"{where}: {exc}") from None
                except httpx.HTTPError as exc:
                    raise BackendError(f"{where} broke the stream: {type(exc).__name__}") from None
                for data in events:
                    if data.strip() == "[DONE]":
                        done = saw_done = True
                        break
                    try:
                        event = read_event(data)
                    except BackendError as exc:
                        raise BackendError(f"{where} {exc}") from None
                    if event.text:
                        chars += len(event.text)
                        if chars > MAX_TEXT_CHARS:
                            raise BackendError(f"{where} sent more than {MAX_TEXT_CHARS} characters")
                        first = False
                        yield LLMChunk(delta=event.text)
                    last.finish_reason = event.finish_reason or last.finish_reason
                    if event.token_ids is not None and ids is not None:
                        ids = ids + event.token_ids if len(ids) + len(event.token_ids) <= MAX_TOKEN_IDS else None
                    if event.prompt_tokens is not None:
                        last.prompt_tokens = event.prompt_tokens
                    if event.completion_tokens is not None:
                        last.completion_tokens = event.completion_tokens
                    if event.finish_reason is not None:
                        first = False  # an empty reply that ended is an answer, not a stall
        finally:
            await raw.aclose()  # type: ignore[attr-defined]
        if last.finish_reason is None and not saw_done:
            raise BackendError(f"{where} ended the stream before the reply's end")
        yield LLMChunk(
            delta="",
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            token_ids=ids or None,
        )

    async def _reason(self, response: httpx.Response, end: float) -> str:
        """The reason of an error answer, from at most :data:`MAX_ERROR_BYTES` of it, within the deadline."""
        parts: list[bytes] = []
        size = 0
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout_at(end):
                async for chunk in response.aiter_raw():
                    parts.append(chunk)
                    size += len(chunk)
                    if size >= MAX_ERROR_BYTES:
                        break
        text = b"".join(parts)[:MAX_ERROR_BYTES].decode("utf-8", "replace")
        try:
            return error_reason(json.loads(text))
        except ValueError:
            return one_line(text) or "no reason given"


def make_handler(options: dict[str, Any]) -> Handler:
    """The backend handler: ``options`` over the ``examples.llm_backend_*`` settings (:func:`config_from`).
    Inside a running miner worker, the server's ``/v1/models`` is asked once in the background, and a server
    that cannot be reached or does not serve the model is logged at once rather than at the first request."""
    config = config_from(options)
    backend = OpenAIBackend(config)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        probe = loop.create_task(check_backend(config), name="llm-backend-check")
        _PROBES.add(probe)
        probe.add_done_callback(_PROBES.discard)

    async def handle(request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async for chunk in backend.stream(request):
            yield chunk

    return handle


_PROBES: set[asyncio.Task[None]] = set()


async def check_backend(config: BackendConfig) -> None:
    """Log whether the server answers ``GET /v1/models`` and lists the model (a warning when not)."""
    url = config.chat_url.removesuffix("/chat/completions") + "/models"
    headers = {"accept-encoding": "identity"}
    if config.api_key is not None and config.api_key.get_secret_value():
        headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=CONNECT_TIMEOUT), trust_env=False) as client:
            async with client.stream("GET", url, headers=headers) as response:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > 1_048_576:
                        raise ValueError("a model list over 1 MiB")
        if response.status_code != 200:
            log.warning("llm backend %s: GET /models answered HTTP %d", config.where, response.status_code)
            return
        listed = [m.get("id") for m in json.loads(body).get("data", []) if isinstance(m, dict)]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        log.warning("llm backend %s cannot be checked: %s", config.where, one_line(f"{type(exc).__name__}: {exc}"))
        return
    if config.model not in listed:
        log.warning("llm backend %s does not list model %r (it lists %s)", config.where, config.model,
                    one_line(", ".join(map(str, listed[:10])) or "nothing", 200))
    else:
        log.info("llm backend %s serves %s", config.where, config.model)
