"""Per-key limits: requests per minute and requests in flight, decided atomically in Redis.

Every gateway replica shares the same counters, so limits hold however many replicas run. A request holds
an in-flight lease (a member of a sorted set scored by its expiry) until it completes; a gateway that dies
mid-request leaves a lease that simply expires instead of locking the key out.

With a :class:`~inference_subnet.store.coalescing.Coalescer` the decisions and releases of concurrent
requests share one round trip per event-loop turn (one socket write instead of one each).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient

Reason = Literal["ok", "rate", "concurrency"]

_ACQUIRE = files("inference_subnet.store").joinpath("lua/apikey_acquire.lua").read_text()
CONCURRENCY_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's decision. ``ticket`` identifies the in-flight lease to release."""

    allowed: bool
    reason: Reason
    retry_after: int = 0
    ticket: str | None = None


def minute_of(now: float) -> int:
    return int(now // 60)


def seconds_to_next_minute(now: float) -> int:
    """``Retry-After`` for a spent per-minute budget: the window resets at the next minute boundary."""
    return max(1, math.ceil(60 - now % 60))


class KeyLimiter:
    """Rate and concurrency limits of API keys."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
        coalescer: Coalescer | None = None,
    ):
        self._redis = redis
        self._keys = keys
        self._lease = lease_seconds
        self._clock = clock
        self._script = redis.register_script(_ACQUIRE)
        self._coalescer = coalescer

    async def acquire(self, key_id: int, *, rate_per_minute: int, max_concurrent: int) -> Admission:
        now = self._clock()
        ticket = secrets.token_hex(8)
        keys = [
            self._keys.api_key_rate(str(key_id), minute_of(now)),
            self._keys.api_key_inflight(str(key_id)),
        ]
        args = [rate_per_minute, max_concurrent, repr(now), ticket, repr(self._lease)]
        if self._coalescer is None:
            allowed, reason, _used = await self._script(keys=keys, args=args)
        else:
            allowed, reason, _used = await self._coalescer.script(self._script, keys, args)
        reason_text: Reason = reason.decode() if isinstance(reason, bytes) else reason
        if allowed:
            return Admission(True, "ok", ticket=ticket)
        retry = seconds_to_next_minute(now) if reason_text == "rate" else CONCURRENCY_RETRY_AFTER
        return Admission(False, reason_text, retry_after=retry)

    async def release(self, key_id: int, ticket: str) -> None:
        key = self._keys.api_key_inflight(str(key_id))
        if self._coalescer is None:
            await self._redis.zrem(key, ticket)
        else:
            await self._coalescer.execute("ZREM", key, ticket)

    async def in_flight(self, key_id: int) -> int:
        key = self._keys.api_key_inflight(str(key_id))
        await self._redis.zremrangebyscore(key, "-inf", self._clock())
        return int(await self._redis.zcard(key))
