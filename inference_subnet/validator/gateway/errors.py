"""One error shape for everything under ``/v1/``: OpenAI's ``{"error": {"message", "type", "param", "code"}}``.

OpenAI's clients (``openai``, LangChain, ...) read errors in this shape, and a gateway whose task routes and
chat routes answered in two shapes would make every client handle both. So every answer under ``/v1/`` uses
it, whichever layer refuses (the body limit, the router's 404/405, a handler's :class:`GatewayError`), while
the service routes (``/health``, ``/ready``, the dashboard) keep the project's ``ErrorBody``.

``type`` follows the HTTP status, as OpenAI's clients map it to exception classes; ``code`` is the gateway's
machine-readable reason (``rate_limited``, ``no_miner``, ``unsupported_parameter``...); ``param`` names the
request field at fault when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fastapi.responses import JSONResponse
from pydantic import BaseModel

V1 = "/v1/"

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error answer under ``/v1/``."""

    error: OpenAIErrorDetail


def is_v1(path: str) -> bool:
    """Whether ``path`` is one of the API's (OpenAI-shaped errors) rather than a service route."""
    return path.startswith(V1) or path == V1.rstrip("/")


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status: ``invalid_request_error`` for the other 4xx,
    ``server_error`` for 5xx."""
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def openai_error(status: int, code: str, message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(error=OpenAIErrorDetail(message=message, type=error_type(status), param=param, code=code))


def openai_error_bytes(status: int, code: str, message: str, param: str | None = None) -> bytes:
    return json.dumps(openai_error(status, code, message, param).model_dump()).encode()


def openai_error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        openai_error(status, code, message, param).model_dump(), status_code=status, headers=dict(headers or {})
    )
