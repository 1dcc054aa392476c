"""How a miner's capacity is split among validators: pure arithmetic, no I/O.

Miners and validators must agree on every validator's share (the miner answers 429 beyond it, the
validator stops before it), so this module is the one implementation both sides call, and it is
deterministic: the same stakes in any order give the same shares, down to the last request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from inference_subnet.chain.types import Metagraph


def permitted_stakes(metagraph: Metagraph) -> dict[str, float]:
    """Stake of every validator-permit holder: only they get a share of miners' capacity."""
    return {n.hotkey: n.stake for n in metagraph.neurons if n.validator_permit}


def stake_fractions(stakes: Mapping[str, float], *, min_share: float) -> dict[str, float]:
    """Each validator's fraction of a miner's capacity: proportional to stake, never below ``min_share``.

    The floor is what lets a small validator score miners at all. Validators pinned to the floor are paid
    for by the others in proportion to their stake (water-filling), so the fractions still sum to at most 1.
    When the floor is infeasible (``len(stakes) * min_share > 1``) everyone gets ``1 / len(stakes)``.
    Negative, NaN and infinite stakes count as zero; if nobody has stake the split is even.
    """
    names = sorted(stakes)
    if not names:
        return {}
    clean = {k: _clean_stake(stakes[k]) for k in names}
    n = len(names)
    floor = min(max(min_share, 0.0), 1.0 / n)
    if math.fsum(clean.values()) <= 0.0:
        return {k: 1.0 / n for k in names}
    pinned: set[str] = set()
    while True:
        free = [k for k in names if k not in pinned]
        if not free:
            return {k: floor for k in names}
        mass = 1.0 - floor * len(pinned)
        free_stake = math.fsum(clean[k] for k in free)
        if free_stake <= 0.0:
            even = mass / len(free)
            return {k: (floor if k in pinned else even) for k in names}
        proposed = {k: clean[k] / free_stake * mass for k in free}
        under = {k for k, f in proposed.items() if f < floor}
        if not under:
            return {k: (floor if k in pinned else proposed[k]) for k in names}
        pinned |= under


def apportion(capacity: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Whole requests for each fraction: floors first, then the leftover units by largest remainder.

    Ties are broken by larger fraction, then by name, so every process computes the same split. The sum
    never exceeds ``capacity`` and no share is negative.
    """
    names = sorted(fractions)
    if capacity <= 0 or not names:
        return {k: 0 for k in names}
    exact = {k: capacity * max(0.0, fractions[k]) for k in names}
    shares = {k: min(capacity, math.floor(v)) for k, v in exact.items()}
    left = capacity - sum(shares.values())
    if left > 0:
        ranked = sorted(names, key=lambda k: (-(exact[k] - shares[k]), -fractions[k], k))
        for k in ranked[: min(left, len(ranked))]:
            shares[k] += 1
    # Floating point can only ever push the floors over by a unit or two; take them back from the largest.
    excess = sum(shares.values()) - capacity
    for k in sorted(names, key=lambda k: (-shares[k], k)):
        if excess <= 0:
            break
        take = min(excess, shares[k])
        shares[k] -= take
        excess -= take
    return shares


def floor_fraction(capacity: int, *, min_share: float, min_requests: int = 0) -> float:
    """The floor of every validator's fraction of a miner of ``capacity``: ``min_requests`` per epoch (a
    number of requests, so small validators do not hold a fixed part of every miner), or ``min_share``
    where that is larger (kept for configurations that set it)."""
    by_requests = min_requests / capacity if capacity > 0 and min_requests > 0 else 0.0
    return max(min_share, by_requests)


def split_capacity(
    capacity: int, stakes: Mapping[str, float], *, min_share: float, min_requests: int = 0
) -> dict[str, int]:
    """A miner's ``capacity`` (requests per epoch) split among validators by stake, with a floor
    (:func:`floor_fraction`).

    ``stakes`` holds the permit holders only (see :func:`permitted_stakes`); a validator absent from it has
    no share. The shares sum to ``capacity`` when there is at least one validator, never more.
    """
    floor = floor_fraction(capacity, min_share=min_share, min_requests=min_requests)
    return apportion(capacity, stake_fractions(stakes, min_share=floor))


def synthetic_limit(share: int, synthetic_fraction: float) -> int:
    """How much of a share synthetic traffic may use; the rest stays reserved for organic traffic.

    Computed on the decimal value of the setting (``0.29`` is 29/100, not 0.28999...), rounded down.
    """
    if share <= 0 or not synthetic_fraction > 0:
        return 0
    fraction = min(Fraction(repr(float(synthetic_fraction))), Fraction(1))
    return max(0, min(share, math.floor(share * fraction)))


def clamp_capacity(declared: int, *, min_capacity: int, max_capacity: int) -> int:
    """A miner's declared capacity within the operator's bounds (a miner cannot claim the world)."""
    return max(min_capacity, min(max_capacity, int(declared)))


def epoch_index(now: float, epoch_seconds: float) -> int:
    """The quota epoch that wall-clock time ``now`` falls in; epochs start at multiples of the length."""
    return math.floor(now / epoch_seconds)


def epoch_end(epoch: int, epoch_seconds: float) -> float:
    """Wall-clock time at which ``epoch`` ends."""
    return (epoch + 1) * epoch_seconds


def seconds_left(now: float, epoch_seconds: float) -> float:
    """Time until the current epoch ends (quotas refill then)."""
    return max(0.0, epoch_end(epoch_index(now, epoch_seconds), epoch_seconds) - now)


def _clean_stake(value: float) -> float:
    return value if math.isfinite(value) and value > 0.0 else 0.0
