"""413 for request bodies over a limit, before any handler (or JSON parser) sees them.

A declared ``Content-Length`` over the limit is refused without reading a byte; a chunked body is read up
to the limit and refused as soon as it crosses it. Either way memory use per request is bounded by the
limit, whatever the client sends. The accepted body is replayed to the app unchanged. The refusal has the
shape of the route's other errors (OpenAI's under ``/v1/``).

After a 413 the rest of the upload is read and discarded (up to :data:`DRAIN_LIMIT`): closing a socket
with unread data makes the kernel reset the connection, and the client would see a reset instead of 413.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_subnet.protocol.wire import ErrorBody
from inference_subnet.validator.gateway.errors import is_v1, openai_error_bytes

DRAIN_LIMIT = 16 * 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, receive, more_body=True)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, send, receive, more_body=message.get("more_body", False))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, receive: Receive, *, more_body: bool) -> None:
        reason = f"request body exceeds {self.max_bytes} bytes"
        if is_v1(scope.get("path", "")):
            body = openai_error_bytes(413, "payload_too_large", reason)
        else:
            body = ErrorBody(error="payload_too_large", reason=reason).model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        drained = 0
        while more_body and drained < DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            more_body = message.get("more_body", False)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
