"""Which miners to call: pure choices, no I/O.

Synthetic rounds must cover every miner evenly over an epoch (an unchallenged miner has no score, a miner
challenged ten times more than another is scored on more evidence), and must not burn the quota of miners
that have little of it. Organic routing wants the best answer now: the top-scored miners with quota left,
spreading load over the best few in proportion to score and quota left rather than hammering the best one, and never a miner the validator
knows answers wrongly, nor one it has not yet seen enough of to judge: "top N by score" alone sends users to
wrong miners whenever fewer than N good ones exist.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

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
    quality: float
    """Mean answer quality of its newest samples (failures as 0)."""
    evidence: int
    """Synthetic samples the validator holds of it."""
    guaranteed: bool = True
    """Whether this validator's guaranteed pace on it has room now; if not, ``total_left`` counts the borrow
    attempts it may still make (the miner may refuse them)."""


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

    Miners not yet challenged this epoch go first (in random order weighted by remaining synthetic quota), so
    every miner with quota is seen early; after that, miners are challenged in proportion to their synthetic
    quota (which follows their declared capacity): the next ones are those whose quota is the least used,
    ``(challenged + u) / (challenged + left)`` with ``u`` uniform in [0, 1) as a random tie-break. Challenging
    every miner equally instead would hand one machine split over k uids k times the synthetic volume (and
    evidence) of the same machine behind one uid. Miners without quota are never chosen.
    """
    if k <= 0:
        return []
    eligible = [c for c in candidates if c.synthetic_left > 0]
    fresh = sorted((c for c in eligible if c.challenged <= 0), key=lambda c: c.identity)
    chosen = [c.identity for c in _weighted_without_replacement(fresh, k, rng)]
    need = k - len(chosen)
    if need > 0:
        seen = [c for c in eligible if c.challenged > 0]
        filled = sorted(
            seen,
            key=lambda c: ((c.challenged + rng.random()) / (c.challenged + c.synthetic_left), c.identity),
        )
        picked = filled[:need]
        rng.shuffle(picked)
        chosen += [c.identity for c in picked]
    return chosen


def rank_organic(
    candidates: Sequence[OrganicCandidate],
    *,
    bar: QualityBar,
    contenders: int = 3,
    rng: random.Random | None = None,
) -> list[str]:
    """Every miner with quota left that passes ``bar``, in the order to try them for one organic request:
    those where this validator's guaranteed pace has room, then those it may only ask to lend.

    The bar is applied among miners with quota left: when the best miner's quota is spent, the next best
    are judged against each other. The ``contenders`` best-scored miners come first, in an order drawn at
    random with weight ``score x quota left`` (:func:`contender_order`), so load spreads over all of them in
    proportion to how good they are and how much they can still take, and a failed attempt fails over in
    the same order; then the others by score, for retries. Without ``rng`` the order is the weights'
    (largest first) and equal scores are ordered by identity.
    """
    eligible = bar.passing([c for c in candidates if c.total_left > 0])
    tie = {c.identity: (rng.random() if rng is not None else 0.0) for c in eligible}
    out: list[str] = []
    # Miners where this validator's guaranteed pace has room first; then those it may ask to lend.
    for tier in (True, False):
        group = [c for c in eligible if c.guaranteed is tier]
        by_score = sorted(group, key=lambda c: (-c.score, tie[c.identity], c.identity))
        top = by_score[: max(0, contenders)]
        rest = by_score[max(0, contenders) :]
        out += [c.identity for c in contender_order(top, rng)] + [c.identity for c in rest]
    return out


def contender_order(top: Sequence[OrganicCandidate], rng: random.Random | None) -> list[OrganicCandidate]:
    """The contenders in the order to try them: a draw without replacement with probability proportional to
    ``score x total_left`` (Efraimidis-Spirakis), so a miner twice as good or with twice the quota left is
    first twice as often; by that weight, largest first, without ``rng``."""

    def weight(c: OrganicCandidate) -> float:
        return max(c.score, _MIN_WEIGHT) * c.total_left

    if rng is None:
        return sorted(top, key=lambda c: (-weight(c), c.identity))
    return sorted(top, key=lambda c: math.log(1.0 - rng.random()) / weight(c), reverse=True)


_MIN_WEIGHT = 1e-6
"""Floor of a contender's score in its weight: one that passed the bar with a score of 0 is still drawn."""


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
