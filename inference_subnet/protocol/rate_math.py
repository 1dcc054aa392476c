"""Smooth, work-conserving admission of validators' requests by a miner: pure arithmetic, no I/O.

A validator's stake share ``s`` of a miner's capacity ``C`` per epoch ``E`` is *guaranteed* as a rate: a GCRA
(one theoretical arrival time, TAT) with one request every ``E / s`` seconds and a burst of
``burst_seconds`` of that rate (at least one request), never more than ``s`` in one epoch. Rate a validator
does not use is forfeited (the TAT never lags the clock), which is what makes it lendable: a request past
the caller's guaranteed pace is *borrowed* when

- the miner-wide GCRA (rate ``C / E``, burst ``burst_seconds`` of it; every admission advances it, a
  guaranteed one even past its burst) has room, so borrowed load is smooth;
- the caller has borrowed fewer than its ceiling this epoch;
- the epoch's total after it still leaves room for every validator's guaranteed pace until the epoch ends:
  ``total + 1 + reserve(now) <= C`` with ``reserve = sum of guaranteed bursts + (end - now) * C / E``.
  A GCRA admits at most ``burst + L / interval`` requests in any stretch of length ``L``, so the guaranteed
  requests still to come can never push the epoch past ``C``: a validator that paces itself is always
  admitted, and the miner never admits more than it declared.

Both sides run this arithmetic: the miner's script (``miner_admit.lua``) decides, the validator's book
(``consume_quota.lua``) grants *guaranteed* while its own GCRA allows and *borrow attempts* beyond it up to
the ceiling (only the miner sees every validator, so only it can lend). The Lua scripts do the very same
float operations in the same order, so both agree with this module to the last bit (tested on real Redis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SLACK = 1e-3
"""Seconds by which a request may be early and still be on pace: TATs are sums of float intervals on clocks
near 1.7e9 s, where one unit in the last place is about 2e-7 s."""

GUARANTEED = 1
BORROWED = 2
REFUSED = 0
Mode = Literal[0, 1, 2]

Reason = Literal["beyond_share", "capacity"]
"""Why a miner refused: the caller was past its guaranteed pace and nothing could be lent to it
(``beyond_share``, expected back-pressure), or the miner's epoch capacity was used up (``capacity``)."""


@dataclass(frozen=True, slots=True)
class Pace:
    """One GCRA: ``interval`` seconds between requests once ``burst`` requests at once are spent."""

    interval: float
    burst: int


def pace_of(share: int, epoch_seconds: float, burst_seconds: float) -> Pace:
    """The guaranteed pace of ``share`` requests per epoch; a share of 0 never admits (infinite interval)."""
    if share <= 0:
        return Pace(math.inf, 0)
    return Pace(epoch_seconds / share, max(1, math.floor(burst_seconds * share / epoch_seconds)))


def gcra(tat: float | None, now: float, pace: Pace) -> float | None:
    """The TAT after admitting one request at ``now``, or ``None`` when it is not on pace (nothing moves)."""
    if pace.burst <= 0:
        return None
    base = now if tat is None else max(tat, now)
    new = base + pace.interval
    if new - now <= pace.burst * pace.interval + SLACK:
        return new
    return None


def forced(tat: float | None, now: float, pace: Pace) -> float:
    """The TAT after an admission that does not ask this GCRA (a guaranteed request on the miner-wide one)."""
    return (now if tat is None else max(tat, now)) + pace.interval


def borrow_ceiling(capacity: int, fraction: float) -> int:
    """Requests one validator may borrow from one miner per epoch."""
    return max(0, math.floor(capacity * max(0.0, fraction)))


def reserve_burst(shares: Mapping[str, int], epoch_seconds: float, burst_seconds: float) -> int:
    """The sum of every validator's guaranteed burst: the part of the reserve that does not shrink."""
    return sum(pace_of(s, epoch_seconds, burst_seconds).burst for s in shares.values())


def reserve(now: float, epoch_end: float, capacity: int, epoch_seconds: float, burst_total: int) -> float:
    """Guaranteed requests that may still come this epoch, at most (see the module's docstring)."""
    return burst_total + max(0.0, epoch_end - now) * (capacity / epoch_seconds)


@dataclass(frozen=True, slots=True)
class MinerState:
    """A miner's counters for one caller and task in one epoch, and its own for the task."""

    guaranteed: int = 0
    borrowed: int = 0
    tat: float | None = None
    total: int = 0
    """Every caller's admissions this epoch."""
    miner_tat: float | None = None


@dataclass(frozen=True, slots=True)
class MinerLimits:
    """What a miner's guard knows of one caller on one task, the same numbers as the caller's book."""

    share: int
    pace: Pace
    ceiling: int
    capacity: int
    miner_pace: Pace
    burst_total: int
    epoch_seconds: float
    epoch_end: float


def miner_decide(state: MinerState, limits: MinerLimits, now: float) -> tuple[Mode, Reason | None, MinerState]:
    """One request at ``now``: guaranteed, borrowed, or refused with the reason; and the state after."""
    full = state.total >= limits.capacity
    if state.guaranteed < limits.share:
        tat = gcra(state.tat, now, limits.pace)
        if tat is not None:
            if full:
                return REFUSED, "capacity", state
            return GUARANTEED, None, MinerState(
                state.guaranteed + 1, state.borrowed, tat, state.total + 1,
                forced(state.miner_tat, now, limits.miner_pace),
            )
    if state.borrowed < limits.ceiling:
        room = reserve(now, limits.epoch_end, limits.capacity, limits.epoch_seconds, limits.burst_total)
        if state.total + 1 + room <= limits.capacity:
            miner_tat = gcra(state.miner_tat, now, limits.miner_pace)
            if miner_tat is not None:
                return BORROWED, None, MinerState(
                    state.guaranteed, state.borrowed + 1, state.tat, state.total + 1, miner_tat
                )
    return REFUSED, ("capacity" if full else "beyond_share"), state


@dataclass(frozen=True, slots=True)
class BookState:
    """A validator's counters on one miner and task in one epoch."""

    guaranteed: int = 0
    borrowed: int = 0
    synthetic: int = 0
    tat: float | None = None


def book_decide(
    state: BookState, *, share: int, synthetic_limit: int, pace: Pace, ceiling: int, synthetic: bool, now: float
) -> tuple[Mode, BookState]:
    """The validator's side of one request: guaranteed while its own GCRA allows (synthetic traffic also
    within its synthetic limit, and never borrowed), else a borrow attempt up to the ceiling, else refused."""
    if state.guaranteed < share and (not synthetic or state.synthetic < synthetic_limit):
        tat = gcra(state.tat, now, pace)
        if tat is not None:
            return GUARANTEED, BookState(
                state.guaranteed + 1, state.borrowed, state.synthetic + int(synthetic), tat
            )
    if not synthetic and state.borrowed < ceiling:
        return BORROWED, BookState(state.guaranteed, state.borrowed + 1, state.synthetic, state.tat)
    return REFUSED, state


def guaranteed_room(state: BookState, *, share: int, pace: Pace, now: float) -> bool:
    """Whether a guaranteed request would be granted now (routing prefers such miners)."""
    return state.guaranteed < share and gcra(state.tat, now, pace) is not None
