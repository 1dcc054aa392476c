"""The gateway's answers per minute, by HTTP status and by API key, summed over every gateway process in
Redis: what the dashboard shows as request rates, 429s and errors over the last hour.

The request log (``requestlog.py``) keeps only requests that reached routing; this counts every answer of
the API routes, refusals included (401, 413, 422, 429), which is what an operator needs to see. Counting
is a dict increment on the request path; a background task adds the counts to one Redis hash per minute
(``Keys.gateway_traffic``) every :data:`FLUSH_SECONDS`, so Redis sees one pipeline a second per process
whatever the load. Each hash expires after :data:`RETAIN_SECONDS`; its fields are a few statuses and the
key ids that called in that minute. The flush is also the gateway's heartbeat in ``beats``.

Not Prometheus: these counts are summed over processes and kept in time buckets, so one read answers "the
last hour" for the whole gateway without a Prometheus server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import beats

log = logging.getLogger(__name__)


def minute_of(now: float) -> int:
    """The minute (since the epoch) a unix time falls in: the traffic counters' bucket."""
    return int(now // 60)


WINDOW_MINUTES = 60
RETAIN_SECONDS = 2 * 3600
FLUSH_SECONDS = 1.0
NO_KEY = "-"
"""The key field of answers given before a key was verified (401, 413)."""
KEY_STATE = "api_key_id"
"""``request.state`` attribute the gateway sets once a key is verified."""
SERVICE = "gateway"
"""The gateway's name in ``beats``."""
API_PREFIX = "/v1/"


def mark_key(request: Any, key_id: int | str) -> None:
    """Attribute this request's answer to ``key_id`` (called once the key is verified)."""
    setattr(request.state, KEY_STATE, str(key_id))


# -- pure -------------------------------------------------------------------------------------------------


class Counts(BaseModel):
    requests: int = 0
    ok: int = Field(0, description="2xx answers.")
    limited: int = Field(0, description="429: the API key's rate or concurrency limit.")
    client_errors: int = Field(0, description="Other 4xx: bad key, bad payload, body too large, unknown task.")
    server_errors: int = Field(0, description="5xx: no miner could serve (503), a broken stream, a fault.")

    def add(self, status: int, n: int) -> None:
        self.requests += n
        if 200 <= status < 300:
            self.ok += n
        elif status == 429:
            self.limited += n
        elif 400 <= status < 500:
            self.client_errors += n
        elif status >= 500:
            self.server_errors += n


class MinuteCounts(Counts):
    minute_start: float = Field(description="Unix time the minute starts.")


class KeyCounts(Counts):
    key_id: str | None = Field(description="The API key's id; null for answers before a key was verified.")


class TrafficSummary(BaseModel):
    window_seconds: float
    minutes: list[MinuteCounts] = Field(description="One entry a minute, oldest first, the current one last.")
    totals: Counts
    by_status: dict[str, int] = Field(description="HTTP status -> answers in the window.")
    keys: list[KeyCounts] = Field(description="Per API key, most requests first.")


def field_name(status: int, key_id: str | None) -> tuple[str, str]:
    """The two hash fields one answer increments."""
    return f"s:{status}", f"k:{key_id or NO_KEY}:{status}"


def summarize(buckets: Mapping[int, Mapping[str, int]], now_minute: int,
              minutes: int = WINDOW_MINUTES) -> TrafficSummary:
    """The window ending with ``now_minute`` from minute -> hash fields; malformed fields are skipped."""
    totals = Counts()
    by_status: dict[str, int] = {}
    per_key: dict[str, KeyCounts] = {}
    series = []
    for minute in range(now_minute - minutes + 1, now_minute + 1):
        counts = MinuteCounts(minute_start=minute * 60.0)
        for name, n in buckets.get(minute, {}).items():
            kind, _, rest = name.partition(":")
            key, _, code = rest.rpartition(":") if kind == "k" else ("", "", rest)
            if not code.isdigit() or kind not in ("s", "k") or (kind == "k" and not key):
                continue
            status = int(code)
            if kind == "s":
                counts.add(status, n)
                totals.add(status, n)
                by_status[code] = by_status.get(code, 0) + n
            else:
                row = per_key.setdefault(key, KeyCounts(key_id=None if key == NO_KEY else key))
                row.add(status, n)
        series.append(counts)
    return TrafficSummary(
        window_seconds=minutes * 60.0, minutes=series, totals=totals,
        by_status=dict(sorted(by_status.items())),
        keys=sorted(per_key.values(), key=lambda k: (-k.requests, k.key_id or "")),
    )


# -- Redis ------------------------------------------------------------------------------------------------


async def read_traffic(redis: RedisClient, keys: Keys, now: float) -> TrafficSummary:
    """The last :data:`WINDOW_MINUTES` minutes, every gateway process summed, in one pipelined round trip."""
    current = minute_of(now)
    window = range(current - WINDOW_MINUTES + 1, current + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in window:
            pipe.hgetall(keys.gateway_traffic(minute))
        raw = await pipe.execute()
    buckets = {
        minute: {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in fields.items()}
        for minute, fields in zip(window, raw, strict=True) if fields
    }
    return summarize(buckets, current)


class TrafficCounter:
    """Counts answers in memory and adds them to Redis in the background (see the module docstring)."""

    def __init__(self, redis: RedisClient, keys: Keys, *, instance: str, clock: Callable[[], float] = time.time,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self._redis = redis
        self._keys = keys
        self._member = beats.member(SERVICE, instance)
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._pending: dict[tuple[int, str], int] = {}
        self._minute = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def record(self, status: int, key_id: str | None) -> None:
        minute = minute_of(self._clock())
        if minute != self._minute:  # unflushed counts (no flusher, or Redis down) never outgrow the window
            self._minute = minute
            self._pending = {k: n for k, n in self._pending.items() if k[0] > minute - WINDOW_MINUTES}
        for name in field_name(status, key_id):
            self._pending[(minute, name)] = self._pending.get((minute, name), 0) + 1

    async def flush(self) -> None:
        """Add what was counted since the last flush; on a Redis error the counts wait for the next one
        (counts older than the window are dropped then, so a long outage costs no memory)."""
        pending, self._pending = self._pending, {}
        now = self._clock()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for minute in sorted({m for m, _ in pending}):
                    key = self._keys.gateway_traffic(minute)
                    for (m, name), n in pending.items():
                        if m == minute:
                            pipe.hincrby(key, name, n)
                    pipe.expire(key, RETAIN_SECONDS)
                beats.beat(pipe, self._keys, [self._member], now)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            oldest = minute_of(now) - WINDOW_MINUTES
            for (minute, name), n in pending.items():
                if minute > oldest:
                    self._pending[(minute, name)] = self._pending.get((minute, name), 0) + n
            log.debug("traffic counts not written yet: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway:traffic")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._flush_seconds)
            await self.flush()

    async def aclose(self, timeout: float = 2.0) -> None:
        """The last counts written and this gateway removed from ``beats``, within ``timeout``."""
        self._stop.set()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                if self._task is not None:
                    await self._task
                await beats.forget(self._redis, self._keys, [self._member])


class TrafficMiddleware:
    """Counts every answer of the API routes (``/v1/``) with its status and the key it was given to.
    Pure ASGI, so streaming answers pass through untouched (counted at their status line)."""

    def __init__(self, app: ASGIApp, counter: TrafficCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        status = 500  # an exception escaping the app becomes a 500 further out

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.counter.record(status, scope.get("state", {}).get(KEY_STATE))
