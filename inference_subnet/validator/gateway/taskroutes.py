"""``POST /v1/tasks/{task}`` of the installed tasks, answered as pure ASGI instead of through FastAPI.

A task request is the gateway's hot path. Through FastAPI it also paid for route matching over every
route, the ``HTTPBearer`` dependency and its solver, the request object, an exit stack and the exception
middleware: more CPU than the key check, the limits and the log together. The pipeline is the same one
(:meth:`Gateway.authenticate`, :meth:`Gateway.serve`, :meth:`Gateway.serve_stream`); only the plumbing
around it is gone. The routes stay declared on the FastAPI app, which still documents them in the OpenAPI
schema and answers what this layer does not take (other methods, unknown tasks).

It sits inside :class:`~.bodylimit.BodyLimit` (the body it reads is bounded and already whole) and puts
the declared route in the scope, so the HTTP metrics count it under its route template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from inference_subnet.protocol.task import Task
from inference_subnet.validator.gateway.answers import GatewayError
from inference_subnet.validator.gateway.errors import openai_error_response
from inference_subnet.validator.gateway.traffic import KEY_STATE


class TaskPipeline(Protocol):
    """What of :class:`~.app.Gateway` the task routes call."""

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Any: ...

    async def serve(self, task: Task, key: Any, body: bytes) -> Response: ...

    async def serve_stream(self, task: Task, key: Any, body: bytes) -> Response: ...


def bearer(scope: Scope) -> HTTPAuthorizationCredentials | None:
    """The ``Authorization: Bearer ...`` credentials exactly as FastAPI's ``HTTPBearer(auto_error=False)``
    reads them: the first such header; no scheme, no credentials or another scheme is no key."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            if not (scheme and credentials) or scheme.lower() != "bearer":
                return None
            return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
    return None


def error_response(exc: GatewayError) -> Response:
    """Task routes live under ``/v1/``: OpenAI's error shape, as every ``/v1/`` answer."""
    return openai_error_response(exc.status, exc.code, exc.reason, exc.headers, param=exc.param)


class TaskRoutes:
    """Pure ASGI middleware: ``POST`` to a task's path runs the gateway pipeline; the rest goes to ``app``."""

    def __init__(self, app: ASGIApp, *, gateway: TaskPipeline, tasks: Mapping[str, Task],
                 routes: Mapping[str, Any]) -> None:
        self.app = app
        self.gateway = gateway
        self._tasks = {path: (task, routes.get(path)) for path, task in tasks.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self._tasks.get(scope["path"])
            if found is not None:
                task, route = found
                if route is not None:
                    scope["route"] = route
                response = await self._answer(task, scope, receive)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, task: Task, scope: Scope, receive: Receive) -> Response:
        try:
            key = await self.gateway.authenticate(bearer(scope))
            scope.setdefault("state", {})[KEY_STATE] = str(key.id)  # the traffic counter's key
            body = await _body(receive)
            if task.streaming:
                return await self.gateway.serve_stream(task, key, body)
            return await self.gateway.serve(task, key, body)
        except GatewayError as exc:
            return error_response(exc)


async def _body(receive: Receive) -> bytes:
    """The request body (already bounded and joined by the body limit in front)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)
