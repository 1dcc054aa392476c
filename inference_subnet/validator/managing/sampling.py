"""Which miners to call: pure choices, no I/O.

Synthetic rounds must cover every miner evenly over an epoch (an unchallenged miner has no score, a miner
challenged ten times more than another is scored on more evidence), and must not burn the quota of miners
that have little of it. Organic routing wants the best answer now: the top-scored miners with quota left,
spreading load over the few best rather than hammering the single best one, and never a miner the validator
knows answers wrongly, nor one it has not yet seen enough of to judge: "top N by score" alone sends users to
wrong miners whenever fewer than N good ones exist.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from inference_subnet.settings import QuotaSettings


@dataclass(frozen=True, slots=True)
class SyntheticCandidate:
    """A miner as synthetic sampling sees it in the current epoch."""

    identity: str
    synthetic_left: int
    """Synthetic requests this validator may still send it this epoch."""
    challenged: int
    """Synthetic requests already sent to it this epoch."""


@dataclass(frozen=True, slots=True)
class OrganicCandidate:
    """A miner as organic routing sees it."""

    identity: str
    score: float
    total_left: int
    """Requests (of any kind) this validator may still send it this epoch."""
    used: int
    """Organic requests already routed to it this epoch (or in flight): the load to spread."""
    quality: float
    """Mean answer quality of its newest samples (failures as 0)."""
    evidence: int
    """Synthetic samples the validator holds of it."""


@dataclass(frozen=True, slots=True)
class QualityBar:
    """Who may serve users at all: enough synthetic evidence, a recent quality of at least ``min_quality``,
    and at least ``relative`` of the best such miner's (so a mediocre miner is not sent users while much
    better ones have quota)."""

    min_quality: float
    relative: float
    min_evidence: int

    def passing(self, candidates: Sequence[OrganicCandidate]) -> list[OrganicCandidate]:
        judged = [
            c for c in candidates if c.evidence >= self.min_evidence and c.quality >= self.min_quality
        ]
        if not judged:
            return []
        floor = self.relative * max(c.quality for c in judged)
        return [c for c in judged if c.quality >= floor]


def quality_bar(settings: QuotaSettings) -> QualityBar:
    return QualityBar(
        min_quality=settings.organic_min_quality,
        relative=settings.organic_relative_quality,
        min_evidence=settings.organic_min_evidence,
    )


def sample_synthetic(candidates: Sequence[SyntheticCandidate], k: int, rng: random.Random) -> list[str]:
    """Up to ``k`` distinct miners for one synthetic round.

    The least-challenged miners this epoch go first, so every miner with quota is challenged once before
    any is challenged twice; within the same level the draw is random, weighted by remaining synthetic
    quota, so miners with little quota are not drained early in the epoch. Miners without quota are never
    chosen.
    """
    if k <= 0:
        return []
    eligible = sorted(
        (c for c in candidates if c.synthetic_left > 0), key=lambda c: (c.challenged, c.identity)
    )
    chosen: list[str] = []
    seen: set[str] = set()
    for _, level in groupby(eligible, key=lambda c: c.challenged):
        group = [c for c in level if c.identity not in seen]
        need = k - len(chosen)
        for c in _weighted_without_replacement(group, need, rng):
            chosen.append(c.identity)
            seen.add(c.identity)
        if len(chosen) >= k:
            break
    return chosen


def rank_organic(
    candidates: Sequence[OrganicCandidate],
    *,
    bar: QualityBar,
    contenders: int = 3,
    rng: random.Random | None = None,
) -> list[str]:
    """Every miner with quota left that passes ``bar``, in the order to try them for one organic request.

    The bar is applied among miners with quota left: when the best miner's quota is spent, the next best
    are judged against each other. The ``contenders`` best-scored miners come first, least-used first among
    them (ties: higher score); then the others by score, for retries. Equal scores are ordered at random
    when ``rng`` is given (so load spreads over equals), else by identity.
    """
    eligible = bar.passing([c for c in candidates if c.total_left > 0])
    tie = {c.identity: (rng.random() if rng is not None else 0.0) for c in eligible}
    by_score = sorted(eligible, key=lambda c: (-c.score, tie[c.identity], c.identity))
    top = by_score[: max(0, contenders)]
    rest = by_score[max(0, contenders) :]
    top.sort(key=lambda c: (c.used, -c.score, tie[c.identity], c.identity))
    return [c.identity for c in top + rest]


def _weighted_without_replacement(
    group: Sequence[SyntheticCandidate], k: int, rng: random.Random
) -> list[SyntheticCandidate]:
    """``k`` items drawn without replacement with probability proportional to remaining quota
    (Efraimidis-Spirakis: the top ``k`` of ``log(u) / weight``)."""
    if k <= 0:
        return []
    if len(group) <= k:
        keyed = group
    else:
        keyed = sorted(group, key=lambda c: math.log(1.0 - rng.random()) / c.synthetic_left, reverse=True)[:k]
    # Shuffle the order of the picks so the first-called miner of a round is not always the same kind.
    picked = list(keyed)
    rng.shuffle(picked)
    return picked
