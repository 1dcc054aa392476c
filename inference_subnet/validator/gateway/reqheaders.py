"""Headers every gateway answer carries: ``x-request-id``, and what the pipeline adds for the request at hand
(the key's ``x-ratelimit-*`` state), whichever layer answers, an unexpected exception's 500 included.

A client-sent ``x-request-id`` is kept when it is short and plain (so a caller can follow its own id through
the gateway's log); anything else is replaced by a generated one, so a peer can never put arbitrary bytes in
a log line or a response header. The pipeline adds headers through :func:`add_response_headers`, which
writes into a per-request dict held in a context variable: the limiter's decision is made deep in the
pipeline, and a 429, a JSON answer and a stream all need it on their status line.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_subnet.protocol.wire import ErrorBody
from inference_subnet.validator.gateway.errors import is_v1, openai_error_bytes

HEADER_REQUEST_ID = "x-request-id"
MAX_REQUEST_ID = 128
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,%d}" % MAX_REQUEST_ID)

_current: ContextVar[tuple[str, dict[str, str]] | None] = ContextVar("isn_request_headers", default=None)


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it may serve as a request id (1-128 letters, digits, ``._:-``), else ``None``."""
    return value if value is not None and _SANE.fullmatch(value) else None


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


def current_request_id() -> str | None:
    """The id of the request being served (``None`` outside one)."""
    state = _current.get()
    return state[0] if state else None


def add_response_headers(headers: Mapping[str, str]) -> None:
    """Put ``headers`` on the answer to the request being served (no-op outside one)."""
    state = _current.get()
    if state is not None:
        state[1].update(headers)


def ratelimit_headers(limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
    """OpenAI's request rate-limit headers: the key's requests per minute, what it may send at once now,
    and when its whole burst is back (a duration such as ``1.5s`` or ``2m0s``, as OpenAI writes it)."""
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": duration(reset_seconds),
    }


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class ResponseHeaders:
    """ASGI middleware: a request id for every HTTP request, and the pipeline's headers on its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                sent = sane_request_id(value.decode("latin-1"))
                break
        request_id = sent or new_request_id()
        extra: dict[str, str] = {}
        token = _current.set((request_id, extra))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", request_id.encode()))
                for name, value in extra.items():
                    if name.encode().lower() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if not started:  # a bug: 500 in the route's shape, with its id, and nothing of the exception
                await _internal_error(scope, tracked)
            raise  # logged by the server, which sends nothing more once a response started
        finally:
            _current.reset(token)


async def _internal_error(scope: Scope, send: Send) -> None:
    if is_v1(scope.get("path", "")):
        body = openai_error_bytes(500, "internal_error", "internal error")
    else:
        body = ErrorBody(error="internal_error", reason="internal error").model_dump_json().encode()
    await send({"type": "http.response.start", "status": 500, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
