"""Scale-out proof: several gateway processes and several scoring-worker processes share one Redis (a single
node, then a 3-primary cluster), under a bounded load from another process on 127.0.0.1.

What must hold however the processes interleave:
- quotas are exact: the organic requests granted never exceed the validator's share of each miner (overshoot
  0), every request beyond it is refused, and the validator's counter of each miner equals what that miner
  counted on its side and what the load saw it serve;
- each score is applied exactly once: one sample per scoring job, although jobs are redelivered (a worker is
  killed after applying a job and before acknowledging it, holding a batch of unprocessed ones).

The figures (requests, granted, refused, overshoot, jobs, applied, duplicates) are printed for each backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from conftest import free_port
from test_gateway_helpers import LocalSubnet, fresh_database, seed_evidence, sqlite_url, wait_until_serving

from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, connect, embedded_url, is_cluster_url
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.managing import QuotaBook, ScoreBook

TASK = "test_scale_out:PatientArithmetic"
MINERS = 3
GATEWAYS = 3
SURVIVORS = 2
"""Scoring-worker processes that outlive the one killed mid-batch (three worker processes in all)."""
CAPACITY = 30
"""This validator's share of each miner per epoch: the load asks for far more than 3 x 30."""
SEEDED = 5
"""Synthetic samples each miner has before the run: organic routing needs evidence."""
REQUESTS = 240
CONCURRENCY = 24
LOAD_SECONDS = 90.0
"""Time cap of the load process (a guard: the run normally takes a few seconds)."""
EPOCH_SECONDS = 10_000_000.0
"""Long quota epochs, so the run never straddles a boundary (checked, not assumed)."""
APPLIED_BEFORE_DYING = 3


class PatientArithmetic(ArithmeticTask):
    """Arithmetic with a timeout that a CPU shared by a dozen processes cannot miss: a timed-out call would
    count against quota without being served, and this test compares the two exactly."""

    name = "patient_arithmetic"
    timeout = 30.0


LOAD = textwrap.dedent("""
    import asyncio, collections, json, sys, time
    import httpx

    urls, key, total, concurrency, cap = json.loads(sys.argv[1]), sys.argv[2], *map(float, sys.argv[3:6])
    total, concurrency = int(total), int(concurrency)

    async def main():
        statuses, by_uid, errors = collections.Counter(), collections.Counter(), collections.Counter()
        wrong, sent = 0, 0
        deadline = time.monotonic() + cap
        started = time.monotonic()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        auth = {"Authorization": "Bearer " + key}
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=auth) as http:
            async def worker():
                nonlocal wrong, sent
                while sent < total and time.monotonic() < deadline:
                    i = sent
                    sent += 1
                    try:
                        r = await http.post(urls[i % len(urls)] + "/v1/tasks/patient_arithmetic",
                                            json={"op": "add", "a": i, "b": 1})
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] += 1
                        continue
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        by_uid[r.headers["x-miner-uid"]] += 1
                        wrong += r.json() != {"result": i + 1}
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(json.dumps({"sent": sent, "statuses": statuses, "by_uid": by_uid, "errors": errors,
                          "wrong": wrong, "seconds": time.monotonic() - started}))

    asyncio.run(main())
""")

WORKER = textwrap.dedent('''
    import asyncio, os, signal, sys
    from inference_subnet.settings import ScoringSettings
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import connect
    from inference_subnet.validator.managing.scores import ScoreBook
    from inference_subnet.validator.scoring import ScoringWorkers
    from test_scale_out import PatientArithmetic, outcomes_key

    url, subnet, role, mode, name, dying_after = sys.argv[1:7]

    class Counted(ScoringWorkers):
        """Counts each outcome in Redis, so the test sees redeliveries across processes."""
        async def process(self, consumer, entry_id, fields):
            outcome = await super().process(consumer, entry_id, fields)
            await self.redis.hincrby(outcomes_key(self.keys), outcome, 1)
            return outcome

    class DiesAfterApplying:
        """Applies samples, then kills its own process right after the Nth one: that job is applied but
        never acknowledged, and the rest of the batch it read is still pending."""
        def __init__(self, book, after):
            self.book, self.after, self.applied = book, after, 0
        async def record(self, identity, task, sample, job_id):
            new = await self.book.record(identity, task, sample, job_id)
            self.applied += new
            if self.applied >= self.after:
                os.kill(os.getpid(), signal.SIGKILL)
            return new

    async def main():
        redis = connect(url)
        keys = Keys(subnet, 1, role)
        book = ScoreBook(redis, keys, ScoringSettings(history_size=10_000))
        if mode == "doomed":
            workers = Counted(redis, keys, {"patient_arithmetic": PatientArithmetic()},
                              DiesAfterApplying(book, int(dying_after)), workers=1, consumer_prefix=name,
                              claim_idle=3600, block_seconds=0.2)
        else:
            workers = Counted(redis, keys, {"patient_arithmetic": PatientArithmetic()}, book, workers=2,
                              consumer_prefix=name, claim_idle=2.0, block_seconds=0.2)
        await workers.run()

    asyncio.run(main())
''')


def outcomes_key(keys: Keys) -> str:
    """Test-only hash of scoring outcomes (scored, duplicate, ...) counted by every worker process."""
    return f"{keys.prefix}:test:outcomes"


@dataclass
class Figures:
    backend: str
    requests: int
    granted: int
    refused: int
    quota: int
    overshoot: int
    jobs: int
    applied: int
    duplicates: int
    redelivered: int
    seconds: float

    def line(self) -> str:
        return "  ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(self).items()
        )


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll an async predicate until it holds; a bounded wait that names what never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():  # type: ignore[misc]
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s")
        await asyncio.sleep(0.1)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


async def scale_out(backend: str, url: str, root: Path) -> Figures:
    subnet_name = f"so{free_port()}"
    net = LocalSubnet(root, url)
    net.setup(["honest"] * MINERS, tasks=(TASK,))
    common = {
        "ISN_SUBNET_NAME": subnet_name,
        "ISN_VALIDATOR__QUOTAS__EPOCH_SECONDS": str(EPOCH_SECONDS),
        # a share as a plain per-epoch quota (a burst of the whole epoch, nothing to lend)
        "ISN_VALIDATOR__QUOTAS__BURST_SECONDS": str(EPOCH_SECONDS),
        "ISN_VALIDATOR__QUOTAS__BORROW_CEILING": "0",
    }
    validator = net.validator.ss58_address
    keys = Keys(subnet_name, net.netuid, validator)
    redis: RedisClient = connect(url)
    db_url = sqlite_url(root)
    db = await fresh_database(db_url)
    _, api_key = await ApiKeyStore(db).create("load", rate_per_minute=1_000_000, max_concurrent=1_000)
    await db.aclose()

    # What the managing service writes: this validator's share of each miner (it holds all the stake).
    quota_settings = QuotaSettings(epoch_seconds=EPOCH_SECONDS, min_share=0.0, burst_seconds=EPOCH_SECONDS,
                                   borrow_ceiling=0.0)
    book = QuotaBook(redis, keys, quota_settings)
    metagraph = net.metagraph()
    await book.set_stakes(metagraph, validator)
    identities = {m.uid: metagraph.by_uid[m.uid].identity for m in net.miners}
    for identity in identities.values():
        assert await book.set_capacity(identity, {"patient_arithmetic": CAPACITY}) == {
            "patient_arithmetic": CAPACITY
        }
    epoch = book.epoch()
    # The scoring service's earlier evidence, without which the gateways send users to no miner.
    await seed_evidence(ScoreBook(redis, keys, ScoringSettings(history_size=10_000)), list(identities.values()),
                        ["patient_arithmetic"], n=SEEDED)

    processes: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        # Miners accept far more than the validator's share: only the validator's quota limits the load.
        net.start_miners(**common, ISN_MINER__CAPACITY=json.dumps({"patient_arithmetic": 1_000_000}))
        processes += [m.process for m in net.miners if m.process is not None]
        ports = [free_port() for _ in range(GATEWAYS)]
        gateway_env = {
            **common,
            "DATABASE_URL": db_url,
            "ISN_GATEWAY__API_KEY_CACHE_SECONDS": "60",
            "ISN_GATEWAY__TOTAL_DEADLINE_SECONDS": "120",
            "ISN_VALIDATOR__SCORING__ORGANIC_SAMPLE_RATE": "1.0",
            "ISN_VALIDATOR__SCORING__MAX_SCORED_PER_PERIOD": "1000000",
        }
        gateways = [net.start_gateway(port, [TASK], **gateway_env) for port in ports]
        processes += gateways
        await net.wait_ready(timeout=60)
        for port, proc in zip(ports, gateways, strict=True):
            await asyncio.to_thread(
                wait_until_serving,
                f"http://127.0.0.1:{port}/health",
                proc,
                lambda port=port: net.process_output(port),
                60.0,
            )

        load = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LOAD,
                json.dumps([f"http://127.0.0.1:{p}" for p in ports]),
                api_key,
                str(REQUESTS),
                str(CONCURRENCY),
                str(LOAD_SECONDS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=net.env(),
        )
        processes.append(load)

        # The doomed worker starts once a batch of jobs is waiting: it reads a whole batch, applies a few
        # samples and dies holding the rest; only then do the survivors start (and claim its jobs).
        stream = keys.scoring_stream()
        await until(lambda: _stream_has(redis, stream, 16), 60, "16 scoring jobs were not enqueued")
        worker_args = [url, subnet_name, validator]
        doomed = subprocess.Popen(
            [sys.executable, "-c", WORKER, *worker_args, "doomed", "doomed", str(APPLIED_BEFORE_DYING)],
            env=net.env(),
        )
        processes.append(doomed)
        assert await asyncio.to_thread(doomed.wait, 60) == -signal.SIGKILL
        survivors = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, *worker_args, "survivor", f"survivor{i}", "0"], env=net.env()
            )
            for i in range(SURVIVORS)
        ]
        processes += survivors

        out, err = await asyncio.to_thread(load.communicate, timeout=LOAD_SECONDS + 30)
        assert load.returncode == 0, err.decode()[-2000:]
        result = json.loads(out)
        statuses = {int(k): v for k, v in result["statuses"].items()}
        granted = statuses.get(200, 0)
        await until(
            lambda: _drained(redis, keys, granted),
            90,
            f"the scoring stream was not drained after {granted} jobs",
        )
        seconds = time.monotonic() - started
    finally:
        stop(processes)

    assert book.epoch() == epoch, "the run straddled a quota epoch: the counts below would not be comparable"
    assert result["sent"] == REQUESTS and not result["errors"], result
    assert set(statuses) <= {200, 503}, f"only served or 'no miner with quota left' expected: {statuses}"
    assert result["wrong"] == 0

    # Quotas: the validator's counters, the miners' own counters and what the load saw served, per miner.
    status = await book.status(list(identities.values()), "patient_arithmetic")
    used = {uid: status[identity].used_total for uid, identity in identities.items()}
    served_seen = {uid: result["by_uid"].get(str(uid), 0) for uid in identities}
    served_counted = {}
    for m in net.miners:
        miner_keys = Keys(subnet_name, net.netuid, f"miner:{m.hotkey}")
        key = miner_keys.caller_quota_used(validator, "patient_arithmetic", int(time.time() // EPOCH_SECONDS))
        served_counted[m.uid] = int(await redis.hget(key, "g") or 0)
    quota = CAPACITY * MINERS
    overshoot = sum(max(0, u - CAPACITY) for u in used.values()) + max(0, granted - quota)

    # Scoring: every job applied once, whatever was redelivered.
    info = await redis.xinfo_stream(keys.scoring_stream())
    jobs = int(info["entries-added"])
    scores = ScoreBook(redis, keys, ScoringSettings(history_size=10_000))
    applied = sum([len(await scores.history(i, "patient_arithmetic")) for i in identities.values()])
    markers = [k async for k in redis.scan_iter(match=f"{keys.prefix}:applied:*", count=1000)]
    applied -= SEEDED * len(identities)  # the seeded evidence, with its markers
    markers = markers[SEEDED * len(identities):]
    outcomes = {k.decode(): int(v) for k, v in (await redis.hgetall(outcomes_key(keys))).items()}
    await redis.aclose()

    figures = Figures(
        backend=backend,
        requests=result["sent"],
        granted=granted,
        refused=statuses.get(503, 0),
        quota=quota,
        overshoot=overshoot,
        jobs=jobs,
        applied=applied,
        duplicates=applied - len(markers),
        redelivered=outcomes.get("duplicate", 0),
        seconds=seconds,
    )
    print(
        f"\nscale-out [{backend}]: {figures.line()}\n  per miner: used={used} counted_by_miner="
        f"{served_counted} seen_by_load={served_seen} outcomes={outcomes}"
    )
    print("\n".join(complaints(root)))

    assert figures.overshoot == 0
    assert granted == quota and figures.refused == REQUESTS - quota
    assert used == served_counted == served_seen == {uid: CAPACITY for uid in identities}
    assert jobs == granted  # every served request became one scoring job of one response
    assert figures.duplicates == 0 and applied == jobs == len(markers)
    assert figures.redelivered >= 1, f"the killed worker's applied job was never redelivered: {outcomes}"
    assert outcomes.get("scored", 0) + outcomes.get("duplicate", 0) >= jobs and "dead" not in outcomes
    return figures


def complaints(root: Path) -> list[str]:
    """Warnings and errors the miner and gateway processes logged (shown when an assertion fails)."""
    lines = []
    for log in sorted(root.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Error")):
                lines.append(f"{log.name}: {line[:300]}")
    return lines


async def _stream_has(redis: RedisClient, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) >= n


async def _drained(redis: RedisClient, keys: Keys, jobs: int) -> bool:
    stream = keys.scoring_stream()
    info = await redis.xinfo_stream(stream)
    pending = await redis.xpending(stream, keys.scoring_group)
    return int(info["entries-added"]) >= jobs and int(info["length"]) == 0 and int(pending["pending"]) == 0


@pytest.mark.parametrize("backend", ["one node", "3-primary cluster"])
async def test_gateways_and_workers_scale_out_exactly(
    backend: str, redis_url: str, cluster_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "one node":  # the session's Redis when it is one node, else the embedded one
        url = embedded_url() if is_cluster_url(redis_url) else redis_url
    else:
        url = cluster_url
    figures = await scale_out(backend, url, tmp_path)
    with capsys.disabled():
        print(f"\nscale-out [{backend}]: {figures.line()}")
    if path := os.environ.get("ISN_SCALE_OUT_REPORT"):
        with open(path, "a") as report:
            report.write(json.dumps(asdict(figures)) + "\n")
