"""Logging for every service: text or one JSON object a line, one timestamp a line, never a secret.

A service (``split=True``) writes INFO and DEBUG to stdout and WARNING and above to stderr, as pm2 (its
``-out.log`` and ``-error.log``) and Docker (its two streams) expect. A one-shot command keeps every log line
on stderr: its stdout is its result (a key, JSON), which a log line must not corrupt.

uvicorn's loggers (``uvicorn.error``, ``uvicorn.access``) get no handler of their own (servers are started
with ``log_config=None``): they propagate to the root handlers here, so they share the format. The
timestamp is this formatter's alone: a supervisor must not add another (pm2's ``time`` option stays off).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Literal

from inference_subnet.redaction import redact_url

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SECRET = re.compile(r"(?i)(secret(?:seed|phrase)?|password|api[_-]?key|authorization|signature)([\"'=:\s]+)([^\s\"',}]+)")
_URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")
_EXTRAS = ("service", "task", "miner", "uid", "job_id", "block")
_QUIET_LIBRARIES = (
    "httpx", "httpcore", "websockets", "async_substrate_interface", "uvicorn.access", "alembic"
)
"""Libraries whose INFO lines are noise for an operator (Alembic announces its plugins at import, the HTTP
clients every request): WARNING and above only, unless logging is at DEBUG."""


def scrub(text: str) -> str:
    """Mask anything that looks like a secret value or a password inside a URL."""
    return _URL.sub(lambda m: redact_url(m.group(0)), _SECRET.sub(r"\1\2***", text))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` plus ``exception`` (the traceback text) when there is one,
    and the context fields a record carries (``service``, ``uid``...)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key in _EXTRAS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            data["exception"] = scrub(record.exc_text)
        return json.dumps(data, default=str)


def _iso_time(created: float) -> str:
    """UTC, to the millisecond: ``2026-01-31T12:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout``/``sys.stderr`` is at the time of the record, so a replaced or
    redirected stream (a supervisor, a CLI runner) never leaves the root logger writing to a closed file."""

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        super().__init__()
        self._name = name

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return getattr(sys, self._name)  # type: ignore[no-any-return]

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(level: str = "INFO", log_format: LogFormat = "text", *, split: bool = True) -> None:
    """Configure the root logger of this process (again: the previous handlers are replaced)."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT)
    errors = _StreamHandler("stderr")
    handlers: list[logging.Handler] = [errors]
    if split:
        errors.setLevel(logging.WARNING)
        info = _StreamHandler("stdout")
        info.addFilter(_Below(logging.WARNING))
        handlers.append(info)
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    for name in _QUIET_LIBRARIES:
        quiet = root.level if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
        logging.getLogger(name).setLevel(quiet)


_TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)$")
_ERROR_LEVELS = ("ERROR", "CRITICAL")


class FirstError:
    """The first ERROR (or CRITICAL) record in a process's log, read back line by line, in either format.

    A handler that raises is logged once, with its traceback after the message; an author wants the message
    and the traceback's last line (the exception) on one line, not the 200 lines around it."""

    def __init__(self) -> None:
        self._message: str | None = None
        self._exception: str | None = None
        self._done = False

    @property
    def line(self) -> str | None:
        """``message: ExceptionType: reason`` (or the message alone), once an error was seen."""
        if self._message is None:
            return None
        return f"{self._message}: {self._exception}" if self._exception else self._message

    def feed(self, line: str) -> None:
        if self._done:
            return
        line = line.rstrip()
        record = _TEXT_RECORD.match(line)
        if record is None and line.startswith("{"):
            self._feed_json(line)
            return
        if self._message is None:
            if record is not None and record["level"] in _ERROR_LEVELS:
                self._message = record["message"]
        elif record is not None:
            self._done = True  # the next record: the traceback, if any, is complete
        elif line.strip():
            self._exception = line.strip()  # the last traceback line so far is the exception

    def _feed_json(self, line: str) -> None:
        try:
            data = json.loads(line)
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("level") not in _ERROR_LEVELS:
            return
        self._message = str(data.get("message", ""))
        exception = str(data.get("exception") or "").strip()
        self._exception = exception.splitlines()[-1].strip() if exception else None
        self._done = True
