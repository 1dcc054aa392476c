"""Scoring jobs through the Redis Stream consumer group: real Redis, real ScoreBook, real workers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
from pydantic import BaseModel

from inference_subnet.settings import ScoringSettings
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask, solve
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.scoring import (
    JobResponse,
    ScoringJob,
    ScoringWorkers,
    enqueue,
    ensure_group,
    score_job,
)

ARITH = ArithmeticTask()
REQUEST = ArithmeticRequest(op="add", a=2, b=3)


class ExplodingTask(ArithmeticTask):
    """A task whose scorer always fails: its jobs must end up set aside, not loop forever."""

    name = "exploding"

    def score(self, request: BaseModel, responses: Sequence[BaseModel | None], timings: Sequence[float]) -> list[float]:
        raise RuntimeError("scorer bug")


class GatedTask(ArithmeticTask):
    """A task whose scorer waits for a gate: lets a test hold a job mid-score."""

    name = "gated"
    entered = threading.Event()
    gate = threading.Event()

    def score(self, request: BaseModel, responses: Sequence[BaseModel | None], timings: Sequence[float]) -> list[float]:
        type(self).entered.set()
        if not type(self).gate.wait(timeout=20):
            raise TimeoutError("gate never opened")
        return super().score(request, responses, timings)


def job(task: str = "arithmetic", n: int = 3, **kw: object) -> ScoringJob:
    right = ArithmeticResponse(result=solve(REQUEST)).model_dump_json()
    responses = [JobResponse(identity=f"hk{i}@1", uid=i, response=right, latency=0.1) for i in range(n)]
    return ScoringJob(task=task, kind="synthetic", request=REQUEST.model_dump_json(), responses=responses, **kw)


def workers(redis, keys, book, **kw: object) -> ScoringWorkers:
    tasks = {t.name: t for t in (ARITH, ExplodingTask(), GatedTask())}
    options: dict[str, object] = {"workers": 2, "claim_idle": 0.3, "max_attempts": 3, "block_seconds": 0.05}
    options.update(kw)
    return ScoringWorkers(redis, keys, tasks, book, **options)  # type: ignore[arg-type]


async def drain(w: ScoringWorkers, consumer: str = "c") -> list[str]:
    """Process everything readable now (new entries, then stale ones), as one worker would."""
    outcomes: list[str] = []
    while True:
        entries = await w.read_new(consumer) or await w.claim_stale(consumer)
        if not entries:
            return outcomes
        for entry_id, fields in entries:
            outcomes.append(await w.process(consumer, entry_id, fields))


def test_score_job_zero_for_failures_and_garbage() -> None:
    right = ArithmeticResponse(result=5).model_dump_json()
    wrong = ArithmeticResponse(result=6).model_dump_json()
    j = ScoringJob(task="arithmetic", kind="synthetic", request=REQUEST.model_dump_json(), responses=[
        JobResponse(identity="a@1", uid=0, response=right, latency=0.2),
        JobResponse(identity="b@1", uid=1, response=wrong, latency=0.2),
        JobResponse(identity="c@1", uid=2, response='{"result": "not a number"}', latency=0.2),
        JobResponse(identity="d@1", uid=3, response=None, latency=2.0, outcome="timeout"),
        JobResponse(identity="e@1", uid=4, response=right, latency=float("nan"), outcome="error"),
    ])
    samples = score_job(ARITH, j)
    assert [s.score for s in samples] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [s.ok for s in samples] == [True, True, False, False, False]
    assert samples[3].latency == 2.0 and samples[4].latency == 0.0


async def test_job_scored_once_and_removed_from_stream(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    w = workers(redis, keys, book)
    await ensure_group(redis, keys)
    j = job()
    await enqueue(redis, keys, j)
    # at-least-once delivery: the same job arriving twice must be applied once
    await enqueue(redis, keys, j)
    outcomes = await drain(w)
    assert outcomes == ["scored", "duplicate"]
    for i in range(3):
        history = await book.history(f"hk{i}@1", "arithmetic")
        assert len(history) == 1 and history[0].score == 1.0 and history[0].ok
    state = await w.queue_state()
    assert state == {"depth": 0, "pending": 0, "dead": 0}


async def test_unparseable_and_unknown_jobs_set_aside_at_once(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    w = workers(redis, keys, book)
    await ensure_group(redis, keys)
    await redis.xadd(keys.scoring_stream(), {"job": b"{not json"})
    await enqueue(redis, keys, job(task="unknown-task"))
    assert await drain(w) == ["dead", "dead"]
    dead = await redis.xrange(keys.scoring_dead())
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert "not a scoring job" in reasons[0]
    assert "unknown-task" in reasons[1]
    assert (await w.queue_state())["pending"] == 0


async def test_failing_job_retried_then_moved_aside_after_max_attempts(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    w = workers(redis, keys, book, claim_idle=0.05, max_attempts=3)
    await ensure_group(redis, keys)
    await enqueue(redis, keys, job(task="exploding"))
    outcomes: list[str] = []
    for _ in range(50):  # bounded: 3 attempts need 2 claims after the idle time
        outcomes += await drain(w)
        if "dead" in outcomes:
            break
        await asyncio.sleep(0.06)  # the idle time that makes the pending job claimable again
    assert outcomes == ["failed", "failed", "dead"]
    dead = await redis.xrange(keys.scoring_dead())
    assert len(dead) == 1 and b"scorer bug" in dead[0][1][b"reason"]
    assert await w.queue_state() == {"depth": 0, "pending": 0, "dead": 1}


async def test_read_but_unacked_job_is_claimed_and_scored_once(redis, keys) -> None:
    """A worker that read a job and was cancelled mid-score: another takes it over after the idle time."""
    GatedTask.entered.clear()
    GatedTask.gate.clear()
    book = ScoreBook(redis, keys, ScoringSettings())
    first = workers(redis, keys, book, workers=1, consumer_prefix="first", claim_idle=0.3)
    await ensure_group(redis, keys)
    j = job(task="gated", n=4)
    await enqueue(redis, keys, j)
    holder = asyncio.create_task(first.work("first-0"))
    assert await asyncio.to_thread(GatedTask.entered.wait, 10)
    holder.cancel()  # the worker dies with the job read and not acknowledged
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert (await first.queue_state())["pending"] == 1
    GatedTask.gate.set()  # the abandoned scoring thread finishes, but nobody records its result
    second = workers(redis, keys, book, workers=1, consumer_prefix="second", claim_idle=0.3)
    runner = asyncio.create_task(second.run())
    try:
        assert await second.wait_processed(1, timeout=10)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert second.processed == 1
    for i in range(4):
        assert len(await book.history(f"hk{i}@1", "gated")) == 1
    assert await second.queue_state() == {"depth": 0, "pending": 0, "dead": 0}


async def test_many_workers_score_every_job_exactly_once(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings(history_size=1000))
    w = workers(redis, keys, book, workers=4, read_batch=3)
    await ensure_group(redis, keys)
    jobs = [job(n=2) for _ in range(60)]
    for j in jobs:
        await enqueue(redis, keys, j)
    runner = asyncio.create_task(w.run())
    try:
        assert await w.wait_processed(len(jobs), timeout=20)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert w.processed == len(jobs)
    for i in range(2):
        assert len(await book.history(f"hk{i}@1", "arithmetic")) == len(jobs)
    assert (await w.queue_state())["depth"] == 0


async def test_process_pool_scoring(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        w = workers(redis, keys, book, executor=pool)
        await ensure_group(redis, keys)
        wrong = job(n=1)
        wrong.responses[0].response = ArithmeticResponse(result=0).model_dump_json()
        await enqueue(redis, keys, job(n=2))
        await enqueue(redis, keys, wrong)
        assert await drain(w) == ["scored", "scored"]
    scores = [s.score for s in await book.history("hk0@1", "arithmetic")]
    assert scores == [0.0, 1.0]  # newest first


async def test_worker_recreates_a_lost_group(redis, keys) -> None:
    """Redis restarted without persistence: the group is gone; the worker recreates it and goes on."""
    book = ScoreBook(redis, keys, ScoringSettings())
    w = workers(redis, keys, book, workers=1)
    runner = asyncio.create_task(w.run())
    try:
        await enqueue(redis, keys, job(n=1))
        assert await w.wait_processed(1, timeout=10)
        await redis.delete(keys.scoring_stream())  # the stream and its group vanish
        await enqueue(redis, keys, job(n=1))
        assert await w.wait_processed(2, timeout=10)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert w.processed == 2
    assert len(await book.history("hk0@1", "arithmetic")) == 2


async def test_dead_entries_keep_the_job(redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    w = workers(redis, keys, book)
    await ensure_group(redis, keys)
    j = job(task="unknown-task")
    await enqueue(redis, keys, j)
    await drain(w)
    (_, fields), = await redis.xrange(keys.scoring_dead())
    assert json.loads(fields[b"job"])["job_id"] == j.job_id
