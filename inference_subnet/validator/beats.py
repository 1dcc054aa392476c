"""Which services and gateways of a validator run, for its dashboard: one sorted set in Redis of
``SERVICE/INSTANCE`` scored by the time of the last heartbeat.

The per-process heartbeat keys (``Keys.heartbeat``) expire and cannot be listed without a ``SCAN`` over
every shard; this set can be read in one command, and also remembers a process that went silent (it
crashed, or lost Redis) for :data:`RETAIN_SECONDS`. A process that stops cleanly removes itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient

RETAIN_SECONDS = 3600.0
"""A member silent this long is dropped from the set."""


def member(service: str, instance: str) -> str:
    return f"{service}/{instance}"


def beat(pipe: Any, keys: Keys, members: Sequence[str], now: float) -> None:
    """Queue on ``pipe`` (a pipeline of either kind) that ``members`` are alive at ``now``, and drop the
    members silent for :data:`RETAIN_SECONDS` (every beat trims, so the set stays bounded)."""
    if members:
        pipe.zadd(keys.service_beats(), {m: now for m in members})
    pipe.zremrangebyscore(keys.service_beats(), "-inf", now - RETAIN_SECONDS)


async def forget(redis: RedisClient, keys: Keys, members: Sequence[str]) -> None:
    """A clean stop: these members are gone on purpose, not silent."""
    if members:
        await redis.zrem(keys.service_beats(), *members)


@dataclass(frozen=True)
class Beat:
    service: str
    instance: str
    last_beat: float


async def read(redis: RedisClient, keys: Keys) -> list[Beat]:
    """Every member, newest beat first."""
    out = []
    for raw, score in await redis.zrevrange(keys.service_beats(), 0, -1, withscores=True):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        service, _, instance = name.partition("/")
        out.append(Beat(service=service, instance=instance, last_beat=float(score)))
    return out


def state(last_beat: float, now: float, stale_after: float) -> str:
    """``up`` while beats arrive, ``silent`` once none came for ``stale_after`` seconds."""
    return "up" if now - last_beat <= stale_after else "silent"
