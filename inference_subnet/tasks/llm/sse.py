"""Server-sent events out of byte chunks as they arrive, with every size bounded.

An inference server is a peer like any other: a line that never ends or a stream that never stops must not
make a miner hold more than a cap. :class:`EventReader` holds at most one line and one event, refuses
(:class:`SSEError`) a line or an event past ``max_line`` bytes and a stream past ``max_total`` bytes as
soon as the chunk that passes the cap arrives, however the peer cuts its bytes. Pure: no I/O.

Lines end in ``\\n`` or ``\\r\\n`` (what every OpenAI-compatible server sends); an empty line ends an event;
``data:`` lines are joined with ``\\n`` as the SSE specification says; comments (``:``) and other fields
(``event:``, ``id:``, ``retry:``) are read and dropped.
"""

from __future__ import annotations


class SSEError(ValueError):
    """The stream passed one of its caps or is not UTF-8."""


class EventReader:
    """``feed(chunk)`` returns the ``data`` of the events the chunk completes; ``end()`` the last one."""

    __slots__ = ("max_line", "max_total", "_pending", "_data", "_data_size", "_total")

    def __init__(self, *, max_line: int, max_total: int) -> None:
        self.max_line = max_line
        self.max_total = max_total
        self._pending = bytearray()
        self._data: list[str] = []
        self._data_size = 0
        self._total = 0

    def feed(self, chunk: bytes) -> list[str]:
        self._total += len(chunk)
        if self._total > self.max_total:
            raise SSEError(f"the stream passed its cap of {self.max_total} bytes")
        events: list[str] = []
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if len(self._pending) + end - start > self.max_line:
                raise SSEError(f"a line passed its cap of {self.max_line} bytes")
            self._pending += chunk[start:end]
            line = bytes(self._pending)
            self._pending.clear()
            start = end + 1
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        if len(self._pending) + len(chunk) - start > self.max_line:
            raise SSEError(f"a line passed its cap of {self.max_line} bytes")
        self._pending += chunk[start:]
        return events

    def end(self) -> list[str]:
        """The event a stream ended inside of (no final empty line), if any."""
        events = []
        if self._pending:
            line = bytes(self._pending)
            self._pending.clear()
            if (event := self._line(line)) is not None:
                events.append(event)
        if (event := self._line(b"")) is not None:
            events.append(event)
        return events

    def _line(self, line: bytes) -> str | None:
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data.clear()
            self._data_size = 0
            return data
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if name != b"data":
            return None
        if value.startswith(b" "):
            value = value[1:]
        self._data_size += len(value) + 1
        if self._data_size > self.max_line:
            raise SSEError(f"an event passed its cap of {self.max_line} bytes")
        try:
            self._data.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise SSEError("an event is not UTF-8") from None
        return None
