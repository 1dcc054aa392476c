"""A validator's share of this miner's capacity, and its atomic consumption in Redis.

Each miner declares a capacity per task per epoch. A validator may use a share of it proportional to its
stake among the validators allowed to call, with a floor so small validators can still score. The share
math is pure and shared with validators
(:func:`~inference_subnet.protocol.quota_math.split_capacity`: stake fractions with the floor, then
whole requests by largest remainder), so both sides compute the very same numbers: the miner never refuses a request a validator's own split entitled it to, and never admits more
than its declared capacity in total. Consumption is one Lua call that decides and increments: a
check-then-increment from Python races when several workers serve the same validator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from inference_subnet.chain.types import Metagraph
from inference_subnet.protocol.quota_math import split_capacity
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient


def epoch_of(now: float, epoch_seconds: float) -> int:
    return int(now // epoch_seconds)


def seconds_left(now: float, epoch_seconds: float) -> float:
    """Seconds until the current epoch ends (the Retry-After of a refused request)."""
    return (epoch_of(now, epoch_seconds) + 1) * epoch_seconds - now


def eligible_stakes(metagraph: Metagraph, *, require_validator_permit: bool = True) -> dict[str, float]:
    """Stakes of the hotkeys that share this miner's capacity: the permit holders, as validators plan it
    (or everyone, when the miner serves callers without a permit)."""
    return {n.hotkey: n.stake for n in metagraph.neurons if n.validator_permit or not require_validator_permit}


_CONSUME = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return {0, used}
end
used = redis.call('INCR', KEYS[1])
if used == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1, used}
"""


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    used: int
    limit: int
    retry_after: float
    """Seconds until the epoch ends (when a refused caller gets a fresh quota)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One request's charge on a caller's counter, as :data:`_CONSUME` (or the nonce store's combined
    script, :meth:`~inference_subnet.miner.nonces.RedisNonceStore.check_and_count`) applies it."""

    key: str
    limit: int
    expire_s: int
    left: float
    """Seconds until the epoch ends."""

    def decision(self, allowed: bool, used: int) -> QuotaDecision:
        return QuotaDecision(allowed, used, self.limit, self.left)


class MinerQuota:
    """Per-validator, per-task, per-epoch request counters of one miner."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        capacities: Mapping[str, int],
        epoch_seconds: float,
        min_share: float,
        require_validator_permit: bool = True,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._keys = keys
        self._client = client
        self._coalescer = coalescer
        self._script = client.register_script(_CONSUME)
        self.capacities = dict(capacities)
        self.epoch_seconds = epoch_seconds
        self.min_share = min_share
        self._require_permit = require_validator_permit
        self._stakes_for: Metagraph | None = None
        self._stakes: dict[str, float] = {}
        self._limits: dict[str, dict[str, int]] = {}

    def limit(self, metagraph: Metagraph, hotkey: str, task: str) -> int:
        """This epoch's limit for ``hotkey`` on ``task``; the split is recomputed once per new snapshot.

        The split is over every permit holder, as validators plan it, whatever the miner's minimum stake:
        callers below it are refused by the blacklist before they reach the quota, and leaving them out of
        the split would move everyone else's whole-request rounding away from the validators' own."""
        if metagraph is not self._stakes_for:
            self._stakes = eligible_stakes(metagraph, require_validator_permit=self._require_permit)
            self._limits = {}
            self._stakes_for = metagraph
        limits = self._limits.get(task)
        if limits is None:
            capacity = self.capacities.get(task, 0)
            limits = self._limits[task] = split_capacity(capacity, self._stakes, min_share=self.min_share)
        return limits.get(hotkey, 0)

    def charge(self, metagraph: Metagraph, hotkey: str, task: str, *, now: float | None = None) -> Charge:
        """What counting one request of ``hotkey`` on ``task`` now would do, not done yet."""
        now = time.time() if now is None else now
        left = seconds_left(now, self.epoch_seconds)
        return Charge(key=self._keys.caller_quota_used(hotkey, task, epoch_of(now, self.epoch_seconds)),
                      limit=self.limit(metagraph, hotkey, task), expire_s=math.ceil(left) + 60, left=left)

    async def consume(
        self, metagraph: Metagraph, hotkey: str, task: str, *, now: float | None = None
    ) -> QuotaDecision:
        """Count one request if the caller is under its limit; one atomic round trip."""
        charge = self.charge(metagraph, hotkey, task, now=now)
        key, limit, ttl, left = charge.key, charge.limit, charge.expire_s, charge.left
        if self._coalescer is None:
            allowed, used = await self._script(keys=[key], args=[limit, ttl])
        else:
            allowed, used = await self._coalescer.script(self._script, [key], [limit, ttl])
        return QuotaDecision(bool(allowed), int(used), limit, left)
