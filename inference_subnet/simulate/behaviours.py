"""How a simulated miner answers one request: pure, driven by a seeded random source.

An answer is what the validator's scorer would see: whether it came at all, how long it took, and the task
score it earns. Behaviours are about the *backend* behind a uid (its quality, speed, failure rate and real
capacity) plus two tricks no single backend explains: a copycat relays another backend's answers, and a
sybil's backend is shared by many uids, so it times out once their combined load passes its real capacity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from inference_subnet.settings import ScoringSettings
from inference_subnet.simulate.population import Backend, MinerSpec
from inference_subnet.validator.managing.score_math import Sample, sample_value

QUALITY_NOISE = 0.05
"""Spread of one answer's score around its backend's quality."""


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    score: float
    latency: float
    outcome: str
    """``ok``, ``error``, ``timeout`` or ``overloaded`` (a shared backend past its real capacity)."""

    def sample(self, kind: str, ts: float) -> Sample:
        """The scoring sample this answer becomes (failures count 0), rounded as a scorer would report it."""
        if not self.ok:
            return Sample.failure(kind, round(self.latency, 3), ts)  # type: ignore[arg-type]
        return Sample(score=round(self.score, 4), kind=kind, latency=round(self.latency, 3), ok=True, ts=ts)  # type: ignore[arg-type]


def respond(
    miner: MinerSpec,
    backend: Backend,
    rng: random.Random,
    *,
    timeout: float,
    overloaded: bool = False,
    source: Backend | None = None,
) -> Answer:
    """One answer of ``miner``. ``overloaded``: its backend already served its real capacity this epoch.
    ``source``: for a copycat, the backend whose answer it relays (its own backend is the relay)."""
    if overloaded:
        return Answer(False, 0.0, timeout, "overloaded")
    if rng.random() < backend.fail_rate:
        return Answer(False, 0.0, rng.uniform(0.05, 0.5), "error")
    answering = source if miner.behaviour == "copycat" and source is not None else backend
    if answering is not backend and rng.random() < answering.fail_rate:
        return Answer(False, 0.0, rng.uniform(0.05, 0.5), "error")
    latency = answering.latency * rng.lognormvariate(0.0, answering.jitter)
    if answering is not backend:
        latency += backend.latency * rng.lognormvariate(0.0, backend.jitter)
    if latency > timeout:
        return Answer(False, 0.0, timeout, "timeout")
    score = min(1.0, max(0.0, rng.gauss(answering.quality, QUALITY_NOISE)))
    return Answer(True, score, latency, "ok")


def expected_value(
    miner: MinerSpec,
    backend: Backend,
    settings: ScoringSettings,
    *,
    timeout: float,
    source: Backend | None = None,
    draws: int = 400,
    seed: int = 0,
) -> float:
    """The mean sample value (quality, speed and reliability, as the aggregate weighs them) of a miner that is
    never overloaded: the yardstick the simulated ranking is compared with."""
    rng = random.Random(f"truth:{seed}:{miner.index}")
    total = 0.0
    for _ in range(draws):
        sample = respond(miner, backend, rng, timeout=timeout, source=source).sample("synthetic", 0.0)
        total += sample_value(
            sample,
            quality_weight=settings.quality_weight,
            latency_weight=settings.latency_weight,
            reliability_weight=settings.reliability_weight,
            latency_reference=timeout,
            gate_by_quality=settings.gate_by_quality,
        )
    return total / draws
