"""A validator's share of this miner's capacity, and its atomic consumption in Redis.

Each miner declares a capacity per task per epoch. A validator may use a share of it proportional to its
stake among the validators allowed to call, with a floor so small validators can still score. The share
math is pure (:func:`stake_shares`, :func:`stake_share`, :func:`quota_limit`) and shared with validators, so
both sides compute the very same numbers. Consumption is one Lua call that decides and increments: a
check-then-increment from Python races when several workers serve the same validator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from inference_subnet.chain.types import Metagraph
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.protocol.quota_math import stake_fractions


def stake_shares(stakes: Mapping[str, float], min_share: float) -> dict[str, float]:
    """Every hotkey's share of a capacity, exactly as validators compute it when they plan their calls
    (:func:`~inference_subnet.protocol.quota_math.stake_fractions`): one implementation, so a
    miner never refuses a request the validator's own split entitled it to."""
    return stake_fractions(stakes, min_share=min_share)


def stake_share(stakes: Mapping[str, float], hotkey: str, min_share: float) -> float:
    """One hotkey's share (0 when it is not among ``stakes``). See :func:`stake_shares`."""
    return stake_shares(stakes, min_share).get(hotkey, 0.0)


def quota_limit(capacity: int, share: float) -> int:
    """Requests per epoch a share of ``capacity`` allows the caller on this miner.

    Rounded *up*: a validator that apportions whole requests (floors, then the leftovers by largest
    remainder) never plans more than ``ceil(capacity * share)``, so the miner never refuses a request
    the validator was entitled to. Any positive share allows at least one request.
    """
    if share <= 0.0 or capacity <= 0:
        return 0
    return max(1, math.ceil(capacity * share - 1e-9))


def epoch_of(now: float, epoch_seconds: float) -> int:
    return int(now // epoch_seconds)


def seconds_left(now: float, epoch_seconds: float) -> float:
    """Seconds until the current epoch ends (the Retry-After of a refused request)."""
    return (epoch_of(now, epoch_seconds) + 1) * epoch_seconds - now


def eligible_stakes(
    metagraph: Metagraph, *, require_validator_permit: bool = True, min_stake: float = 0.0
) -> dict[str, float]:
    """Stakes of the hotkeys that may call this miner (the same rules as the blacklist)."""
    return {
        n.hotkey: n.stake
        for n in metagraph.neurons
        if (n.validator_permit or not require_validator_permit) and n.stake >= min_stake
    }


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
        min_stake: float = 0.0,
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
        self._min_stake = min_stake
        self._shares_for: Metagraph | None = None
        self._shares: dict[str, float] = {}

    def limit(self, metagraph: Metagraph, hotkey: str, task: str) -> int:
        """This epoch's limit for ``hotkey`` on ``task``; shares are recomputed once per new snapshot."""
        if metagraph is not self._shares_for:
            stakes = eligible_stakes(
                metagraph, require_validator_permit=self._require_permit, min_stake=self._min_stake
            )
            self._shares = stake_shares(stakes, self.min_share)
            self._shares_for = metagraph
        return quota_limit(self.capacities.get(task, 0), self._shares.get(hotkey, 0.0))

    async def consume(
        self, metagraph: Metagraph, hotkey: str, task: str, *, now: float | None = None
    ) -> QuotaDecision:
        """Count one request if the caller is under its limit; one atomic round trip."""
        now = time.time() if now is None else now
        limit = self.limit(metagraph, hotkey, task)
        left = seconds_left(now, self.epoch_seconds)
        key = self._keys.caller_quota_used(hotkey, task, epoch_of(now, self.epoch_seconds))
        ttl = math.ceil(left) + 60
        if self._coalescer is None:
            allowed, used = await self._script(keys=[key], args=[limit, ttl])
        else:
            allowed, used = await self._coalescer.script(self._script, [key], [limit, ttl])
        return QuotaDecision(bool(allowed), int(used), limit, left)
