"""Per-key limits: a paced request rate (GCRA, see :mod:`.gcra`) and requests in flight, decided atomically
in Redis on the Redis server's clock.

Every gateway replica shares the same state, so limits hold however many replicas run. A request holds
an in-flight lease (a member of a sorted set scored by its expiry) until it completes; a gateway that dies
mid-request leaves a lease that simply expires instead of locking the key out.

With a :class:`~inference_subnet.store.coalescing.Coalescer` the decisions and releases of concurrent
requests share one round trip per event-loop turn (one socket write instead of one each).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator.gateway.gcra import Pace

Reason = Literal["ok", "rate", "concurrency"]

_ACQUIRE = files("inference_subnet.store").joinpath("lua/apikey_acquire.lua").read_text()


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's decision. ``ticket`` identifies the in-flight lease to release."""

    allowed: bool
    reason: Reason
    retry_after: int = 0
    ticket: str | None = None
    limit: int = 0
    """The key's requests per minute."""
    remaining: int = 0
    """Requests the key may send at once after this decision (:func:`.gcra.headroom`)."""
    reset_seconds: float = 0.0
    """Seconds until the key's whole burst is available again."""


class KeyLimiter:
    """Rate and concurrency limits of API keys."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        lease_seconds: float,
        burst: int,
        coalescer: Coalescer | None = None,
    ):
        self._redis = redis
        self._keys = keys
        self._lease_ms = math.ceil(lease_seconds * 1000)
        self._burst = burst
        self._script = redis.register_script(_ACQUIRE)
        self._coalescer = coalescer

    async def acquire(self, key_id: int, *, rate_per_minute: int, max_concurrent: int) -> Admission:
        pace = Pace.per_minute(rate_per_minute, self._burst)
        ticket = secrets.token_hex(8)
        keys = [self._keys.api_key_tat(str(key_id)), self._keys.api_key_inflight(str(key_id))]
        args = [repr(pace.interval * 1000), pace.burst, max_concurrent, ticket, self._lease_ms]
        if self._coalescer is None:
            allowed, reason, retry_ms, remaining, reset_ms = await self._script(keys=keys, args=args)
        else:
            allowed, reason, retry_ms, remaining, reset_ms = await self._coalescer.script(
                self._script, keys, args
            )
        reason_text: Reason = reason.decode() if isinstance(reason, bytes) else reason
        room = {"limit": rate_per_minute, "remaining": int(remaining), "reset_seconds": int(reset_ms) / 1000}
        if allowed:
            return Admission(True, "ok", ticket=ticket, **room)
        return Admission(False, reason_text, retry_after=max(1, math.ceil(int(retry_ms) / 1000)), **room)

    async def release(self, key_id: int, ticket: str) -> None:
        key = self._keys.api_key_inflight(str(key_id))
        if self._coalescer is None:
            await self._redis.zrem(key, ticket)
        else:
            await self._coalescer.execute("ZREM", key, ticket)

    async def in_flight(self, key_id: int) -> int:
        """Unexpired leases, on the server's clock like the leases themselves."""
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        return int(await self._redis.zcount(self._keys.api_key_inflight(str(key_id)), now_ms, "+inf"))
