"""The synthetic loop end to end in one process: in-memory chain, real Redis, real miner apps on 127.0.0.1
(honest and faulty), the sidecar, the orchestrator, the scoring workers and the weight setter."""

from __future__ import annotations

import time
from typing import Any

import pytest

from inference_subnet.protocol.task import Handler
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.canaries import CanaryBook
from inference_subnet.validator.orchestrator import Orchestrator
from inference_subnet.validator.scoring import ScoringJob, ScoringWorkers
from subnet_helpers import NETUID, TASK, LocalSubnet, running

BEHAVIOURS = ["honest", "wrong", "slow", "garbage", "flaky"]


async def test_round_challenges_every_miner_and_scores_rank_them(redis, keys) -> None:
    async with LocalSubnet(redis, keys, BEHAVIOURS, down=1) as net:
        parts = net.validator_parts()
        orch: Orchestrator = parts["orchestrator"]
        workers: ScoringWorkers = parts["workers"]
        started = time.perf_counter()
        report = await orch.round()
        elapsed = time.perf_counter() - started
        assert report.candidates == 6 and report.granted == 6
        by_outcome = report.outcomes
        assert by_outcome.get("timeout") == 1 and by_outcome.get("invalid") == 1
        assert by_outcome.get("connect_error") == 1
        # the round ended at its 0.5 s deadline: waiting for the slow miner would take its full 3 s
        assert elapsed < ArithmeticTask.timeout * 1.5, elapsed
        assert report.admitted == 6 and report.job_id is not None and report.jobs == 6
        jobs = report.jobs
        for _ in range(5):
            jobs += (await orch.round()).jobs
        async with running(workers):
            assert await workers.wait_processed(jobs, timeout=20)
        metagraph = await net.metagraph()
        identity = {b: metagraph.by_uid[net.uid(b)].identity for b in BEHAVIOURS + ["down"]}
        aggregates = await parts["scores"].aggregates(list(identity.values()), {TASK.name: TASK.timeout})
        score = {b: aggregates[identity[b]] for b in identity}
        assert score["honest"] > 0.7
        assert score["honest"] > score["flaky"] > score["wrong"] == 0  # a wrong answer earns no speed credit
        assert score["slow"] == score["garbage"] == score["down"] == 0.0
        attempt = await parts["weights"].tick()
        assert attempt is not None and attempt.outcome == "success"
        row = net.chain.weights(NETUID)[0]
        assert row[net.uid("honest")] == max(row.values())
        assert row.get(net.uid("slow"), 0) == row.get(net.uid("garbage"), 0) == 0


async def test_each_miner_gets_its_own_challenge_planted_as_a_canary(redis, keys) -> None:
    """One round sends every miner a challenge of its own (one scoring job each), and plants each: the
    planted digest names the miner it went to. A miner caught forwarding one has its next answers scored 0."""
    async with LocalSubnet(redis, keys, ["honest", "honest", "honest", "wrong"]) as net:
        parts = net.validator_parts()
        orch: Orchestrator = parts["orchestrator"]
        canaries: CanaryBook = parts["canaries"]
        report = await orch.round()
        assert report.granted == 4 and report.jobs == 4
        entries = await redis.xrange(keys.scoring_stream())
        jobs = [ScoringJob.model_validate_json(fields[b"job"]) for _, fields in entries]
        assert [len(j.responses) for j in jobs] == [1, 1, 1, 1]
        assert len({j.request for j in jobs}) == 4  # four distinct challenges
        assert len({j.responses[0].identity for j in jobs}) == 4
        for job in jobs:  # a forward of this challenge to this validator's gateway names its miner
            request = TASK.Request.model_validate_json(job.request)
            assert await canaries.check(TASK.name, request) == job.responses[0].identity
        assert await canaries.caught([j.responses[0].identity for j in jobs]) == {
            j.responses[0].identity for j in jobs
        }
        nxt = await orch.round()
        assert nxt.caught == 4 and nxt.outcomes == {"canary": 4}


async def test_quota_bounds_synthetic_traffic_and_sampling_covers_every_miner(redis, keys) -> None:
    # a burst of the whole epoch: the synthetic limit alone bounds these back-to-back rounds
    quotas = QuotaSettings(synthetic_fraction=0.3, min_share=0.01, burst_seconds=4320.0)
    async with LocalSubnet(redis, keys, ["honest"] * 6, capacity=10, quotas=quotas) as net:
        parts = net.validator_parts(miners_per_round=4)
        orch: Orchestrator = parts["orchestrator"]
        reports = [await orch.round() for _ in range(6)]
        # 6 miners x 3 synthetic requests (30% of 10) = 18 calls, 4 per round: coverage first, then none
        assert [r.granted for r in reports] == [4, 4, 4, 4, 2, 0]
        metagraph = await net.metagraph()
        identities = [n.identity for n in metagraph.neurons if n.uid > 0]
        status = await parts["quotas"].status(identities, TASK.name)
        assert all(s.used_synthetic == 3 and s.synthetic_limit == 3 for s in status.values())
        assert orch.calls == {i: 3 for i in identities}  # every call made, counted per miner
        assert reports[-1].sampled == 0
        assert (await parts["quotas"].capacities(identities[0])) == {TASK.name: 10}


async def test_bounded_concurrency(redis, keys) -> None:
    inflight = 0
    peak = 0

    def wrap(handler: Handler) -> Handler:
        async def counted(request: Any) -> Any:
            nonlocal inflight, peak
            inflight += 1
            peak = max(peak, inflight)
            try:
                return await handler(request)
            finally:
                inflight -= 1
        return counted

    async with LocalSubnet(redis, keys, ["honest"] * 8, delay=0.1, handler_wrapper=wrap) as net:
        orch: Orchestrator = net.validator_parts(max_concurrency=3)["orchestrator"]
        report = await orch.round()
        assert report.ok == 8
        assert peak == 3
        assert report.call_seconds >= 0.3  # 8 calls of 0.1 s, 3 at a time: at least 3 waves


async def test_dropout_caps_scored_responses(redis, keys) -> None:
    scoring = ScoringSettings(prior_strength=0, max_scored_per_period=2, dropout_period_seconds=3600)
    async with LocalSubnet(redis, keys, ["honest"], scoring=scoring) as net:
        parts = net.validator_parts()
        reports = [await parts["orchestrator"].round() for _ in range(5)]
        assert [r.admitted for r in reports] == [1, 1, 0, 0, 0]
        assert sum(r.ok for r in reports) == 5
        identity = (await net.metagraph()).by_uid[1].identity
        assert await parts["scores"].dropout_counts(identity, TASK.name) == (2, 3)


async def test_loop_keeps_going_and_capacity_refresh(redis, keys) -> None:
    async with LocalSubnet(redis, keys, ["honest", "slow"]) as net:
        parts = net.validator_parts()
        orch: Orchestrator = parts["orchestrator"]
        async with running(orch):
            assert await orch.wait_rounds(3, timeout=15)  # back to back, each bounded by the slow miner
            assert orch.last_round is not None and orch.last_round.outcomes == {"ok": 1, "timeout": 1}
            assert all(c.ok for c in await orch.checks())
        metagraph = await net.metagraph()
        caps = await parts["quotas"].capacities(metagraph.by_uid[1].identity)
        assert caps == {TASK.name: 1000}
        # the burst the miner paces with, from its /capacity: the validator paces no faster at once
        status = (await parts["quotas"].status([metagraph.by_uid[1].identity], TASK.name))[metagraph.by_uid[1].identity]
        assert status.miner_burst_seconds == net.settings.validator.quotas.burst_seconds
        # Synthetic answers received OK are the miners' verified volume; timeouts are none.
        ids = [metagraph.by_uid[1].identity, metagraph.by_uid[2].identity]
        volume = (await parts["volumes"].volumes(ids, [TASK.name]))[TASK.name]
        # (a round stopped by the loop's end may have called without counting yet: at most every call counts)
        assert 0 < volume[ids[0]] <= orch.calls[ids[0]] and volume[ids[1]] == 0


@pytest.fixture(autouse=True)
def _quiet_uvicorn() -> None:
    import logging

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
