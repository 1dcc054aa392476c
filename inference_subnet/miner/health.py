"""Is the miner's Redis answering? Asked for ``/health``, which anyone may call.

A miner without Redis refuses every signed request (no replay protection, no quota), so ``/health`` must
say so rather than answer 200. The check is one PING under a short deadline, shared: concurrent callers
wait for the same PING and its answer is kept for ``ttl`` seconds, so a flood of ``/health`` costs Redis at
most one round trip per ``ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from inference_subnet.store.redis import RedisClient

log = logging.getLogger(__name__)


class RedisProbe:
    """PINGs Redis at most once per ``ttl`` seconds, each PING bounded by ``timeout``."""

    def __init__(self, redis: RedisClient, *, timeout: float = 1.0, ttl: float = 1.0) -> None:
        self.redis = redis
        self.timeout = timeout
        self.ttl = ttl
        self._ok = False
        self._checked_at = -math.inf
        self._ping: asyncio.Task[bool] | None = None

    async def reachable(self) -> bool:
        if time.monotonic() - self._checked_at < self.ttl:
            return self._ok
        if self._ping is None:
            self._ping = asyncio.create_task(self._check(), name="miner:redis-probe")
        # Waiting on the task, not awaiting it, holds the caller to the deadline even if a cancelled
        # client call were slow to unwind; the task stays shared and settles the cache when it ends.
        done, _ = await asyncio.wait({self._ping}, timeout=self.timeout + 0.1)
        return bool(done) and self._ok

    async def _check(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
            ok = True
        except Exception as exc:  # noqa: BLE001  (any failure means the same: Redis does not answer)
            log.debug("redis PING for /health failed: %s: %s", type(exc).__name__, exc)
            ok = False
        self._ok, self._checked_at, self._ping = ok, time.monotonic(), None
        return ok
