"""What every gateway route answers with besides a task's own response: the error it raises, the reason a
bad body gets, and the headers naming the miner that served. Shared by the task routes (``app.py``) and
the OpenAI-compatible ones (``openai.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from inference_subnet.validator.gateway.routing import OpenStream, Served

HEADER_UID = "X-Miner-Uid"
HEADER_HOTKEY = "X-Miner-Hotkey"
HEADER_ATTEMPTS = "X-Attempts"


class GatewayError(Exception):
    """An error answer: status, machine-readable code, a reason safe to show, optional headers."""

    def __init__(
        self, status: int, code: str, reason: str, headers: Mapping[str, str] | None = None,
        param: str | None = None,
    ):
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.headers = dict(headers or {})
        self.param = param
        """The request field at fault, when there is one (OpenAI's ``error.param``)."""


def validation_reason(exc: ValidationError) -> str:
    """The first few problems of a rejected body, each with where it is, on one line."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def served_headers(served: Served | OpenStream) -> dict[str, str]:
    """The headers that name who served an answer and after how many attempts."""
    return {
        HEADER_UID: str(served.neuron.uid),
        HEADER_HOTKEY: served.neuron.hotkey,
        HEADER_ATTEMPTS: str(len(served.attempts)),
    }
