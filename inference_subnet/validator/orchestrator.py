"""The synthetic loop: choose a task, sample miners with quota, challenge them concurrently, queue the scoring.

A round never waits on one miner longer than the task's timeout (every call has a deadline, and a guard
deadline around the client in case a transport ignores its own), and never opens more than
``max_concurrency`` connections at once. Quota is taken before calling (one atomic batch), so the
orchestrator and the gateway together can never exceed this validator's share of a miner. Dropout
(``ScoreBook.admit``) is asked for every response, failures included, before it is queued: which responses
count must not depend on what they contain. Scoring itself happens elsewhere (the scoring workers), so a slow
scorer never slows the challenges down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel
from redis.exceptions import RedisError

from inference_subnet.chain.types import ChainError, Metagraph, MetagraphSource, Neuron
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import CapacityInfo
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.canaries import CanaryBook
from inference_subnet.validator.managing.quotas import QuotaBook
from inference_subnet.validator.managing.sampling import sample_synthetic
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.scoring import JobResponse, ScoringJob, enqueue
from inference_subnet.validator.service import Check, Every, Service
from inference_subnet.validator.synthesizing import Synthesizer

log = logging.getLogger(__name__)

RATE_LIMITED = "rate_limited"
"""A miner's 429. Synthetic requests are sent only within this validator's guaranteed pace on the miner
(never borrowed), which the miner computes the same way: a 429 to one is a failure, and scored as one."""

CAUGHT = "canary"
"""Outcome of an answer from a miner on a canary bench (it forwarded one of this validator's challenges to
this validator's gateway): scored as a failure, 0."""

GUARD_SECONDS = 1.0
"""Extra time past the task timeout before the orchestrator gives up on a call the client did not end."""


class MinerCaller(Protocol):
    """What the orchestrator needs from ``validator.client.MinerClient``."""

    async def call(self, task: Task, neuron: Neuron, request: BaseModel, timeout: float | None = None) -> Any: ...

    async def capacity(self, neuron: Neuron) -> CapacityInfo | None: ...


@dataclass
class RoundReport:
    """What one round did, for logs, metrics and tests."""

    task: str
    block: int
    source: str = ""
    candidates: int = 0
    sampled: int = 0
    granted: int = 0
    ok: int = 0
    failed: int = 0
    admitted: int = 0
    dropped: int = 0
    job_id: str | None = None
    """The first scoring job of the round (one job per distinct challenge)."""
    jobs: int = 0
    caught: int = 0
    """Answers of miners on a canary bench, scored 0."""
    seconds: float = 0.0
    call_seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def overhead_seconds(self) -> float:
        """Time spent on everything but waiting for miners (sampling, quota, dropout, queueing)."""
        return max(0.0, self.seconds - self.call_seconds)


def job_response(neuron: Neuron, result: Any) -> JobResponse:
    """A scoring-job entry from a client ``CallResult`` (ok, response, latency, outcome)."""
    ok = bool(getattr(result, "ok", False))
    response = getattr(result, "response", None)
    text: str | None = None
    if ok and response is not None:
        if isinstance(response, BaseModel):
            text = response.model_dump_json()
        elif isinstance(response, (bytes, str)):
            text = response.decode() if isinstance(response, bytes) else response
        else:
            text = json.dumps(response)
    outcome = str(getattr(result, "outcome", None) or ("ok" if ok else "error"))
    if not ok and outcome == "ok":
        outcome = "error"
    if getattr(result, "status", None) == 429:
        outcome = RATE_LIMITED
    latency = float(getattr(result, "latency", 0.0) or 0.0)
    return JobResponse(identity=neuron.identity, uid=neuron.uid, response=text, latency=latency, outcome=outcome)


@dataclass(frozen=True, slots=True)
class _Timeout:
    """Stands in for a CallResult when the guard deadline ended a call."""

    latency: float
    ok: bool = False
    response: None = None
    outcome: str = "timeout"
    error: str = "no answer within the task timeout"


def miners_of(metagraph: Metagraph, my_hotkey: str | None) -> list[Neuron]:
    """The neurons to challenge: served axons, not this validator itself."""
    return [n for n in metagraph.neurons if n.axon is not None and n.axon.is_served and n.hotkey != my_hotkey]


class Orchestrator(Service):
    """Runs synthetic rounds every ``round_interval`` seconds and keeps miners' capacities fresh."""

    name = "orchestrator"

    def __init__(
        self,
        *,
        redis: RedisClient,
        keys: Keys,
        metagraph: MetagraphSource,
        quotas: QuotaBook,
        scores: ScoreBook,
        client: MinerCaller,
        synthesizer: Synthesizer,
        tasks: Mapping[str, Task],
        my_hotkey: str,
        miners_per_round: int = 16,
        max_concurrency: int = 64,
        round_interval: float = 5.0,
        capacity_refresh: float = 600.0,
        quota_epoch_seconds: float | None = None,
        rng: random.Random | None = None,
        volumes: VolumeBook | None = None,
        canaries: CanaryBook | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("the orchestrator needs at least one task")
        self.redis = redis
        self.keys = keys
        self.metagraph = metagraph
        self.quotas = quotas
        self.scores = scores
        self.client = client
        self.synthesizer = synthesizer
        self.tasks = dict(tasks)
        self.my_hotkey = my_hotkey
        self.miners_per_round = miners_per_round
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.round_interval = round_interval
        self.capacity_every = Every(capacity_refresh)
        self.quota_epoch_seconds = quota_epoch_seconds or quotas.settings.epoch_seconds
        self.rng = rng or random.Random()
        self.volumes = volumes
        """Where the synthetic answers received OK are counted (the miners' verified volume), if anywhere."""
        self.canaries = canaries
        self._task_cycle = 0
        self._stakes_block: int | None = None
        self._with_capacity: set[str] = set()
        self.last_round: RoundReport | None = None
        self.last_round_at: float | None = None
        self.rounds_done = 0
        self.calls: dict[str, int] = {}
        """Synthetic calls this process made to each miner identity, for views that run in the same process
        (``localnet``): metrics never carry identities. Only identities still in the metagraph are kept."""
        self._progress = asyncio.Condition()

    # -- metagraph, stakes and capacities ---------------------------------------------------------------
    async def sync(self) -> Metagraph:
        """The current metagraph; on a new block, re-split quotas by stake and read new miners' capacity."""
        metagraph = await self.metagraph.current()
        if metagraph.block != self._stakes_block:
            await self.quotas.set_stakes(metagraph, self.my_hotkey)
            self._stakes_block = metagraph.block
        live = {n.identity for n in metagraph.neurons}
        self._with_capacity &= live
        if self.capacity_every.due():
            await self.refresh_capacities(metagraph)
        else:
            new = [n for n in miners_of(metagraph, self.my_hotkey) if n.identity not in self._with_capacity]
            if new:
                await self.refresh_capacities(metagraph, only=new)
        return metagraph

    async def refresh_capacities(self, metagraph: Metagraph, only: Sequence[Neuron] | None = None) -> int:
        """Read ``/capacity`` of miners (concurrently, bounded) into the quota book; returns how many
        answered. A miner that does not answer keeps its last known capacity, or the task's hint."""
        neurons = list(only) if only is not None else miners_of(metagraph, self.my_hotkey)
        infos = await asyncio.gather(*(self._capacity(n) for n in neurons))
        answered = 0
        for neuron, info in zip(neurons, infos):
            if info is None and neuron.identity in self._with_capacity:
                continue
            declared = self._capacities(info)
            await self.quotas.set_capacity(
                neuron.identity, declared, burst_seconds=info.burst_seconds if info is not None else None
            )
            self._with_capacity.add(neuron.identity)
            answered += info is not None
        return answered

    async def _capacity(self, neuron: Neuron) -> CapacityInfo | None:
        async with self.semaphore:
            try:
                async with asyncio.timeout(10.0):
                    info = await self.client.capacity(neuron)
            except Exception as exc:  # unreachable or broken miner: it keeps a default capacity
                log.debug("capacity of uid %d unavailable: %s", neuron.uid, exc)
                info = None
        metrics.capacity_refreshes.labels("ok" if info is not None else "unavailable").inc()
        return info

    def _capacities(self, info: CapacityInfo | None) -> dict[str, int]:
        """Declared capacity per task, rescaled to this validator's epoch length; the hint when undeclared."""
        out: dict[str, int] = {}
        for name, task in self.tasks.items():
            if info is not None and name in info.capacities:
                scale = self.quota_epoch_seconds / info.epoch_seconds if info.epoch_seconds > 0 else 1.0
                out[name] = max(0, int(info.capacities[name] * scale))
            else:
                out[name] = task.capacity_hint
        return out

    # -- one round ----------------------------------------------------------------------------------------
    def next_task(self) -> Task:
        names = sorted(self.tasks)
        task = self.tasks[names[self._task_cycle % len(names)]]
        self._task_cycle += 1
        return task

    async def round(self, task: Task | None = None) -> RoundReport:
        """One synthetic round; raises only on Redis or metagraph failures (the loop survives those)."""
        started = time.perf_counter()
        metagraph = await self.sync()
        task = task or self.next_task()
        report = RoundReport(task=task.name, block=metagraph.block)
        by_identity = {n.identity: n for n in miners_of(metagraph, self.my_hotkey)}
        report.candidates = len(by_identity)
        candidates = await self.quotas.synthetic_candidates(list(by_identity), task.name)
        chosen = sample_synthetic(candidates, self.miners_per_round, self.rng)
        report.sampled = len(chosen)
        granted = await self.quotas.consume_many(chosen, task.name, "synthetic") if chosen else []
        targets = [by_identity[i] for i, ok in zip(chosen, granted) if ok]
        report.granted = len(targets)
        metrics.quota_decisions.labels(task.name, "synthetic", "granted").inc(len(targets))
        metrics.quota_decisions.labels(task.name, "synthetic", "refused").inc(len(chosen) - len(targets))
        if not targets:
            return self._finish(report, started, "no_miners" if not chosen else "no_quota")
        # A challenge of its own for every miner: a copycat cannot answer one miner's challenge with the
        # answer another miner gave, and a planted canary names the one miner it was sent to.
        challenges = list(await asyncio.gather(*(self.synthesizer.request(task.name) for _ in targets)))
        report.source = ",".join(sorted({c.source for c in challenges}))
        if self.canaries is not None:
            await self.canaries.plant(
                task.name, [(c.request, n.identity) for c, n in zip(challenges, targets) if c.source == "fresh"]
            )
        call_started = time.perf_counter()
        results = await asyncio.gather(*(self._call(task, n, c.request) for n, c in zip(targets, challenges)))
        report.call_seconds = time.perf_counter() - call_started
        entries = [job_response(n, r) for n, r in zip(targets, results)]
        if self.canaries is not None:
            entries = await self._penalise_caught(task, entries)
        if self.volumes is not None:
            served = Counter(e.identity for e in entries if e.outcome == "ok")
            await self.volumes.count(served, task.name, "synthetic")
        pairs = list(zip(entries, challenges))  # every synthetic call was guaranteed: a 429 to it is a failure
        admitted = await self.scores.admit_many([e.identity for e, _ in pairs], task.name, "synthetic", self.rng)
        kept = [(e, c) for (e, c), ok in zip(pairs, admitted) if ok]
        self._count_calls(targets, by_identity)
        for e in entries:
            report.outcomes[e.outcome] = report.outcomes.get(e.outcome, 0) + 1
            metrics.miner_requests.labels(task.name, "synthetic", e.outcome).inc()
            metrics.miner_latency.labels(task.name, "synthetic").observe(e.latency)
        report.ok = report.outcomes.get("ok", 0)
        report.failed = len(entries) - report.ok
        report.caught = report.outcomes.get(CAUGHT, 0)
        report.admitted = len(kept)
        report.dropped = len(pairs) - len(kept)
        metrics.responses_admitted.labels(task.name, "synthetic").inc(len(kept))
        metrics.responses_dropped.labels(task.name, "synthetic").inc(report.dropped)
        for e, c in kept:  # one job per challenge: each was sent to one miner
            job = ScoringJob(task=task.name, kind="synthetic", request=c.request.model_dump_json(), responses=[e])
            await enqueue(self.redis, self.keys, job)
            report.job_id = report.job_id or job.job_id
            report.jobs += 1
        return self._finish(report, started, "ok")

    async def _penalise_caught(self, task: Task, entries: list[JobResponse]) -> list[JobResponse]:
        """Answers of miners on a canary bench become failures (score 0), whatever they contain."""
        assert self.canaries is not None
        caught = await self.canaries.caught([e.identity for e in entries])
        if not caught:
            return entries
        for e in entries:
            if e.identity in caught:
                log.warning("uid %d is on a canary bench (it forwarded a challenge of this validator to its "
                            "gateway): its %s answer scores 0", e.uid, task.name,
                            extra={"service": self.name, "task": task.name, "uid": e.uid})
        metrics.canary_caught.labels(task.name, "synthetic").inc(sum(e.identity in caught for e in entries))
        return [
            e.model_copy(update={"response": None, "outcome": CAUGHT}) if e.identity in caught else e
            for e in entries
        ]

    def _count_calls(self, called: Sequence[Neuron], present: Mapping[str, Neuron]) -> None:
        if len(self.calls) > len(present):  # miners left: their counts go (bounded by the metagraph)
            self.calls = {i: n for i, n in self.calls.items() if i in present}
        for neuron in called:
            self.calls[neuron.identity] = self.calls.get(neuron.identity, 0) + 1

    async def _call(self, task: Task, neuron: Neuron, request: BaseModel) -> Any:
        async with self.semaphore:
            started = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: no extra task per call, and on 3.11 wait_for can lose
                # a cancellation that races with the inner call's completion.
                async with asyncio.timeout(task.timeout + GUARD_SECONDS):
                    return await self.client.call(task, neuron, request, timeout=task.timeout)
            except TimeoutError:
                return _Timeout(latency=time.perf_counter() - started)

    def _finish(self, report: RoundReport, started: float, outcome: str) -> RoundReport:
        report.seconds = time.perf_counter() - started
        metrics.rounds.labels(report.task, outcome).inc()
        metrics.round_seconds.labels(report.task).observe(report.seconds)
        self.last_round = report
        self.last_round_at = time.time()
        log.info(
            "round %s at block %d: %d/%d miners called (%s), %d ok, %d failed, %d queued for scoring, "
            "%.3fs (%.3fs waiting for miners)",
            report.task, report.block, report.granted, report.candidates, outcome, report.ok, report.failed,
            report.admitted, report.seconds, report.call_seconds,
            extra={"service": self.name, "task": report.task, "block": report.block},
        )
        return report

    # -- loop -----------------------------------------------------------------------------------------------
    async def wait_rounds(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` rounds (successful or not) ended in :meth:`run`; False on timeout."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self.rounds_done >= count), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except (RedisError, OSError, ChainError, asyncio.TimeoutError) as exc:
                metrics.rounds.labels("-", "error").inc()
                metrics.service_errors.labels(self.name, type(exc).__name__).inc()
                log.warning("synthetic round failed: %s: %s", type(exc).__name__, exc,
                            extra={"service": self.name})
            self.rounds_done += 1
            async with self._progress:
                self._progress.notify_all()
            await asyncio.sleep(max(0.0, self.round_interval - (time.monotonic() - started)))

    async def checks(self) -> list[Check]:
        if self.last_round_at is None:
            return [Check("orchestrator", True, "no round finished yet")]
        age = time.time() - self.last_round_at
        limit = max(60.0, 10 * self.round_interval + max(t.timeout for t in self.tasks.values()))
        detail = f"last round {age:.0f}s ago"
        return [Check("orchestrator", age <= limit, detail)]
