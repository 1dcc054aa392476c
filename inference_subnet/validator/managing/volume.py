"""Verified served volume: how many answers each miner served OK to this validator, counted in Redis.

Paying per uid lets one machine behind k uids earn k uids' worth; paying by served volume times quality makes
the split pointless. The volume must be what this validator saw, never the capacity a miner declares: the
gateway counts the organic answers it delivered, the orchestrator the synthetic answers it received. Counters
are per miner, task and quota epoch (a hash with ``organic`` and ``synthetic`` fields), carry the miner's
hash tag, and expire after the next epoch; the weight setter reads the current and the previous epoch.
The weight math itself is pure (:func:`inference_subnet.validator.weights.volume_weighted`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient

KINDS = ("organic", "synthetic")


class VolumeBook:
    """Served-OK counters of one validator. ``clock`` gives wall-clock seconds (simulated time in the
    simulation); ``epoch_seconds`` is the quota epoch (``quotas.epoch_seconds``)."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        epoch_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not epoch_seconds > 0:
            raise ValueError(f"epoch_seconds must be > 0, got {epoch_seconds!r}")
        self._redis = redis
        self._keys = keys
        self.epoch_seconds = epoch_seconds
        self._clock = clock

    def epoch(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        return math.floor(now / self.epoch_seconds)

    def span(self, now: float | None = None, *, epochs: int = 2) -> float:
        """How many quota epochs the last ``epochs`` counters cover at ``now``: the finished ones and the
        elapsed part of the current one (what a share could have been used over)."""
        now = self._clock() if now is None else now
        return max(0, epochs - 1) + (now / self.epoch_seconds - self.epoch(now))

    def _ttl_ms(self, now: float) -> int:
        """A counter lives through the next epoch: the weight setter reads it then too."""
        end = (self.epoch(now) + 1) * self.epoch_seconds
        return max(1, math.ceil((end - now + self.epoch_seconds) * 1000))

    async def count(self, served: Mapping[str, int], task: str, kind: str) -> None:
        """Add ``served`` (identity -> answers served OK) to this epoch's ``kind`` counters, in one pipelined
        round trip. Call it only with answers that arrived and parsed: errors, timeouts and 429s are no volume."""
        if kind not in KINDS:
            raise ValueError(f"volume kind must be one of {KINDS}, got {kind!r}")
        todo = {i: n for i, n in served.items() if n > 0}
        if not todo:
            return
        now = self._clock()
        epoch = self.epoch(now)
        ttl = self._ttl_ms(now)
        pipe = self._redis.pipeline(transaction=False)
        for identity, n in sorted(todo.items()):
            key = self._keys.served_volume(identity, task, epoch)
            pipe.hincrby(key, kind, int(n))
            pipe.pexpire(key, ttl)
        await pipe.execute()

    async def volumes(
        self, identities: Sequence[str], tasks: Sequence[str], *, epochs: int = 2
    ) -> dict[str, dict[str, int]]:
        """task -> identity -> answers served OK over the last ``epochs`` quota epochs (the current one
        included), both kinds. One pipelined round trip."""
        current = self.epoch()
        names = sorted(set(tasks))
        spans = [current - e for e in range(max(1, epochs))]
        pipe = self._redis.pipeline(transaction=False)
        for task in names:
            for identity in identities:
                for epoch in spans:
                    pipe.hgetall(self._keys.served_volume(identity, task, epoch))
        raw = iter(await pipe.execute())
        out: dict[str, dict[str, int]] = {}
        for task in names:
            per: dict[str, int] = {}
            for identity in identities:
                total = 0
                for _ in spans:
                    total += sum(int(v) for k, v in next(raw).items() if _name(k) in KINDS)
                per[identity] = total
            out[task] = per
        return out


def _name(field: bytes | str) -> str:
    return field.decode() if isinstance(field, bytes) else field
