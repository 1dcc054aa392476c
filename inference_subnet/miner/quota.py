"""A validator's share of this miner's capacity, and its atomic consumption in Redis.

Each miner declares a capacity per task per epoch. A validator may use a share of it proportional to its
stake among the validators allowed to call, with a floor so small validators can still score. The share
math is pure and shared with validators
(:func:`~inference_subnet.protocol.quota_math.split_capacity`: stake fractions with the floor, then
whole requests by largest remainder), so both sides compute the very same numbers. A share is
guaranteed as a pace (GCRA), and requests past it are lent the pace other validators leave idle
(:mod:`inference_subnet.protocol.rate_math`): the miner never refuses a request a validator's own pace
entitled it to, and never admits more than its declared capacity in total. Each decision is one Lua call
(``store/lua/miner_admit.lua``): a check-then-increment from Python races when several workers serve the
same validator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from inference_subnet.chain.types import Metagraph
from inference_subnet.protocol.quota_math import epoch_end, split_capacity
from inference_subnet.protocol.rate_math import (
    GUARANTEED,
    REFUSED,
    SLACK,
    MinerLimits,
    Mode,
    Pace,
    Reason,
    borrow_ceiling,
    pace_of,
    reserve_burst,
)
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, evalsha_many


def epoch_of(now: float, epoch_seconds: float) -> int:
    return int(now // epoch_seconds)


def seconds_left(now: float, epoch_seconds: float) -> float:
    """Seconds until the current epoch ends (the Retry-After of a refused request)."""
    return (epoch_of(now, epoch_seconds) + 1) * epoch_seconds - now


def eligible_stakes(metagraph: Metagraph, *, require_validator_permit: bool = True) -> dict[str, float]:
    """Stakes of the hotkeys that share this miner's capacity: the permit holders, as validators plan it
    (or everyone, when the miner serves callers without a permit)."""
    return {n.hotkey: n.stake for n in metagraph.neurons if n.validator_permit or not require_validator_permit}


_ADMIT = files("inference_subnet.store").joinpath("lua/miner_admit.lua").read_text()
CONSUME_SCRIPT = _ADMIT + """
local mode, reason, total, wait = admit(0, 0)
return {mode, reason, total, wait}
"""
""":func:`admit` alone: ``KEYS`` = caller hash, miner hash; ``ARGV`` = :attr:`Charge.args`."""


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    used: int
    """The miner's total this epoch, every caller together."""
    limit: int
    """The caller's guaranteed share this epoch."""
    retry_after: float
    """Seconds until a refused request could be admitted if nothing else happened (its pace's next slot,
    the moment the miner could lend, or the epoch's end)."""
    mode: Mode = GUARANTEED
    reason: Reason | None = None
    """Why it was refused: ``beyond_share`` (past its guaranteed pace, nothing to lend) or ``capacity``."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One request's charge, as :data:`CONSUME_SCRIPT` (or the nonce store's combined script,
    :meth:`~inference_subnet.miner.nonces.RedisNonceStore.check_and_count`) applies it."""

    keys: tuple[str, str]
    args: tuple[str | int, ...]
    limit: int
    interval: float
    left: float
    """Seconds until the epoch ends."""

    def decision(self, mode: int, reason: Any, used: int, wait_ms: int = 0) -> QuotaDecision:
        why = (reason.decode() if isinstance(reason, bytes) else reason) or None
        retry = min(self.left, int(wait_ms) / 1000) if mode == REFUSED else 0.0
        return QuotaDecision(mode != REFUSED, int(used), self.limit, retry, mode, why)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TaskSplit:
    """Every caller's guaranteed share of one task, and what the borrowing rule needs of the split."""

    shares: dict[str, int]
    capacity: int
    ceiling: int
    miner_pace: Pace
    burst_total: int


class MinerQuota:
    """Per-validator, per-task, per-epoch admission of one miner (guaranteed pace, then borrowing)."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        capacities: Mapping[str, int],
        epoch_seconds: float,
        min_share: float,
        min_requests: int = 0,
        burst_seconds: float = 60.0,
        borrow_ceiling: float = 0.0,
        require_validator_permit: bool = True,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._keys = keys
        self._client = client
        self._coalescer = coalescer
        self._script = client.register_script(CONSUME_SCRIPT)
        self.capacities = dict(capacities)
        self.epoch_seconds = epoch_seconds
        self.min_share = min_share
        self.min_requests = min_requests
        self.burst_seconds = burst_seconds
        self.borrow_ceiling = borrow_ceiling
        self._require_permit = require_validator_permit
        self._stakes_for: Metagraph | None = None
        self._stakes: dict[str, float] = {}
        self._splits: dict[str, TaskSplit] = {}
        self._packs: dict[tuple[str, str], str] = {}

    def split(self, metagraph: Metagraph, task: str) -> TaskSplit:
        """This task's split over every permit holder, recomputed once per new snapshot.

        The split is over every permit holder, as validators plan it, whatever the miner's minimum stake:
        callers below it are refused by the blacklist before they reach the quota, and leaving them out of
        the split would move everyone else's whole-request rounding away from the validators' own."""
        if metagraph is not self._stakes_for:
            self._stakes = eligible_stakes(metagraph, require_validator_permit=self._require_permit)
            self._splits = {}
            self._packs = {}
            self._stakes_for = metagraph
        split = self._splits.get(task)
        if split is None:
            capacity = self.capacities.get(task, 0)
            shares = split_capacity(
                capacity, self._stakes, min_share=self.min_share, min_requests=self.min_requests
            )
            split = self._splits[task] = TaskSplit(
                shares=shares,
                capacity=capacity,
                ceiling=borrow_ceiling(capacity, self.borrow_ceiling),
                miner_pace=pace_of(capacity, self.epoch_seconds, self.burst_seconds),
                burst_total=reserve_burst(shares, self.epoch_seconds, self.burst_seconds),
            )
        return split

    def limit(self, metagraph: Metagraph, hotkey: str, task: str) -> int:
        """This epoch's guaranteed share of ``hotkey`` on ``task``."""
        return self.split(metagraph, task).shares.get(hotkey, 0)

    def limits(self, metagraph: Metagraph, hotkey: str, task: str, now: float) -> MinerLimits:
        """What :func:`~inference_subnet.protocol.rate_math.miner_decide` needs for this caller now."""
        split = self.split(metagraph, task)
        share = split.shares.get(hotkey, 0)
        return MinerLimits(
            share=share,
            pace=pace_of(share, self.epoch_seconds, self.burst_seconds),
            ceiling=split.ceiling if hotkey in split.shares else 0,
            capacity=split.capacity,
            miner_pace=split.miner_pace,
            burst_total=split.burst_total,
            epoch_seconds=self.epoch_seconds,
            epoch_end=epoch_end(epoch_of(now, self.epoch_seconds), self.epoch_seconds),
        )

    def _packed(self, metagraph: Metagraph, hotkey: str, task: str, lim: MinerLimits) -> str:
        """The caller's fixed limits as the script reads them (one argument), cached per snapshot."""
        self.split(metagraph, task)  # drops the cache on a new snapshot
        key = (hotkey, task)
        packed = self._packs.get(key)
        if packed is None:
            interval = lim.pace.interval if lim.share > 0 else 0.0
            m_interval = lim.miner_pace.interval if lim.capacity > 0 else 0.0
            packed = self._packs[key] = " ".join(
                str(x) for x in (
                    lim.share, repr(float(interval)), lim.pace.burst, lim.ceiling, lim.capacity,
                    repr(float(m_interval)), lim.miner_pace.burst, lim.burst_total,
                    repr(float(self.epoch_seconds)), repr(SLACK),
                )
            )
        return packed

    def charge(self, metagraph: Metagraph, hotkey: str, task: str, *, now: float | None = None) -> Charge:
        """What deciding one request of ``hotkey`` on ``task`` at ``now`` would send, not sent yet; the
        time is the miner's clock (the simulator passes its own)."""
        now = time.time() if now is None else now
        left = seconds_left(now, self.epoch_seconds)
        epoch = epoch_of(now, self.epoch_seconds)
        lim = self.limits(metagraph, hotkey, task, now)
        interval = lim.pace.interval if lim.share > 0 else 0.0
        args: tuple[str | int, ...] = (
            repr(float(now)), self._packed(metagraph, hotkey, task, lim), repr(float(lim.epoch_end)),
            math.ceil(left) + 60,
        )
        keys = (self._keys.caller_quota_used(hotkey, task, epoch), self._keys.miner_quota_total(task, epoch))
        return Charge(keys=keys, args=args, limit=lim.share, interval=interval if lim.share else left, left=left)

    async def consume(
        self, metagraph: Metagraph, hotkey: str, task: str, *, now: float | None = None
    ) -> QuotaDecision:
        """Decide one request: guaranteed, borrowed or refused with the reason; one atomic round trip."""
        charge = self.charge(metagraph, hotkey, task, now=now)
        if self._coalescer is None:
            mode, reason, used, wait = await self._script(keys=list(charge.keys), args=list(charge.args))
        else:
            mode, reason, used, wait = await self._coalescer.script(self._script, charge.keys, charge.args)
        return charge.decision(int(mode), reason, int(used), int(wait))

    async def consume_many(
        self, metagraph: Metagraph, requests: Sequence[tuple[str, str, float | None]]
    ) -> list[QuotaDecision]:
        """:meth:`consume` for many ``(hotkey, task, now)`` requests at once, decided in the order given."""
        return await self.decide_many([self.charge(metagraph, h, t, now=now) for h, t, now in requests])

    async def decide_many(self, charges: Sequence[Charge]) -> list[QuotaDecision]:
        """Send ``charges`` in order, in one round trip (one unit of the coalescer's next round trip, when
        there is one): the same script calls :meth:`consume` would send one by one, without a coroutine and
        a future per call. The charges may come from any guard on this Redis (they all run the same script
        on their own keys), so a caller deciding for many miners sends all of them at once."""
        calls = [(charge.keys, charge.args) for charge in charges]
        if self._coalescer is None:
            replies = await evalsha_many(self._client, self._script, calls)
        else:
            replies = await self._coalescer.script_many(self._script, calls)
        return [
            charge.decision(int(mode), reason, int(used), int(wait))
            for charge, (mode, reason, used, wait) in zip(charges, replies, strict=True)
        ]
