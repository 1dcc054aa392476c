"""How a simulated miner answers one request: pure, driven by a seeded random source.

An answer is what the validator's scorer would see: whether it came at all, how long it took, and the task
score it earns. Behaviours are about the *backend* behind a uid (its quality, speed, failure rate and real
capacity) plus tricks no single backend explains:

- a sybil's backend is shared by many uids, so it times out once their combined load passes its real capacity;
- a *detector* tells fresh synthetic challenges from user traffic (with probability :data:`DETECT_RATE`) and
  serves only those with its good model; organic requests, and challenges that replay recorded organic ones,
  get a cheap wrong model;
- a *discriminator* serves validators with large stake with its good model and floor validators with a cheap
  one (it reads the caller's stake off the metagraph, as any miner can);
- a *copycat* has no model: it sends each request it receives to a validator's public gateway as an organic
  request and returns that answer late (:func:`relay`); the engine does the forwarding through the real routing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from inference_subnet.settings import ScoringSettings
from inference_subnet.simulate.population import Backend, MinerSpec
from inference_subnet.validator.managing.score_math import Sample, sample_value

QUALITY_NOISE = 0.05
"""Spread of one answer's score around its backend's quality."""
DETECT_RATE = 0.9
"""Share of fresh synthetic challenges a detector recognises (their shape is in the task's public code)."""
CHEAP_QUALITY = 0.07
"""Mean score of the cheap wrong model detectors and discriminators serve to those they do not favour."""
CHEAP_LATENCY = 0.1
"""Median seconds of the cheap model's answer."""


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
    kind: str = "synthetic",
    fresh: bool = True,
    large_caller: bool = True,
) -> Answer:
    """One answer of ``miner`` from its own backend. ``overloaded``: its backend already served its real
    capacity this epoch. ``kind`` and ``fresh`` (a fresh synthetic challenge, not a replayed organic one) are
    what a detector tries to tell; ``large_caller`` (the caller's stake is above the floor) is what a
    discriminator reads. A copycat's answers are made by :func:`relay`, not here."""
    if overloaded:
        return Answer(False, 0.0, timeout, "overloaded")
    if rng.random() < backend.fail_rate:
        return Answer(False, 0.0, rng.uniform(0.05, 0.5), "error")
    if _cheap(miner.behaviour, rng, kind=kind, fresh=fresh, large_caller=large_caller):
        latency = CHEAP_LATENCY * rng.lognormvariate(0.0, 0.3)
        return Answer(True, min(1.0, max(0.0, rng.gauss(CHEAP_QUALITY, QUALITY_NOISE))), latency, "ok")
    latency = backend.latency * rng.lognormvariate(0.0, backend.jitter)
    if latency > timeout:
        return Answer(False, 0.0, timeout, "timeout")
    score = min(1.0, max(0.0, rng.gauss(backend.quality, QUALITY_NOISE)))
    return Answer(True, score, latency, "ok")


def _cheap(behaviour: str, rng: random.Random, *, kind: str, fresh: bool, large_caller: bool) -> bool:
    """Whether this request gets the cheap model: a detector's unrecognised requests, a discriminator's
    floor callers."""
    if behaviour == "detector":
        return not (kind == "synthetic" and fresh and rng.random() < DETECT_RATE)
    if behaviour == "discriminator":
        return not large_caller
    return False


def relay(forwarded: Answer | None, relay_backend: Backend, rng: random.Random, *, timeout: float) -> Answer:
    """A copycat's answer: the answer its forwarded organic request got (None: the gateway refused it or
    no miner served it), later by the copycat's own hop. It cannot be better than what it copied."""
    if forwarded is None or not forwarded.ok:
        return Answer(False, 0.0, timeout if forwarded is None else forwarded.latency, "error")
    if rng.random() < relay_backend.fail_rate:
        return Answer(False, 0.0, rng.uniform(0.05, 0.5), "error")
    latency = forwarded.latency + relay_backend.latency * rng.lognormvariate(0.0, relay_backend.jitter)
    if latency > timeout:
        return Answer(False, 0.0, timeout, "timeout")
    return Answer(True, forwarded.score, latency, "ok")


def expected_value(
    miner: MinerSpec,
    backend: Backend,
    settings: ScoringSettings,
    *,
    timeout: float,
    draws: int = 400,
    seed: int = 0,
) -> float:
    """The mean sample value (quality, speed and reliability, as the aggregate weighs them) of a miner that is
    never overloaded: the yardstick the simulated ranking is compared with. Judged on fresh synthetic
    challenges from a large validator (a detector's and a discriminator's best case); a copycat's own value is
    that of its relay alone (it has no model)."""
    rng = random.Random(f"truth:{seed}:{miner.index}")
    total = 0.0
    for _ in range(draws):
        sample = respond(miner, backend, rng, timeout=timeout).sample("synthetic", 0.0)
        total += sample_value(
            sample,
            quality_weight=settings.quality_weight,
            latency_weight=settings.latency_weight,
            reliability_weight=settings.reliability_weight,
            latency_reference=timeout,
            gate_by_quality=settings.gate_by_quality,
        )
    return total / draws
