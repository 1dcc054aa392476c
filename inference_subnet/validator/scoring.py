"""Scoring workers: jobs flow through a Redis Stream consumer group, each result applied exactly once.

Why a stream and not a list: a consumer group remembers which worker holds which job (the pending entries
list), so a job survives its worker dying mid-score. Delivery is at-least-once: a job that a dead or stuck
worker held longer than ``claim_idle`` seconds is taken over by another (``XAUTOCLAIM``); the effect is
exactly-once because the score book applies a job's samples idempotently by job id. A job that keeps failing
(or keeps killing its worker) is moved to ``keys.scoring_dead()`` after ``max_attempts`` deliveries, counted
from the group's own delivery counter (``XPENDING``), so one poison job cannot loop forever.

``task.score`` may be CPU-heavy (a reference model, an image metric): it runs in a thread, or in a process
pool when configured, never on the event loop that also serves HTTP and reads the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from functools import lru_cache
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError, ResponseError

from inference_subnet.protocol.task import Task, load_task
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.managing.score_math import Kind, Sample
from inference_subnet.validator.service import Check, Service, cancel_all

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 100_000
"""Approximate cap of the job stream: a long outage of every worker must not exhaust Redis memory."""
DEAD_MAXLEN = 10_000
RECORD_BATCH = 16
"""Samples of one job recorded concurrently (each is a short Redis round trip)."""


class JobResponse(BaseModel):
    """One miner's answer inside a scoring job."""

    identity: str
    uid: int
    response: str | None = Field(None, description="The miner's response JSON; None when it gave none.")
    latency: float = 0.0
    outcome: str = "ok"
    """The call's outcome (``ok``, ``timeout``, ``error``, ``invalid``, ...); anything but ``ok`` scores 0."""


class ScoringJob(BaseModel):
    """Everything a worker needs to score one request's responses, without calling anyone."""

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    task: str
    kind: Kind
    request: str
    responses: list[JobResponse]
    created_at: float = Field(default_factory=time.time)


class ScoreRecorder(Protocol):
    """The score book as the workers use it (``managing.ScoreBook``)."""

    async def record(self, identity: str, task: str, sample: Sample, job_id: str) -> bool: ...


async def enqueue(
    redis: RedisClient, keys: Keys, job: ScoringJob, *, maxlen: int | None = DEFAULT_MAXLEN
) -> str:
    """Add a job to the scoring stream; returns its stream id. Used by the orchestrator and the gateway."""
    entry_id = await redis.xadd(
        keys.scoring_stream(), {"job": job.model_dump_json()}, maxlen=maxlen, approximate=True
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def ensure_group(redis: RedisClient, keys: Keys) -> None:
    """Create the consumer group (and the stream) if missing. From id 0: jobs enqueued before any worker
    started, or while Redis was restarting, are still scored."""
    try:
        await redis.xgroup_create(keys.scoring_stream(), keys.scoring_group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def score_job(task: Task, job: ScoringJob) -> list[Sample]:
    """The samples of one job: one per response, in order. Pure and synchronous (runs off the loop).

    A response that failed, timed out, or does not parse as the task's Response scores 0 (``ok=False``);
    the task's own scores are clamped into [0, 1] and a NaN counts as 0.
    """
    request = task.Request.model_validate_json(job.request)
    parsed: list[BaseModel | None] = []
    for r in job.responses:
        value: BaseModel | None = None
        if r.outcome == "ok" and r.response is not None:
            try:
                value = task.Response.model_validate_json(r.response)
            except ValidationError:
                value = None
        parsed.append(value)
    latencies = [_latency(r.latency) for r in job.responses]
    qualities = list(task.score(request, parsed, latencies)) if job.responses else []
    if len(qualities) != len(job.responses):
        raise ValueError(f"task {task.name} returned {len(qualities)} scores for {len(job.responses)} responses")
    samples = []
    for value, quality, latency in zip(parsed, qualities, latencies):
        if value is None:
            samples.append(Sample.failure(job.kind, latency, job.created_at))
        else:
            q = float(quality)
            q = 0.0 if math.isnan(q) else min(1.0, max(0.0, q))
            samples.append(Sample(score=q, kind=job.kind, latency=latency, ok=True, ts=job.created_at))
    return samples


def _latency(value: float) -> float:
    return value if math.isfinite(value) and value >= 0 else 0.0


@lru_cache(maxsize=64)
def _task_in_child(ref: str) -> Task:
    return load_task(ref)


def _score_in_child(task_ref: str, job_json: str) -> list[str]:
    """Process-pool entry point: rebuild the task by reference, score, return samples as JSON."""
    task = _task_in_child(task_ref)
    return [s.to_json() for s in score_job(task, ScoringJob.model_validate_json(job_json))]


def task_ref(task: Task) -> str:
    """An import path that rebuilds ``task`` in another process."""
    cls = type(task)
    return f"{cls.__module__}:{cls.__qualname__}"


async def queue_state(redis: RedisClient, keys: Keys) -> dict[str, int]:
    """The scoring backlog: ``depth`` jobs in the stream (new and delivered, not yet acknowledged),
    ``pending`` of them delivered to a worker, ``dead`` set aside. Two round trips, any process can ask."""
    stream = keys.scoring_stream()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xlen(keys.scoring_dead())
        depth, dead = await pipe.execute()
    try:
        summary = await redis.xpending(stream, keys.scoring_group)
        pending = int(summary["pending"])
    except ResponseError:  # no group yet: no worker ever started
        pending = 0
    return {"depth": int(depth), "pending": pending, "dead": int(dead)}


class ScoringWorkers(Service):
    """``workers`` consumers of the scoring group in this process, plus the queue-depth gauges."""

    name = "scoring"

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        tasks: Mapping[str, Task],
        scores: ScoreRecorder,
        *,
        workers: int = 2,
        consumer_prefix: str | None = None,
        claim_idle: float = 30.0,
        max_attempts: int = 5,
        read_batch: int = 16,
        block_seconds: float = 1.0,
        executor: Executor | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.tasks = dict(tasks)
        self.scores = scores
        self.workers = workers
        self.consumer_prefix = consumer_prefix or uuid.uuid4().hex[:8]
        self.claim_idle = claim_idle
        self.max_attempts = max_attempts
        self.read_batch = read_batch
        self.block_ms = max(1, int(block_seconds * 1000))
        self.executor = executor
        self.processed = 0
        self.first_failure: str | None = None
        """The first scoring failure of this process (``task: Exception: reason``), for views that run in the
        same process (``localnet`` names a scorer that raised)."""
        """Jobs whose result was applied (or found already applied) and acknowledged by this process."""
        self._progress = asyncio.Condition()

    def consumer(self, index: int) -> str:
        return f"{self.consumer_prefix}-{index}"

    async def run(self) -> None:
        await self._ensure_group_retrying()
        tasks = [asyncio.create_task(self.work(self.consumer(i)), name=f"scoring:{self.consumer(i)}")
                 for i in range(self.workers)]
        tasks.append(asyncio.create_task(self._gauges(), name="scoring:gauges"))
        try:
            await asyncio.gather(*tasks)
        finally:
            # Not a TaskGroup: it cancels its children once, and a Redis client that swallows that one
            # cancellation (a known redis-py race) would keep the group, and shutdown, waiting forever.
            await cancel_all(tasks, timeout=10)

    async def _ensure_group_retrying(self) -> None:
        delay = 0.2
        while True:
            try:
                await ensure_group(self.redis, self.keys)
                return
            except (RedisError, OSError) as exc:
                log.warning("cannot create the scoring group yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def work(self, consumer: str) -> None:
        """One consumer: take over stale jobs, else read new ones; survive Redis outages."""
        delay = 0.2
        next_claim = 0.0
        while True:
            try:
                entries: list[tuple[bytes, dict[bytes, bytes]]] = []
                if time.monotonic() >= next_claim:
                    entries = await self.claim_stale(consumer)
                    next_claim = time.monotonic() + max(0.05, self.claim_idle / 2)
                if not entries:
                    entries = await self.read_new(consumer)
                for entry_id, fields in entries:
                    await self.process(consumer, entry_id, fields)
                delay = 0.2
            except ResponseError as exc:
                # Redis lost the group (a restart without persistence), or the stream went while a read
                # was blocked on it (Redis 7 answers that read with UNBLOCKED): recreate, go on.
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                    await self._ensure_group_retrying()
                    continue
                raise
            except (RedisError, OSError) as exc:
                metrics.service_errors.labels(self.name, type(exc).__name__).inc()
                log.warning("scoring worker %s: Redis unavailable (%s); retrying in %.1fs", consumer, exc, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def read_new(self, consumer: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        found = await self.redis.xreadgroup(
            self.keys.scoring_group, consumer, {self.keys.scoring_stream(): ">"},
            count=self.read_batch, block=self.block_ms,
        )
        if not found:
            return []
        return [(i, f) for i, f in found[0][1] if f is not None]

    async def claim_stale(self, consumer: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Jobs another (dead or stuck) consumer held for longer than ``claim_idle``."""
        reply = await self.redis.xautoclaim(
            self.keys.scoring_stream(), self.keys.scoring_group, consumer,
            min_idle_time=int(self.claim_idle * 1000), start_id="0-0", count=self.read_batch,
        )
        claimed = [(i, f) for i, f in reply[1] if f is not None]
        if claimed:
            metrics.scoring_claimed.inc(len(claimed))
            log.info("worker %s took over %d stale scoring job(s)", consumer, len(claimed))
        return claimed

    async def deliveries(self, entry_id: bytes | str) -> int:
        """How many times the group delivered this entry (1 on first read)."""
        info = await self.redis.xpending_range(
            self.keys.scoring_stream(), self.keys.scoring_group, min=entry_id, max=entry_id, count=1
        )
        return int(info[0]["times_delivered"]) if info else 1

    async def process(self, consumer: str, entry_id: bytes, fields: Mapping[bytes, bytes]) -> str:
        """Score one entry and acknowledge it; returns the outcome (scored, duplicate, dead, failed)."""
        delivered = await self.deliveries(entry_id)
        raw = fields.get(b"job", b"")
        if delivered > self.max_attempts:
            await self.dead_letter(entry_id, raw, f"delivered {delivered} times without success")
            return "dead"
        try:
            job = ScoringJob.model_validate_json(raw)
        except ValidationError as exc:
            await self.dead_letter(entry_id, raw, f"not a scoring job: {exc.errors()[0]['msg']}")
            return "dead"
        task = self.tasks.get(job.task)
        if task is None:
            await self.dead_letter(entry_id, raw, f"task {job.task!r} is not scored by this validator")
            return "dead"
        started = time.perf_counter()
        try:
            samples = await self._score(task, job)
            # A few at a time: each record is idempotent on its own (per miner and job id), so order and
            # partial progress do not matter (a retry applies what is missing), and a bounded batch never
            # exhausts the Redis connection pool that the other services of the process share.
            pairs = list(zip(job.responses, samples))
            recorded: list[bool] = []
            for start in range(0, len(pairs), RECORD_BATCH):
                recorded += await asyncio.gather(*(
                    self.scores.record(response.identity, job.task, sample, job.job_id)
                    for response, sample in pairs[start:start + RECORD_BATCH]
                ))
            applied = 0
            for sample, new in zip(samples, recorded):
                if new:
                    applied += 1
                    metrics.scores.labels(job.task, job.kind).observe(sample.score)
        except (RedisError, OSError):
            raise  # Redis trouble is not the job's fault: the worker loop backs off, the job stays pending
        except Exception as exc:
            metrics.scoring_jobs.labels("failed").inc()
            if self.first_failure is None:
                reason = str(exc).strip().splitlines()
                self.first_failure = f"{job.task}: {type(exc).__name__}" + (f": {reason[0]}" if reason else "")
            log.warning("scoring job %s failed (delivery %d of %d): %s: %s", job.job_id, delivered,
                        self.max_attempts, type(exc).__name__, exc, extra={"job_id": job.job_id})
            if delivered >= self.max_attempts:
                await self.dead_letter(entry_id, raw, f"{type(exc).__name__}: {exc}")
                return "dead"
            return "failed"  # stays pending; claimed again after claim_idle
        await self.ack(entry_id)
        outcome = "scored" if applied or not job.responses else "duplicate"
        metrics.scoring_jobs.labels(outcome).inc()
        metrics.scoring_job_seconds.labels(job.task).observe(time.perf_counter() - started)
        self.processed += 1
        async with self._progress:
            self._progress.notify_all()
        return outcome

    async def wait_processed(self, count: int, timeout: float) -> bool:
        """Wait until this process has applied ``count`` jobs; False on timeout (tests, benchmarks)."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self.processed >= count), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def _score(self, task: Task, job: ScoringJob) -> list[Sample]:
        if self.executor is None:
            return await asyncio.to_thread(score_job, task, job)
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(self.executor, _score_in_child, task_ref(task), job.model_dump_json())
        return [Sample.from_json(s) for s in raw]

    async def ack(self, entry_id: bytes | str) -> None:
        """Acknowledge and delete: the stream only ever holds work still to do."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.scoring_stream(), self.keys.scoring_group, entry_id)
            pipe.xdel(self.keys.scoring_stream(), entry_id)
            await pipe.execute()

    async def dead_letter(self, entry_id: bytes | str, raw: bytes, reason: str) -> None:
        """Move a job aside for an operator to look at; it is never retried automatically."""
        await self.redis.xadd(
            self.keys.scoring_dead(),
            {"job": raw, "reason": reason, "entry_id": entry_id, "ts": repr(time.time())},
            maxlen=DEAD_MAXLEN, approximate=True,
        )
        await self.ack(entry_id)
        metrics.scoring_jobs.labels("dead").inc()
        log.error("scoring job %s set aside: %s", _text(entry_id), reason)

    async def queue_state(self) -> dict[str, int]:
        """Jobs in the stream (new + pending), pending, and dead."""
        return await queue_state(self.redis, self.keys)

    async def _gauges(self) -> None:
        while True:
            try:
                state = await self.queue_state()
                metrics.scoring_queue_depth.set(state["depth"])
                metrics.scoring_pending.set(state["pending"])
                metrics.scoring_dead.set(state["dead"])
            except (RedisError, OSError):
                pass
            await asyncio.sleep(5.0)

    async def checks(self) -> list[Check]:
        state = await self.queue_state()
        return [Check("scoring", True,
                      f"{state['depth']} queued, {state['pending']} pending, {state['dead']} set aside")]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def job_from_results(
    task: str, kind: Kind, request: BaseModel, responses: Sequence[JobResponse], job_id: str | None = None
) -> ScoringJob:
    """A job for ``responses`` to ``request`` (the admitted ones: dropout happens before enqueueing)."""
    extra: dict[str, Any] = {"job_id": job_id} if job_id else {}
    return ScoringJob(task=task, kind=kind, request=request.model_dump_json(), responses=list(responses), **extra)


def dumps_dead(entry: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A dead-letter entry as plain JSON-able data (for the CLI and tests)."""
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in entry.items()}
    if "job" in out:
        try:
            out["job"] = json.loads(out["job"])
        except ValueError:
            pass
    return out
