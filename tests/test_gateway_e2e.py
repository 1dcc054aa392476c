"""The gateway end to end: real miner processes on 127.0.0.1 (``inference-subnet miner``), a real Redis,
the SQL store (SQLite, or the machine's Postgres when ``DATABASE_URL`` names it), the gateway under uvicorn.

Miners of this module: uids 1 and 2 honest, 3 honest (killed by the failover test), 4 slow (never answers
in time, never sends a first chunk), 5 flaky (breaks streams after two chunks). Each test steers routing by
giving quota only to the miners it wants, under its own Redis key space.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from metrics_helpers import delta, scrape
from sqlalchemy import func, select
from test_gateway_helpers import (
    GATES_ENV,
    CountingTask,
    CountRequest,
    LocalSubnet,
    free_port,
    fresh_database,
    ndjson,
    postgres_database,
    seed_evidence,
    serve_in_process,
    sqlite_url,
    stop_in_process,
    wait_until_serving,
)

from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol.task import Task
from inference_subnet.settings import Settings, load_settings
from inference_subnet.store.coalescing import CoalescingRedis, coalescing_client
from inference_subnet.store.keys import Keys
from inference_subnet.store.sql import Database, RequestLog
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.canaries import CanaryBook
from inference_subnet.validator.metrics import REGISTRY
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.managing import QuotaBook, ScoreBook

__all__ = ["postgres_database"]

COUNTING = "test_gateway_helpers:CountingTask"
HONEST_A, HONEST_B, VICTIM, SLOW, FLAKY = 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
async def subnet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[LocalSubnet]:
    net = LocalSubnet(tmp_path_factory.mktemp("subnet"), redis_url)
    net.setup(["honest", "honest", "honest", "slow", "flaky"], tasks=("arithmetic", COUNTING))
    net.start_miners(**{GATES_ENV: "1"})
    try:
        await net.wait_ready()
        yield net
    finally:
        net.stop()


@pytest.fixture
async def db_url(tmp_path: Path, postgres_database: str | None) -> str:
    return postgres_database if postgres_database else sqlite_url(tmp_path)


@dataclass
class Running:
    url: str
    keys: Keys
    db: Database
    quota: QuotaBook
    redis: aioredis.Redis
    subnet: LocalSubnet
    settings: Settings
    stop: Callable[[], Awaitable[None]]

    async def key(self, rate_per_minute: int = 1000, max_concurrent: int = 50) -> tuple[int, dict[str, str]]:
        info, plain = await ApiKeyStore(self.db).create(
            "test", rate_per_minute=rate_per_minute, max_concurrent=max_concurrent
        )
        return info.id, {"Authorization": f"Bearer {plain}"}

    def identity(self, uid: int) -> str:
        return self.subnet.metagraph().by_uid[uid].identity

    async def log_rows(self) -> list[RequestLog]:
        async with self.db.sessions() as session:
            return list((await session.scalars(select(RequestLog).order_by(RequestLog.id))).all())


GatewayFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def gateway(
    subnet: LocalSubnet, redis: aioredis.Redis, keys: Keys, db_url: str
) -> AsyncIterator[GatewayFactory]:
    """Start a gateway whose quota covers only the given miners (uid -> tasks)."""
    stops: list[Callable[[], Awaitable[None]]] = []
    client = MinerClient(subnet.validator)
    db = await fresh_database(db_url)

    async def start(
        capacity: dict[int, tuple[str, ...]],
        extra: Callable[[FastAPI], None] | None = None,
        books: CoalescingRedis | None = None,
        first: int | None = None,
        **gateway_settings: Any,
    ) -> Running:
        """``first``: the uid every request tries first (one contender, the others seeded a little worse), for
        tests of what happens when it fails; without it the contenders' order is a weighted draw."""
        quotas = {} if first is None else {"organic_contenders": 1}
        settings = load_settings(
            database_url=db_url,
            gateway={
                "api_key_cache_seconds": 0,
                "usage_refresh_seconds": 0,
                "reuse_sample_rate": 1.0,
                "first_byte_timeout": 1.0,
                "total_deadline_seconds": 10.0,
                "log_flush_seconds": 0.05,
                "rate_burst": 1000,  # bursts are paced by each key's rate alone here (test_gcra covers bursts)
                **gateway_settings,
            },
            validator={"scoring": {"organic_sample_rate": 1.0, "max_scored_per_period": 10_000}, "quotas": quotas},
        )
        metagraph = subnet.metagraph()
        quota = QuotaBook(books or redis, keys, settings.validator.quotas)
        await quota.set_stakes(metagraph, subnet.validator.ss58_address)
        score_book = ScoreBook(books or redis, keys, settings.validator.scoring)
        for uid, tasks in capacity.items():
            await quota.set_capacity(metagraph.by_uid[uid].identity, {t: 1000 for t in tasks})
            quality = 1.0 if first in (None, uid) else 0.9
            await seed_evidence(score_book, [metagraph.by_uid[uid].identity], tasks, quality=quality)
        task_objects: dict[str, Task] = {"arithmetic": ArithmeticTask(), "counting": CountingTask()}
        app = create_gateway_app(
            settings,
            tasks=task_objects,
            redis=redis,
            keys=keys,
            metagraph=StaticMetagraphSource(metagraph),
            miner_client=client,
            quota_book=quota,
            score_book=score_book,
            db=db,
            exclude_hotkeys=[subnet.validator.ss58_address],
            coalescer=books.coalescer if books is not None else None,
        )
        if extra is not None:
            extra(app)
        port = free_port()
        server, task = await serve_in_process(app, port)
        stopped = False

        async def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                await stop_in_process(server, task)

        stops.append(stop)
        return Running(f"http://127.0.0.1:{port}", keys, db, quota, redis, subnet, settings, stop)

    yield start
    for stop in stops:
        await stop()
    await client.aclose()
    await db.aclose()


async def test_serves_concurrent_requests_with_books_and_limits_on_one_coalescer(
    gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    """As ``gateway run`` wires it: the quota and score books on a coalescing client whose coalescer also
    carries the key limiter's commands. Concurrent requests are all answered, each takes exactly one
    organic quota unit, and every in-flight lease is released. (On a cluster there is no coalescing client:
    the books use the cluster client and the limiter its own coalescer.)"""
    books = coalescing_client(redis)
    gw = await gateway({HONEST_A: ("arithmetic",), HONEST_B: ("arithmetic",)}, books=books)
    key_id, auth = await gw.key(max_concurrent=100)
    async with _http(gw.url) as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1}, headers=auth)
                for i in range(16)
            )
        )
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"result": i + 1}) for i in range(16)]
    assert await redis.zcard(gw.keys.api_key_inflight(str(key_id))) == 0
    used = await gw.quota.status([gw.identity(HONEST_A), gw.identity(HONEST_B)], "arithmetic")
    assert sum(s.used_total for s in used.values()) == 16


def _http(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=30.0)


ADD = {"op": "add", "a": 20, "b": 22}


async def test_serves_through_real_miners_and_logs_after_shutdown(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",), HONEST_B: ("arithmetic",)}, log_payloads=True)
    key_id, auth = await gw.key()
    served_by = set()
    async with _http(gw.url) as http:
        listing = (await http.get("/v1/tasks")).json()
        assert {t["name"] for t in listing["tasks"]} == {"arithmetic", "counting"}
        for i in range(6):
            r = await http.post("/v1/tasks/arithmetic", json={"op": "multiply", "a": i, "b": 7}, headers=auth)
            assert r.status_code == 200, r.text
            assert r.json() == {"result": 7 * i}
            uid = int(r.headers["x-miner-uid"])
            assert r.headers["x-miner-hotkey"] == gw.subnet.metagraph().by_uid[uid].hotkey
            served_by.add(uid)
    assert served_by <= {HONEST_A, HONEST_B}  # how the draw spreads load is tests/test_sampling.py's

    await gw.stop()  # a clean shutdown flushes the request log
    rows = await gw.log_rows()
    assert len(rows) == 6
    assert all(r.status == 200 and r.key_id == key_id and r.task == "arithmetic" for r in rows)
    assert all(r.miner_uid in (HONEST_A, HONEST_B) and r.attempts == 1 and r.latency_ms > 0 for r in rows)
    assert all(
        r.request_bytes > 0 and r.response_bytes == len(b'{"result":0}') + (len(str(7 * i)) - 1)
        for i, r in enumerate(rows)
    )
    assert rows[3].payload == {"request": {"op": "multiply", "a": 3, "b": 7}, "response": {"result": 21}}

    # Organic feedback: every response was admitted for scoring (sample rate 1) and recorded for reuse.
    jobs = await gw.redis.xrange(gw.keys.scoring_stream())
    assert len(jobs) == 6
    assert await gw.redis.llen(gw.keys.organic_samples("arithmetic")) == 6


async def test_privacy_switch_and_no_payloads_by_default(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",)}, reuse_organic=False)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)).status_code == 200
    await gw.stop()
    (row,) = await gw.log_rows()
    assert row.payload is None
    assert await gw.redis.llen(gw.keys.organic_samples("arithmetic")) == 0
    assert len(await gw.redis.xrange(gw.keys.scoring_stream())) == 1  # scoring does not depend on reuse


async def test_authentication(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",)})
    key_id, auth = await gw.key()
    async with _http(gw.url) as http:
        for headers in (
            {},
            {"Authorization": "Bearer isn_not-a-real-key-but-long-enough"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer"},
        ):
            r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        # Auth comes before the body is even parsed.
        r = await http.post(
            "/v1/tasks/arithmetic", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 401
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)).status_code == 200
        await ApiKeyStore(gw.db).revoke(key_id)
        r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


async def test_bad_input_never_reaches_a_miner(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",)}, max_body_bytes=1024)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/arithmetic", json={"op": "divide", "a": 1, "b": 2}, headers=auth)
        error = r.json()["error"]
        assert r.status_code == 422 and error["code"] == "invalid_request" and "op" in error["message"]
        assert error["type"] == "invalid_request_error"
        r = await http.post("/v1/tasks/arithmetic", content=b"\xff\xfe{", headers=auth)
        assert r.status_code == 422
        r = await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": 10**13, "b": 1}, headers=auth)
        assert r.status_code == 422
        # Oversized: declared (refused before reading) and chunked (refused while reading).
        r = await http.post("/v1/tasks/arithmetic", content=b"x" * 2048, headers=auth)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"y" * 256

        r = await http.post("/v1/tasks/arithmetic", content=chunks(), headers=auth)
        assert r.status_code == 413
        r = await http.post("/v1/tasks/nope", json=ADD, headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_task"
        assert "arithmetic" in r.json()["error"]["message"] and "counting" in r.json()["error"]["message"]
        r = await http.get("/v1/tasks/arithmetic", headers=auth)
        assert r.status_code == 405 and "error" in r.json()
    await gw.stop()
    assert await gw.log_rows() == []  # nothing was routed


async def test_no_miner_available_is_503_with_a_reason(gateway: GatewayFactory) -> None:
    gw = await gateway({})  # no quota anywhere
    key_id, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_miner"
    assert "capacity" in r.json()["error"]["message"]
    await gw.stop()
    (row,) = await gw.log_rows()
    assert row.status == 503 and row.miner_uid is None and row.key_id == key_id


async def test_a_live_challenge_sent_as_an_organic_request_is_refused_and_benches_its_miner(
    gateway: GatewayFactory,
) -> None:
    """A copycat forwards the challenge it got to this validator's gateway: the gateway finds the planted
    canary, answers an ordinary 503 without spending any miner's quota, and benches the miner it was sent
    to: routing skips it, and the weights read it as 0."""
    gw = await gateway({HONEST_A: ("arithmetic",), HONEST_B: ("arithmetic",)})
    canaries = CanaryBook(
        gw.redis,
        gw.keys,
        ttl_seconds=gw.settings.validator.canary_ttl_seconds,
        bench_seconds=gw.settings.validator.canary_bench_seconds,
    )
    challenge = ArithmeticTask.Request.model_validate({"op": "add", "a": 1234, "b": 4321})
    copier = gw.identity(HONEST_A)
    assert await canaries.plant("arithmetic", [(challenge, copier)]) == 1
    _, auth = await gw.key()
    identities = [gw.identity(HONEST_A), gw.identity(HONEST_B)]
    def caught_metric() -> float:
        return REGISTRY.get_sample_value(
            "isn_canary_caught_total", {"task": "arithmetic", "kind": "organic"}
        ) or 0.0

    async with _http(gw.url) as http:
        before = caught_metric()
        # The body as a forwarder sends it: same content, keys in another order.
        r = await http.post("/v1/tasks/arithmetic", json={"b": 4321, "op": "add", "a": 1234}, headers=auth)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_miner"
        assert r.headers.get("x-miner-uid") is None
        used = await gw.quota.status(identities, "arithmetic")
        assert sum(s.used_total for s in used.values()) == 0  # no miner's capacity went to it
        assert await canaries.caught(identities) == {copier}
        assert caught_metric() == before + 1
        # Users' requests go on, to the other miner only while the copier is benched.
        served = set()
        for i in range(4):
            ok = await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1}, headers=auth)
            assert ok.status_code == 200 and ok.json() == {"result": i + 1}
            served.add(int(ok.headers["x-miner-uid"]))
    assert served == {HONEST_B}


async def test_per_key_rate_limit(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",)})
    _, auth = await gw.key(rate_per_minute=3)
    async with _http(gw.url) as http:
        # The burst is capped at the key's rate (3), then one request every 20 s.
        statuses = [(await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)) for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        refused = statuses[-1]
        assert (
            refused.json()["error"]["code"] == "rate_limited"
            and "3 requests per minute" in refused.json()["error"]["message"]
        )
        assert 15 <= int(refused.headers["retry-after"]) <= 20  # the next interval, not the next minute
        # The key's GCRA state on every answer, the refusal included (a refusal spends nothing).
        assert [r.headers["x-ratelimit-remaining-requests"] for r in statuses] == ["2", "1", "0", "0"]
        assert {r.headers["x-ratelimit-limit-requests"] for r in statuses} == {"3"}
        assert statuses[0].headers["x-ratelimit-reset-requests"] == "20s"  # one interval ahead of now
        # Another key is not affected.
        _, other = await gw.key(rate_per_minute=3)
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=other)).status_code == 200


async def _first_line(response: httpx.Response) -> tuple[str, AsyncIterator[str]]:
    lines = response.aiter_lines()
    return await asyncio.wait_for(anext(lines), 10), lines


async def test_streaming_passes_chunks_through_as_they_come(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("counting",)})
    _, auth = await gw.key()
    gate = f"gate:{uuid.uuid4().hex}"
    async with _http(gw.url) as http:
        async with http.stream("POST", "/v1/tasks/counting", json={"n": 5, "gate": gate}, headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            assert r.headers["x-miner-uid"] == str(HONEST_A)
            # The miner holds chunks 1..4 until the gate opens: the first one reached us on its own.
            first, rest = await _first_line(r)
            assert ndjson(first) == [{"i": 0}]
            await gw.redis.set(gate, 1, ex=60)
            remaining = [line async for line in rest]
        assert ndjson("\n".join(remaining)) == [{"i": i} for i in range(1, 5)]
    await gw.stop()
    (row,) = await gw.log_rows()
    assert row.status == 200 and row.miner_uid == HONEST_A
    assert row.response_bytes == sum(len(f'{{"i":{i}}}\n') for i in range(5))
    assert len(await gw.redis.xrange(gw.keys.scoring_stream())) == 1  # the assembled stream is scored


async def test_concurrency_limit_holds_while_a_stream_is_open(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("counting", "arithmetic")})
    _, auth = await gw.key(max_concurrent=1)
    gate = f"gate:{uuid.uuid4().hex}"
    async with _http(gw.url) as http:
        async with http.stream("POST", "/v1/tasks/counting", json={"n": 3, "gate": gate}, headers=auth) as r:
            _, lines = await _first_line(r)  # keep `lines`: dropping it would close the stream
            busy = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
            assert busy.status_code == 429 and "1 concurrent" in busy.json()["error"]["message"]
            assert busy.headers["retry-after"] == "1"
            await gw.redis.set(gate, 1, ex=60)
            assert len([line async for line in lines]) == 2
        # The stream ended: its lease is released at once.
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)).status_code == 200


async def test_stream_fails_over_when_the_first_byte_is_late(gateway: GatewayFactory) -> None:
    gw = await gateway({SLOW: ("counting",), HONEST_A: ("counting",)}, first=SLOW)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/counting", json={"n": 3}, headers=auth)
    assert r.status_code == 200
    assert ndjson(r.text) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert r.headers["x-miner-uid"] == str(HONEST_A) and r.headers["x-attempts"] == "2"


async def test_stream_broken_after_first_chunk_ends_with_an_error_line(gateway: GatewayFactory) -> None:
    gw = await gateway({FLAKY: ("counting",)})
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/counting", json={"n": 5}, headers=auth)
    assert r.status_code == 200 and r.headers["x-miner-uid"] == str(FLAKY)
    lines = ndjson(r.text)
    assert lines[:2] == [{"i": 0}, {"i": 1}]
    assert lines[-1]["error"]["code"] == "stream_broken" and lines[-1]["error"]["type"] == "server_error"
    await gw.stop()
    (row,) = await gw.log_rows()
    assert row.status == 502 and row.miner_uid is None


async def test_failover_to_the_next_miner_when_one_dies(gateway: GatewayFactory) -> None:
    gw = await gateway({VICTIM: ("arithmetic",), HONEST_A: ("arithmetic",)}, first=VICTIM)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
        assert r.status_code == 200
        # Kill the victim's process: it is still tried first.
        gw.subnet.kill(VICTIM)
        responses = [
            await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1}, headers=auth)
            for i in range(4)
        ]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.json()["result"] for r in responses] == [1, 2, 3, 4]
    assert {r.headers["x-miner-uid"] for r in responses} == {str(HONEST_A)}
    assert responses[0].headers["x-attempts"] == "2"
    await gw.stop()
    rows = await gw.log_rows()
    assert [r.status for r in rows[1:]] == [200] * 4 and {r.miner_uid for r in rows[1:]} == {HONEST_A}
    assert rows[1].attempts == 2
    # The dead miner's failures are evidence for scoring: a job carries its connect error.
    jobs = [json.loads(fields[b"job"]) for _, fields in await gw.redis.xrange(gw.keys.scoring_stream())]
    outcomes = [resp["outcome"] for job in jobs for resp in job["responses"] if resp["uid"] == VICTIM]
    assert "connect_error" in outcomes


async def test_failover_when_a_miner_times_out(gateway: GatewayFactory) -> None:
    gw = await gateway({SLOW: ("arithmetic",), HONEST_A: ("arithmetic",)}, first=SLOW)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
    assert r.status_code == 200 and r.json() == {"result": 42}
    assert r.headers["x-miner-uid"] == str(HONEST_A) and r.headers["x-attempts"] == "2"


async def test_total_deadline_bounds_the_request(gateway: GatewayFactory) -> None:
    gw = await gateway({SLOW: ("arithmetic",)}, total_deadline_seconds=0.5)
    _, auth = await gw.key()
    async with _http(gw.url) as http:
        started = time.perf_counter()
        r = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
        elapsed = time.perf_counter() - started
    assert (
        r.status_code == 503
        and "deadline exceeded" in r.json()["error"]["message"]
        and "uid 4: timeout" in r.json()["error"]["message"]
    )
    assert elapsed < ArithmeticTask.timeout  # the miner's own timeout (2 s) was cut to the deadline


async def test_readiness(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_A: ("arithmetic",)})
    async with _http(gw.url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        ready = await http.get("/ready")
    assert ready.status_code == 200
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
        "redis": True,
        "database": True,
        "metagraph": True,
        "request_log": True,
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference_subnet.cli.main", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


async def test_cli_key_lifecycle_and_gateway_run_flushes_on_sigterm(
    subnet: LocalSubnet, redis: aioredis.Redis, keys: Keys, db_url: str
) -> None:
    db = await fresh_database(db_url)
    env = subnet.env(DATABASE_URL=db_url, ISN_SUBNET_NAME=keys.subnet)
    created = _cli(
        env,
        "gateway",
        "keys",
        "create",
        "--name",
        "cli-app",
        "--rate-per-minute",
        "100",
        "--max-concurrent",
        "4",
    )
    assert created.returncode == 0, created.stderr
    plain = created.stdout.strip()
    assert plain.startswith("isn_") and "cannot be shown again" in created.stderr
    listed = _cli(env, "gateway", "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert plain not in listed.stdout
    (entry,) = json.loads(listed.stdout)
    assert (
        entry["name"] == "cli-app" and entry["rate_per_minute"] == 100 and plain.startswith(entry["prefix"])
    )

    # The real command, as an operator runs it; quota and evidence for miner 2 are what the managing and
    # scoring services would write.
    validator_keys = Keys(subnet=keys.subnet, netuid=subnet.netuid, role=subnet.validator.ss58_address)
    settings = load_settings()
    quota = QuotaBook(redis, validator_keys, settings.validator.quotas)
    await quota.set_stakes(subnet.metagraph(), subnet.validator.ss58_address)
    honest = subnet.metagraph().by_uid[HONEST_B].identity
    await quota.set_capacity(honest, {"arithmetic": 100})
    await seed_evidence(ScoreBook(redis, validator_keys, settings.validator.scoring), [honest], ["arithmetic"])
    port = free_port()
    proc = subnet.start_gateway(
        port,
        ["arithmetic"],
        DATABASE_URL=db_url,
        ISN_SUBNET_NAME=keys.subnet,
        ISN_GATEWAY__API_KEY_CACHE_SECONDS="0",
    )
    try:
        await asyncio.to_thread(
            wait_until_serving, f"http://127.0.0.1:{port}/health", proc, lambda: subnet.process_output(port)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            auth = {"Authorization": f"Bearer {plain}"}
            for i in range(5):
                r = await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": i}, headers=auth)
                assert r.status_code == 200, r.text
                assert r.json() == {"result": 2 * i} and r.headers["x-miner-uid"] == str(HONEST_B)
            revoked = _cli(env, "gateway", "keys", "revoke", str(entry["id"]))
            assert revoked.returncode == 0, revoked.stderr
            assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RequestLog)) == 5
    unknown = _cli(env, "gateway", "keys", "revoke", "999999")
    assert unknown.returncode != 0 and "999999" in unknown.stderr
    await db.aclose()


def _sse_adapter(app: FastAPI) -> None:
    """What an OpenAI-style adapter does: its own payload and wire format, the gateway's pipeline."""
    task = CountingTask()

    @app.post("/v1/test/events")
    async def events(request: Request) -> StreamingResponse:
        gateway = request.app.state.gateway
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = await gateway.authenticate(HTTPAuthorizationCredentials(scheme=scheme, credentials=token))
        body = await request.body()
        payload = json.loads(body)
        relay = await gateway.open(task, key, CountRequest(n=payload["count"]), request_bytes=len(body))
        return StreamingResponse(
            relay.stream(
                lambda chunk: b"data: " + chunk.model_dump_json().encode() + b"\n\n",
                lambda reason: b"event: error\ndata: " + reason.encode() + b"\n\n",
            ),
            media_type="text/event-stream",
        )


async def test_a_route_adapter_reuses_the_pipeline(gateway: GatewayFactory) -> None:
    gw = await gateway({HONEST_B: ("counting",)}, extra=_sse_adapter)
    key_id, auth = await gw.key(rate_per_minute=1)
    async with _http(gw.url) as http:
        r = await http.post("/v1/test/events", json={"count": 3}, headers=auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.text == "".join(f'data: {{"i":{i}}}\n\n' for i in range(3))
        limited = await http.post("/v1/test/events", json={"count": 3}, headers=auth)  # same key limits
        assert limited.status_code == 429
    await gw.stop()
    (row,) = await gw.log_rows()
    assert (row.status, row.key_id, row.miner_uid, row.task) == (200, key_id, HONEST_B, "counting")


async def test_metrics_count_requests_refusals_and_upstream_calls(gateway: GatewayFactory) -> None:
    """``/metrics`` scraped over HTTP before and after real traffic: route templates (never raw paths),
    statuses, 401s and 429s by reason, 503s for no miner, body bytes, upstream outcome and latency by uid,
    streaming first byte, and the organic families the gateway feeds."""
    # The slow miner is tried first: it times out before its first byte.
    gw = await gateway({SLOW: ("counting",), HONEST_A: ("counting", "arithmetic")}, first=SLOW, max_body_bytes=1024)
    _, auth = await gw.key()
    _, paced = await gw.key(rate_per_minute=1)
    _, single = await gw.key(max_concurrent=1)
    gate = f"gate:{uuid.uuid4().hex}"
    async with _http(gw.url) as http:
        before = await scrape(http)
        ok = await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)
        assert ok.status_code == 200
        streamed = await http.post("/v1/tasks/counting", json={"n": 3}, headers=auth)
        assert streamed.status_code == 200 and streamed.headers["x-attempts"] == "2"
        assert (await http.post("/v1/tasks/arithmetic", json=ADD)).status_code == 401
        bad = {"Authorization": "Bearer isn_not-a-key"}
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=bad)).status_code == 401
        statuses = [(await http.post("/v1/tasks/arithmetic", json=ADD, headers=paced)).status_code
                    for _ in range(3)]
        assert statuses[0] == 200 and 429 in statuses
        held = {"n": 2, "gate": gate}
        async with http.stream("POST", "/v1/tasks/counting", json=held, headers=single) as r:
            _, lines = await _first_line(r)
            busy = await http.post("/v1/tasks/arithmetic", json=ADD, headers=single)
            assert busy.status_code == 429
            await gw.redis.set(gate, 1, ex=60)
            assert len([line async for line in lines]) == 1
        huge = await http.post("/v1/tasks/arithmetic", content=b"x" * 2000, headers=auth)
        assert huge.status_code == 413
        unknown = await http.post("/v1/tasks/no-such-task-" + uuid.uuid4().hex, json={}, headers=auth)
        assert unknown.status_code == 404
        assert (await http.get("/nothing/" + uuid.uuid4().hex)).status_code == 404
        after = await scrape(http)

    def moved(name: str, **labels: str) -> float:
        return delta(after, before, name, **labels)

    total = "isn_http_requests_total"
    arith = "/v1/tasks/arithmetic"
    assert moved(total, component="gateway", route=arith, method="POST", status="200") == 2
    assert moved(total, route=arith, status="401") == 2
    assert moved(total, route=arith, status="429") == statuses.count(429) + 1
    assert moved(total, route=arith, status="413") == 1  # refused by the body limit, before routing
    assert moved(total, route="/v1/tasks/{task}", status="404") == 1
    assert moved(total, route="unmatched", method="GET", status="404") == 1
    assert not [s for s in after.samples if "no-such-task" in str(s.labels) or "/nothing/" in str(s.labels)]
    assert moved("isn_gateway_auth_refusals_total", reason="missing_key") == 1
    assert moved("isn_gateway_auth_refusals_total", reason="invalid_key") == 1
    assert moved("isn_gateway_rate_limited_total", task="arithmetic", reason="rate") == statuses.count(429)
    assert moved("isn_gateway_rate_limited_total", task="arithmetic", reason="concurrency") == 1
    # both streams tried the slow miner first, then the honest one
    upstream = "isn_gateway_upstream_requests_total"
    assert moved(upstream, task="counting", uid=str(SLOW), outcome="timeout") == 2
    assert moved(upstream, task="counting", uid=str(HONEST_A), outcome="ok") == 2
    assert moved(upstream, task="arithmetic", uid=str(HONEST_A), outcome="ok") == 2
    assert moved("isn_gateway_upstream_seconds_count", task="arithmetic", uid=str(HONEST_A)) == 2
    assert moved("isn_gateway_upstream_first_byte_seconds_count", task="counting") == 2
    assert moved("isn_http_stream_first_byte_seconds_count", route="/v1/tasks/counting") == 2
    assert moved("isn_http_response_bytes_total", route="/v1/tasks/counting") >= len(streamed.content)
    # bytes the app read: the five bodies it parsed at least, never the refused 2000 (413 from the header)
    assert 5 * len(ok.request.content) <= moved("isn_http_request_bytes_total", route=arith) < 2000
    assert moved("isn_miner_requests_total", task="arithmetic", kind="organic", outcome="ok") == 2
    assert after.value("isn_build_info", component="gateway") == 1
    assert after.value("isn_redis_up") == 1
    assert 0 <= after.value("isn_metagraph_age_seconds") < 600
    assert "isn_scoring_queue_depth" not in after.families  # a gateway never moves the services' own
    assert "isn_blocks_since_last_weight_set" not in after.families


async def test_metrics_count_requests_no_miner_could_serve(gateway: GatewayFactory) -> None:
    no_quota = await gateway({})
    _, auth = await no_quota.key()
    async with _http(no_quota.url) as http:
        before = await scrape(http)
        assert (await http.post("/v1/tasks/arithmetic", json=ADD, headers=auth)).status_code == 503
        after = await scrape(http)
    assert delta(after, before, "isn_gateway_no_miner_total", task="arithmetic") == 1
    assert delta(after, before, "isn_http_requests_total", route="/v1/tasks/arithmetic", status="503") == 1
