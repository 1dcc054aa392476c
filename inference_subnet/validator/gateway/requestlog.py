"""The durable request log, written in the background so SQL never sits on the response path.

Handlers call :meth:`RequestLogWriter.record`, which only appends to an in-memory queue. One task drains the
queue in batches (one multi-row INSERT each) every ``flush_interval`` or as soon as ``batch_size`` entries
wait; between two batches it sleeps, so an entry costs its append and not a wake-up of the writer. A full
queue drops new entries (counted, logged) rather than slowing requests down: a log must never become the
outage. :meth:`aclose` (the app's lifespan) stops intake and writes everything still queued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from inference_subnet.store.sql import Database, RequestLog, utcnow

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One organic request and its outcome (a row of ``isn_request_log``)."""

    task: str
    key_id: int | None
    status: int
    latency_ms: float
    request_bytes: int
    response_bytes: int
    miner_uid: int | None = None
    miner_hotkey: str | None = None
    attempts: int = 0
    payload: Any | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str | None = None
    ts: dt.datetime = field(default_factory=utcnow)

    def row(self) -> dict[str, Any]:
        """The column values (``dataclasses.asdict`` deep-copies, which costs more than the insert)."""
        return {
            "ts": self.ts,
            "task": self.task,
            "key_id": self.key_id,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "miner_uid": self.miner_uid,
            "miner_hotkey": self.miner_hotkey,
            "attempts": self.attempts,
            "payload": self.payload,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "request_id": self.request_id,
        }


@dataclass
class WriterStats:
    written: int = 0
    dropped: int = 0
    failed_batches: int = 0


class RequestLogWriter:
    """Batched background writer of :class:`LogEntry` rows."""

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        retry_delay: float = 1.0,
        close_attempts: int = 3,
    ):
        self._db = db
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._retry_delay = retry_delay
        self._close_attempts = close_attempts
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._full = asyncio.Event()
        """Set when a batch is waiting (or on close): the writer stops sleeping before its flush interval."""
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = WriterStats()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="request-log-writer")

    def record(self, entry: LogEntry) -> bool:
        """Queue ``entry`` without waiting; ``False`` if it was dropped (queue full or writer closed)."""
        if self._closing or self._queue.qsize() >= self._max_queue:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.warning("request log: %d entries dropped (queue full or closed)", self.stats.dropped)
            return False
        self._queue.put_nowait(entry)
        if self._queue.qsize() + 1 >= self._batch_size:  # + the entry a sleeping writer already holds
            self._full.set()
        return True

    async def aclose(self) -> None:
        """Stop intake, write everything queued, stop the background task."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(_STOP)
        self._full.set()
        if self._task is not None:
            await self._task
        else:  # never started: write what was recorded anyway
            await self._drain_all()

    async def _run(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is _STOP:
                break
            if not self._closing and self._queue.qsize() + 1 < self._batch_size:
                self._full.clear()  # a set left by an earlier batch must not cut this wait short
                try:
                    async with asyncio.timeout(self._flush_interval):
                        await self._full.wait()
                except TimeoutError:
                    pass
            batch: list[LogEntry] = [item]
            while len(batch) < self._batch_size and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            await self._write(batch, final=stop)
        await self._drain_all()

    async def _drain_all(self) -> None:
        rest = [item for item in self._take_all() if item is not _STOP]
        for start in range(0, len(rest), self._batch_size):
            await self._write(rest[start : start + self._batch_size], final=True)

    def _take_all(self) -> list[Any]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return items

    async def _write(self, batch: list[LogEntry], *, final: bool) -> None:
        """Insert one batch; retry while running (the queue bounds memory), a few times when closing."""
        rows = [entry.row() for entry in batch]
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._db.sessions.begin() as session:
                    await session.execute(insert(RequestLog.__table__), rows)
                self.stats.written += len(rows)
                return
            except Exception as exc:
                self.stats.failed_batches += 1
                give_up = (final or self._closing) and attempt >= self._close_attempts
                log.error(
                    "request log: writing %d rows failed (attempt %d%s): %s",
                    len(rows),
                    attempt,
                    ", giving up" if give_up else "",
                    exc,
                )
                if give_up:
                    self.stats.dropped += len(rows)
                    return
                await asyncio.sleep(self._retry_delay)
