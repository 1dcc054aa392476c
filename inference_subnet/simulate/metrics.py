"""What the simulation measures: fairness, ranking stability and consensus. Pure functions.

- Jain's fairness index of ``x_i`` (delivered share over entitled share): 1 when every validator gets
  exactly its entitlement, ``1/n`` when one takes everything.
- Kendall's tau-b between two rankings: 1 identical, 0 unrelated, -1 reversed; ties handled.
- A stake-weighted consensus in the manner of Yuma: each miner's weight is clipped at the largest value that
  validators with at least ``kappa`` of the stake agree on, then the validators' clipped weights are summed by
  stake. It is what turns many validators' weights into one incentive per miner, and what a lone generous
  validator cannot move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``, in ``[1/n, 1]``; 1 for equal (or zero) input."""
    if not values:
        raise ValueError("the Jain index of no values is undefined")
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError("the Jain index needs finite, non-negative values")
    squares = math.fsum(v * v for v in values)
    if squares == 0.0:
        return 1.0
    return math.fsum(values) ** 2 / (len(values) * squares)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two paired sequences (ties in either count for neither concordance nor discordance).

    Returns 0 when either sequence is constant (no ranking to compare), and 1 for fewer than two pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"kendall_tau needs paired sequences, got {len(a)} and {len(b)} values")
    n = len(a)
    if n < 2:
        return 1.0
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da = (a[i] > a[j]) - (a[i] < a[j])
            db = (b[i] > b[j]) - (b[i] < b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    if denominator == 0.0:
        return 0.0
    return (concordant - discordant) / denominator


def ranking_tau(previous: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Kendall tau between two scorings of the same items (those present in both)."""
    common = sorted(set(previous) & set(current))
    return kendall_tau([previous[k] for k in common], [current[k] for k in common])


def epochs_until_stable(taus: Sequence[float | None], threshold: float) -> int | None:
    """The first epoch from which the ranking stays stable: ``taus[e]`` compares epoch ``e`` with ``e - 1``
    (``taus[0]`` is None), and the answer is the smallest ``e >= 1`` with every ``taus[e:] >= threshold``.
    None when the last comparison is still below the threshold (not stable within the run)."""
    stable: int | None = None
    for epoch in range(len(taus) - 1, 0, -1):
        tau = taus[epoch]
        if tau is None or tau < threshold:
            break
        stable = epoch
    return stable


def consensus_incentive(
    weights: Sequence[Sequence[float]], stakes: Sequence[float], *, kappa: float = 0.5
) -> list[float]:
    """Per miner, its share of incentive from every validator's weight row, summing to 1 (all 0 when nobody
    set weights).

    ``weights[i]`` is validator ``i``'s normalised weight row (an all-zero row: it set none), ``stakes[i]``
    its stake. Each miner's consensus weight is the largest value that validators holding at least
    ``kappa`` of the stake gave it or more; every weight above it is clipped to it; the clipped weights are
    summed by stake.
    """
    if len(weights) != len(stakes):
        raise ValueError(f"{len(weights)} weight rows but {len(stakes)} stakes")
    if not weights:
        return []
    total = math.fsum(max(0.0, s) for s in stakes)
    if total <= 0.0:
        raise ValueError("consensus needs some stake")
    share = [max(0.0, s) / total for s in stakes]
    miners = len(weights[0])
    rank = [0.0] * miners
    for j in range(miners):
        column = sorted(((row[j], share[i]) for i, row in enumerate(weights)), key=lambda x: -x[0])
        held = 0.0
        agreed = 0.0
        for value, s in column:
            held += s
            if held >= kappa - 1e-12:
                agreed = value
                break
        rank[j] = math.fsum(s * min(w, agreed) for w, s in column)
    total_rank = math.fsum(rank)
    if total_rank <= 0.0:
        return [0.0] * miners
    return [r / total_rank for r in rank]


def class_shares(values: Mapping[str, float], classes: Mapping[str, str]) -> dict[str, float]:
    """Sum of ``values`` (e.g. incentive per miner) by class (``classes[miner]``)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        cls = classes[key]
        out[cls] = out.get(cls, 0.0) + value
    return out
