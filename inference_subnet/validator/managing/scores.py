"""Score histories, dropout admission and aggregates, kept in Redis.

Scoring jobs arrive at least once (a worker may die after scoring and before acknowledging), so writing a
result is idempotent by job id. The dropout cap is checked and counted in one Lua call, so concurrent
workers cannot score more than the cap between them. The math lives in :mod:`.score_math`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from importlib.resources import files

from inference_subnet.chain.types import Metagraph
from inference_subnet.protocol.task import UnknownTask, load_task
from inference_subnet.settings import ScoringSettings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, evalsha_many
from inference_subnet.validator.managing import state
from inference_subnet.validator.managing.score_math import (
    NO_EVIDENCE,
    Evidence,
    Kind,
    Sample,
    Standing,
    chance,
    dropout_probability,
    evidence,
    mean_over_tasks,
    population_prior,
    sample_organic,
    shrink,
    standing,
)

log = logging.getLogger(__name__)

_LUA = files("inference_subnet.store").joinpath("lua")
_ADMIT = _LUA.joinpath("admit_scored.lua").read_text()
_RECORD = _LUA.joinpath("record_sample.lua").read_text()


class ScoreBook:
    """Per miner and task: the bounded sample history, the dropout counters, the aggregate.

    ``clock`` (wall-clock seconds) decides the dropout period; ``default_latency_reference`` is the
    latency (seconds) at which the speed part of a score reaches 0 for tasks given by name only.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        settings: ScoringSettings,
        *,
        clock: Callable[[], float] = time.time,
        default_latency_reference: float = 10.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.settings = settings
        self._clock = clock
        self.default_latency_reference = default_latency_reference
        self._admit = redis.register_script(_ADMIT)
        self._record = redis.register_script(_RECORD)
        self._references: dict[str, float] = {}

    def period(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        return math.floor(now / self.settings.dropout_period_seconds)

    # -- dropout -------------------------------------------------------------------------------------
    async def admit(
        self, identity: str, task: str, kind: Kind, rng: random.Random, *, sure: bool = False
    ) -> bool:
        """Whether this response is scored. Call it for every response, before scoring and whatever the
        outcome (a failure too), so that which responses count does not depend on the answer.

        Organic responses are first sampled at ``organic_sample_rate`` (the rest are simply not scored);
        then at most ``max_scored_per_period`` per miner, task and period are admitted, thinned at random
        when the previous period had more; every response refused by the cap is counted as dropped.
        """
        return (await self.admit_many([identity], task, kind, rng, sure=(identity,) if sure else ()))[0]

    async def admit_many(
        self, identities: Sequence[str], task: str, kind: Kind, rng: random.Random,
        *, sure: Collection[str] = (),
    ) -> list[bool]:
        """:meth:`admit` for the responses of many miners (one round's), in two pipelined round trips:
        the previous period's volumes, then one cap script per miner (miners live in different slots).

        Organic responses of the miners in ``sure`` skip the sampling and the thinning (never the cap): the
        gateway passes those whose organic answers it has too few of (:attr:`Standing.needs_organic_evidence`).
        """
        sure = set(sure) if kind == "organic" else set()
        if kind == "organic":
            sampled = [i in sure or sample_organic(self.settings.organic_sample_rate, rng) for i in identities]
        else:
            sampled = [True] * len(identities)
        todo = [i for i, s in zip(identities, sampled, strict=True) if s]
        if not todo:
            return [False] * len(identities)
        now = self._clock()
        period = self.period(now)
        cap = self.settings.max_scored_per_period
        pipe = self._redis.pipeline(transaction=False)
        for identity in todo:  # two GETs, not an MGET: a cluster pipeline refuses multi-key commands
            pipe.get(self._keys.scored_count(identity, task, period - 1))
            pipe.get(self._keys.dropped_count(identity, task, period - 1))
        flat = await pipe.execute()
        previous = [flat[i : i + 2] for i in range(0, len(flat), 2)]
        ttl_ms = self._counter_ttl_ms(now)
        calls = []
        for identity, counts in zip(todo, previous, strict=True):
            seen = None if all(v is None for v in counts) else sum(int(v or 0) for v in counts)
            lucky = identity in sure or chance(dropout_probability(seen, cap), rng)
            keys = [
                self._keys.scored_count(identity, task, period),
                self._keys.dropped_count(identity, task, period),
            ]
            calls.append((keys, [cap, 1 if lucky else 0, ttl_ms]))
        admitted = iter(await evalsha_many(self._redis, self._admit, calls))
        return [bool(next(admitted)) if s else False for s in sampled]

    def _counter_ttl_ms(self, now: float) -> int:
        """Counters live through the next period too: its thinning reads this period's volume."""
        length = self.settings.dropout_period_seconds
        end = (self.period(now) + 1) * length
        return max(1, math.ceil((end - now + length) * 1000))

    async def dropout_counts(self, identity: str, task: str, period: int | None = None) -> tuple[int, int]:
        """(scored, dropped) for one miner and task in a period (default: the current one)."""
        period = self.period() if period is None else period
        scored, dropped = await self._redis.mget(
            [
                self._keys.scored_count(identity, task, period),
                self._keys.dropped_count(identity, task, period),
            ]
        )
        return int(scored or 0), int(dropped or 0)

    # -- history -------------------------------------------------------------------------------------
    async def record(self, identity: str, task: str, sample: Sample, job_id: str) -> bool:
        """Append a scored sample once per ``job_id``; False when that job was already applied."""
        if not job_id:
            raise ValueError("job_id must not be empty: it is what makes recording idempotent")
        await state.track(self._redis, self._keys, identity, [task])
        result = await self._record(
            keys=[self._keys.job_applied(identity, job_id), self._keys.score_history(identity, task)],
            args=[
                sample.to_json(),
                self.settings.history_size,
                math.ceil(self.settings.applied_ttl_seconds * 1000),
            ],
        )
        return bool(result)

    async def history(self, identity: str, task: str) -> list[Sample]:
        """Samples of one miner and task, newest first."""
        raw = await self._redis.lrange(self._keys.score_history(identity, task), 0, -1)
        return _parse(raw, identity, task)

    # -- aggregates ----------------------------------------------------------------------------------
    def evidence_of(self, samples: Sequence[Sample], latency_reference: float) -> Evidence:
        """:func:`.score_math.evidence` with this validator's weights."""
        s = self.settings
        return evidence(
            samples,
            quality_weight=s.quality_weight,
            latency_weight=s.latency_weight,
            reliability_weight=s.reliability_weight,
            organic_weight=s.organic_weight,
            latency_reference=latency_reference,
            gate_by_quality=s.gate_by_quality,
        )

    def prior(self, found: Iterable[Evidence]) -> float:
        """The score a miner with little evidence is shrunk towards: what the miners of this task are worth
        (``prior = "population"``, empirical Bayes) or the fixed ``prior_score``."""
        s = self.settings
        return population_prior(found, s.prior_score) if s.prior == "population" else s.prior_score

    def score(self, found: Evidence, prior: float) -> float:
        """A miner's score for one task from its evidence and the task's prior (:func:`.score_math.shrink`)."""
        s = self.settings
        return shrink(found, prior_score=prior, prior_strength=s.prior_strength, ramp_samples=s.ramp_samples)

    async def aggregates(
        self, identities: Sequence[str], tasks: Mapping[str, float] | Sequence[str]
    ) -> dict[str, float]:
        """identity -> score in [0, 1]: the per-task scores averaged with every task counting the same.

        ``tasks`` maps task name -> latency reference, or names only (then each installed task's timeout,
        see :meth:`latency_reference`). Each task's prior is read from the same miners' evidence (see
        :meth:`prior`). One pipelined round trip.
        """
        refs = dict(tasks) if isinstance(tasks, Mapping) else {t: self.latency_reference(t) for t in tasks}
        names = sorted(refs)
        if not identities:
            return {}
        if not names:
            return {i: self.score(NO_EVIDENCE, self.settings.prior_score) for i in identities}
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            for task in names:
                pipe.lrange(self._keys.score_history(identity, task), 0, -1)
        raw = await pipe.execute()
        found = {
            (identity, task): self.evidence_of(_parse(raw[i * len(names) + j], identity, task), refs[task])
            for i, identity in enumerate(identities)
            for j, task in enumerate(names)
        }
        priors = {task: self.prior(found[(identity, task)] for identity in identities) for task in names}
        return {
            identity: mean_over_tasks(self.score(found[(identity, task)], priors[task]) for task in names)
            for identity in identities
        }

    async def standings(
        self, identities: Sequence[str], task: str, latency_reference: float | None = None
    ) -> dict[str, Standing]:
        """identity -> :class:`.score_math.Standing` for one task (organic routing's view); the latency
        reference defaults to :meth:`latency_reference`. One pipelined round trip."""
        if not identities:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            pipe.lrange(self._keys.score_history(identity, task), 0, -1)
        reference = self.latency_reference(task) if latency_reference is None else latency_reference
        samples = {identity: _parse(raw, identity, task) for identity, raw in zip(identities, await pipe.execute())}
        found = {identity: self.evidence_of(s, reference) for identity, s in samples.items()}
        prior = self.prior(found.values())
        return {
            identity: standing(samples[identity], self.score(found[identity], prior), window=self.settings.quality_window)
            for identity in identities
        }

    def latency_reference(self, task: str) -> float:
        """The latency at which a task's speed score reaches 0: its timeout when the task is installed
        (an answer at the deadline is worth nothing for speed), else ``default_latency_reference``."""
        if task not in self._references:
            try:
                self._references[task] = float(load_task(task).timeout)
            except UnknownTask:
                self._references[task] = self.default_latency_reference
        return self._references[task]

    # -- cleanup -------------------------------------------------------------------------------------
    async def prune(self, metagraph: Metagraph) -> list[str]:
        """Delete the state of identities no longer in the metagraph; returns them. A new hotkey on a
        freed uid has another identity, so it starts from the prior whether or not this ran."""
        return await state.prune_identities(self._redis, self._keys, {n.identity for n in metagraph.neurons})


def _parse(raw: Sequence[bytes], identity: str, task: str) -> list[Sample]:
    samples: list[Sample] = []
    for item in raw:
        try:
            samples.append(Sample.from_json(item))
        except (ValueError, KeyError, TypeError):
            log.warning("skipping an unreadable score sample", extra={"miner": identity, "task": task})
    return samples
