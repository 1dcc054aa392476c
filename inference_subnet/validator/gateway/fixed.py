"""Answers that never change (``GET /health``) sent straight from the ASGI stack, without routing,
dependency injection or response serialization.

A liveness probe is the most frequent request a gateway gets that does no work; through FastAPI it cost
more CPU than the rest of the stack around it. The route stays declared on the app for the OpenAPI
schema (and answers ``HEAD`` and anything this shortcut does not take); this middleware answers ``GET``
with the same bytes. It sits inside :class:`~inference_subnet.telemetry.HttpInstrumentation` and puts the
route in the scope, so the answers are counted under their route template like any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class FixedAnswers:
    """``GET path`` -> a fixed JSON body, for the paths of ``answers``; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, *, answers: Mapping[str, Any], routes: Mapping[str, Any]) -> None:
        self.app = app
        self._answers: dict[str, tuple[dict[str, Any], dict[str, Any], Any]] = {}
        for path, value in answers.items():
            body = json.dumps(value, separators=(",", ":")).encode()
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
            self._answers[path] = (start, {"type": "http.response.body", "body": body}, routes.get(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            fixed = self._answers.get(scope["path"])
            if fixed is not None:
                start, body, route = fixed
                if route is not None:
                    scope["route"] = route
                await send(dict(start))  # a copy each time: a server may keep or change what it is sent
                await send(dict(body))
                return
        await self.app(scope, receive, send)
