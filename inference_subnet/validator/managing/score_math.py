"""Hybrid scoring and dropout decisions: pure functions, no I/O.

A miner's aggregate blends three things every sample tells us (quality of the answer, speed, whether it
answered at all) and two kinds of evidence (synthetic challenges, sampled organic traffic). It averages over
the samples that exist, shrunk towards an explicit prior: dividing by a fixed window length would punish a
new miner for the samples it has not had the chance to earn yet.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["synthetic", "organic"]
KINDS: tuple[Kind, ...] = ("synthetic", "organic")


@dataclass(frozen=True, slots=True)
class Sample:
    """One scored response. A failure (error, timeout, garbage) has ``ok=False`` and counts as 0."""

    score: float
    kind: Kind
    latency: float
    ok: bool
    ts: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sample kind must be one of {KINDS}, got {self.kind!r}")
        if not (0.0 <= self.score <= 1.0):
            raise ValueError(f"sample score must be in [0, 1], got {self.score!r}")
        if not (self.latency >= 0.0) or math.isinf(self.latency):
            raise ValueError(f"sample latency must be a finite number of seconds >= 0, got {self.latency!r}")

    @classmethod
    def failure(cls, kind: Kind, latency: float, ts: float) -> Sample:
        """A response that never came, came too late or could not be parsed."""
        return cls(score=0.0, kind=kind, latency=latency, ok=False, ts=ts)

    def to_json(self) -> str:
        return json.dumps(
            {"score": self.score, "kind": self.kind, "latency": self.latency, "ok": self.ok, "ts": self.ts},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Sample:
        data = json.loads(raw)
        return cls(
            score=float(data["score"]),
            kind=data["kind"],
            latency=float(data["latency"]),
            ok=bool(data["ok"]),
            ts=float(data["ts"]),
        )


def latency_score(latency: float, reference: float) -> float:
    """1 for an instant answer, falling linearly to 0 at ``reference`` seconds (the task's timeout)."""
    if reference <= 0.0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - latency / reference))


def sample_value(
    sample: Sample,
    *,
    quality_weight: float,
    latency_weight: float,
    reliability_weight: float,
    latency_reference: float,
    gate_by_quality: bool = True,
) -> float:
    """One sample's worth in [0, 1]: quality, speed and success weighted. Failures are worth 0.

    With ``gate_by_quality`` (the default) speed and success count in proportion to the answer's quality:
    answering at all, and fast, is worth something only when the answer is. Without it a miner returning
    instant wrong answers keeps the latency and reliability parts of the score (0.3 of it by default), and
    weights follow scores, so laziness would still be paid.
    """
    total = quality_weight + latency_weight + reliability_weight
    if not total > 0.0:
        raise ValueError("quality, latency and reliability weights must not all be 0")
    if not sample.ok:
        return 0.0
    service = latency_weight * latency_score(sample.latency, latency_reference) + reliability_weight
    if gate_by_quality:
        service *= sample.score
    value = (quality_weight * sample.score + service) / total
    return min(1.0, max(0.0, value))


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a validator's samples of one miner and task say, before any prior: ``n`` samples whose mean
    value (per kind, blended) is ``blend`` (0 when there are none)."""

    n: int
    blend: float


NO_EVIDENCE = Evidence(0, 0.0)


def evidence(
    samples: Iterable[Sample],
    *,
    quality_weight: float = 0.7,
    latency_weight: float = 0.2,
    reliability_weight: float = 0.1,
    organic_weight: float = 0.5,
    latency_reference: float = 10.0,
    gate_by_quality: bool = True,
) -> Evidence:
    """Per kind, the mean sample value; when both kinds exist they are blended ``organic_weight`` to
    ``1 - organic_weight`` (one kind alone stands for itself, whatever the weight)."""
    sums = {kind: 0.0 for kind in KINDS}
    counts = {kind: 0 for kind in KINDS}
    for sample in samples:
        sums[sample.kind] += sample_value(
            sample,
            quality_weight=quality_weight,
            latency_weight=latency_weight,
            reliability_weight=reliability_weight,
            latency_reference=latency_reference,
            gate_by_quality=gate_by_quality,
        )
        counts[sample.kind] += 1
    n = counts["synthetic"] + counts["organic"]
    if n == 0:
        return NO_EVIDENCE
    means = {kind: sums[kind] / counts[kind] for kind in KINDS if counts[kind]}
    if len(means) == 2:
        w = min(1.0, max(0.0, organic_weight))
        blend = w * means["organic"] + (1.0 - w) * means["synthetic"]
    else:
        (blend,) = means.values()
    return Evidence(n, min(1.0, max(0.0, blend)))


def population_prior(evidences: Iterable[Evidence], fallback: float) -> float:
    """The prior of empirical Bayes: the mean evidence of every miner the validator has samples of (each miner
    counting once, whatever its sample count), or ``fallback`` before any. Shrinking a miner with few samples
    towards what miners are worth, rather than towards 0, keeps a miner that is sampled less often (a small
    one, whose quota a floor validator can barely use) from being ranked below its worth."""
    known = [e.blend for e in evidences if e.n > 0]
    return math.fsum(known) / len(known) if known else fallback


def shrink(found: Evidence, *, prior_score: float, prior_strength: float, ramp_samples: int = 0) -> float:
    """``found`` shrunk towards ``prior_score`` as if the prior were ``prior_strength`` extra samples:
    ``(n * blend + k * prior) / (n + k)``, then ramped in: a miner with fewer than ``ramp_samples`` samples
    gets ``n / ramp_samples`` of it, so a new uid earns nothing before it has answered anything, however
    generous the prior. With no samples and no ramp the result is the prior."""
    if not 0.0 <= prior_score <= 1.0:
        raise ValueError(f"prior_score must be in [0, 1], got {prior_score!r}")
    if prior_strength < 0.0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength!r}")
    if found.n == 0:
        return 0.0 if ramp_samples > 0 else prior_score
    value = (found.n * found.blend + prior_strength * prior_score) / (found.n + prior_strength)
    if ramp_samples > 0:
        value *= min(1.0, found.n / ramp_samples)
    return min(1.0, max(0.0, value))


def aggregate(
    samples: Iterable[Sample],
    *,
    quality_weight: float = 0.7,
    latency_weight: float = 0.2,
    reliability_weight: float = 0.1,
    organic_weight: float = 0.5,
    prior_score: float = 0.0,
    prior_strength: float = 1.0,
    latency_reference: float = 10.0,
    gate_by_quality: bool = True,
) -> float:
    """A miner's score for one task, in [0, 1]: its :func:`evidence` shrunk towards a fixed prior
    (:func:`shrink`, no ramp). With no samples the result is the prior."""
    found = evidence(
        samples,
        quality_weight=quality_weight,
        latency_weight=latency_weight,
        reliability_weight=reliability_weight,
        organic_weight=organic_weight,
        latency_reference=latency_reference,
        gate_by_quality=gate_by_quality,
    )
    return shrink(found, prior_score=prior_score, prior_strength=prior_strength)


ORGANIC_QUALITY_SAMPLES = 3
"""Scored organic answers from which what users got counts in the bar on its own."""


@dataclass(frozen=True, slots=True)
class Standing:
    """What organic routing needs to know of a miner for one task.

    ``score`` orders miners; ``quality`` (the mean answer quality of its newest samples, failures as 0)
    decides whether users may be sent to it at all; ``evidence`` (synthetic samples) whether the validator
    has seen enough of it to judge. Speed and reliability are in the score but not in the bar: a fast miner
    that answers wrongly must not pass it.
    """

    score: float
    quality: float
    evidence: int
    organic: int = 0
    """Organic samples in the history: below :data:`ORGANIC_QUALITY_SAMPLES`, what users get is not known."""

    @property
    def needs_organic_evidence(self) -> bool:
        """Whether this miner's organic answers should all be scored (within the dropout cap) until a few are:
        only they show a miner that recognises challenges, and thinned with the synthetic ones they arrive too
        slowly to bar it before it has served users wrong answers for an epoch."""
        return self.organic < ORGANIC_QUALITY_SAMPLES


UNJUDGED = Standing(0.0, 0.0, 0)
"""The standing of a miner the validator holds no samples of: no evidence, so never past the quality bar."""


def standing(samples: Sequence[Sample], score: float, *, window: int) -> Standing:
    """``samples`` newest first, as the history keeps them.

    The quality is that of the newest ``window`` samples, or that of the newest ``window`` organic ones
    when there are a few and they are worse: a miner that recognises challenges answers them well and
    users badly, and mixed with its many synthetic samples its few scored organic answers would barely
    move the mean. Its organic samples stay in the history after it is barred (it gets no new ones), so
    it comes back only when synthetic samples have pushed them out."""
    window = max(1, window)
    quality = _quality(samples[:window])
    organic = [s for s in samples if s.kind == "organic"][:window]
    if len(organic) >= ORGANIC_QUALITY_SAMPLES:
        quality = min(quality, _quality(organic))
    return Standing(score, quality, sum(1 for s in samples if s.kind == "synthetic"), len(organic))


def _quality(samples: Sequence[Sample]) -> float:
    return math.fsum(s.score if s.ok else 0.0 for s in samples) / len(samples) if samples else 0.0


def dropout_probability(expected_total: int | None, cap: int) -> float:
    """Chance that one response of a period is scored, so that about ``cap`` of them are.

    ``expected_total`` is the volume to expect in the period (the previous period's, when known). Thinning
    at random over the whole period, rather than scoring the first ``cap`` responses, means a miner cannot
    tell which of its answers count.
    """
    if cap <= 0:
        return 0.0
    if expected_total is None or expected_total <= cap:
        return 1.0
    return cap / expected_total


def dropout_decision(
    scored_so_far: int, cap: int, rng: random.Random, *, expected_total: int | None = None
) -> bool:
    """Whether to score one more response: never beyond ``cap`` in a period, at random below it.

    The validator applies the same rule atomically in Redis (the cap check and the count are one script);
    this is the rule itself.
    """
    if scored_so_far >= cap:
        return False
    return chance(dropout_probability(expected_total, cap), rng)


def sample_organic(rate: float, rng: random.Random) -> bool:
    """Whether an organic response is sent for scoring (scoring all of them is what costs validators)."""
    return chance(rate, rng)


def chance(probability: float, rng: random.Random) -> bool:
    """True with ``probability``; exact at 0 and 1 (no draw wasted on a certainty)."""
    if probability >= 1.0:
        return True
    if not probability > 0.0:
        return False
    return rng.random() < probability


def mean_over_tasks(per_task: Iterable[float]) -> float:
    """A miner's overall score: every task counts the same, so a task that is cheap to serve cannot
    dominate one that is expensive. A task the miner has no evidence for counts as its prior."""
    values = list(per_task)
    return math.fsum(values) / len(values) if values else 0.0
