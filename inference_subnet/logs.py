"""Logging for every service: plain or one JSON object a line, never a secret."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET = re.compile(r"(?i)(secret(?:seed|phrase)?|password|api[_-]?key|authorization|signature)([\"'=:\s]+)([^\s\"',}]+)")
_URL_PASSWORD = re.compile(r"(\w+://)[^/@\s]+@")


def scrub(text: str) -> str:
    """Mask anything that looks like a secret value or a password inside a URL."""
    return _URL_PASSWORD.sub(r"\1***@", _SECRET.sub(r"\1\2***", text))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key in ("service", "task", "miner", "uid", "job_id", "block"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record, so a replaced or redirected stderr
    (a supervisor, a CLI runner) never leaves the root logger writing to a closed file."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger once for a process."""
    handler = _StderrHandler()
    handler.setFormatter(
        _JsonFormatter() if json_lines else _PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "websockets", "async_substrate_interface", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
