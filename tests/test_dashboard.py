"""The validator dashboard: its JSON against real Redis, and the page rendered by headless Chromium.

Every record the dashboard reads is written by the class that writes it in production: the metagraph by the
sidecar (:class:`MetagraphSync`), samples by the :class:`ScoreBook`, quotas by the :class:`QuotaBook`, weight
attempts by the :class:`WeightSetter` (on the in-memory chain: the dashboard never talks to a chain, it reads
what the weight setter recorded), served requests by the :class:`RequestLogWriter`.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from bittensor_wallet import Keypair
from fastapi import FastAPI

from browser_helpers import WINDOW, chromium, png_pixels, serving
from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import Metagraph, MetagraphSource
from inference_subnet.localnet.ports import free_port
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import QuotaSettings, ScoringSettings, Settings, load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect
from inference_subnet.store.sql import Database
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator import beats
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.gateway.requestlog import LogEntry, RequestLogWriter
from inference_subnet.validator.managing import QuotaBook, Sample, ScoreBook
from inference_subnet.validator.service import ServiceHost
from inference_subnet.validator.sidecar import MetagraphSync, RedisMetagraphSource
from inference_subnet.validator.weights import WeightSetter
from subnet_helpers import NETUID as SUBNET_NETUID
from subnet_helpers import TASK as QUICK_TASK
from subnet_helpers import LocalSubnet, running

NETUID = 7
TASK = ArithmeticTask()

# What each miner did, as the validator measured it: (quality, latency in s, answered) per sample.
MEASURED: dict[int, list[tuple[float, float, bool]]] = {
    1: [(1.0, 0.10, True), (1.0, 0.20, True), (1.0, 0.30, True), (1.0, 0.12, True)],
    2: [(0.8, 0.90, True), (0.7, 1.10, True), (0.9, 1.30, True)],
    3: [(1.0, 0.50, True), (0.0, 2.00, False), (0.6, 0.70, True), (0.0, 2.00, False)],
    4: [],  # never scored
}
SERVED = {1: 5, 2: 2}  # organic requests each served (HTTP 200), per the request log
ROUTED = {1: 3, 2: 1, 3: 1}  # organic quota the gateway consumed per miner this epoch
SYNTHETIC = {1: 2, 2: 2, 3: 2}


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//dashboard-{name}")


@dataclass
class Validator:
    """A validator's state written by the real classes, and the gateway app built on it."""

    app: FastAPI
    chain: MemoryChainClient
    metagraph: Metagraph
    success_block: int
    scores: ScoreBook
    quotas: QuotaBook
    settings: Settings
    db: Database


async def build_validator(redis: aioredis.Redis, tmp_path: Path, **gateway: object) -> Validator:
    chain = MemoryChainClient()
    chain.create_subnet(NETUID, tempo=10, weights_rate_limit=20)
    validator = kp("validator")
    keys = Keys(subnet=f"dash{time.monotonic_ns()}", netuid=NETUID, role=validator.ss58_address)
    chain.register(NETUID, validator, kp("owner"), stake=1000.0, validator_permit=True)
    miners = [kp(f"miner{i}") for i in range(1, 5)]
    for i, miner in enumerate(miners, start=1):
        chain.register(NETUID, miner, kp("owner"), stake=float(i))
        if i < 4:  # uid 4 never published an axon
            await chain.serve_axon(miner, NETUID, "203.0.113.10", 8100 + i)

    settings = load_settings(
        subnet_name=keys.subnet, chain={"netuid": NETUID}, database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        gateway=dict(gateway),
        validator={"quotas": {"burst_seconds": 4320.0}},  # plain per-epoch counts: the panels show them
    )
    sync = MetagraphSync(chain, redis, keys, netuid=NETUID)
    metagraph = await sync.sync_once()

    scores = ScoreBook(redis, keys, settings.validator.scoring)
    for uid, samples in MEASURED.items():
        identity = metagraph.by_uid[uid].identity
        for j, (quality, latency, ok) in enumerate(samples):
            sample = Sample(score=quality, kind="synthetic", latency=latency, ok=ok, ts=time.time())
            assert await scores.record(identity, TASK.name, sample, f"job-{uid}-{j}")

    quotas = QuotaBook(redis, keys, settings.validator.quotas)
    await quotas.set_stakes(metagraph, validator.ss58_address)
    for uid in range(1, 5):
        await quotas.set_capacity(metagraph.by_uid[uid].identity, {TASK.name: 100 * uid})
    for uid, n in SYNTHETIC.items():
        assert await quotas.consume(metagraph.by_uid[uid].identity, TASK.name, "synthetic", n)
    for uid, n in ROUTED.items():
        assert await quotas.consume(metagraph.by_uid[uid].identity, TASK.name, "organic", n)

    source = RedisMetagraphSource(redis, keys)
    setter = WeightSetter(chain, redis, keys, validator, scores, source, {TASK.name: TASK.timeout}, netuid=NETUID)
    success = await setter.set_now()
    assert success is not None and success.outcome == "success"
    chain.advance(3)
    # A setter on a stale snapshot (before the set) does not know the rate limit: the chain says too soon.
    stale = StaticMetagraphSource(replace(metagraph, neurons=tuple(
        replace(n, last_update=0) for n in metagraph.neurons)))
    early = WeightSetter(chain, redis, keys, validator, scores, stale, {TASK.name: TASK.timeout}, netuid=NETUID)
    too_soon = await early.set_now()
    assert too_soon is not None and too_soon.outcome == "too_soon"
    metagraph = await sync.sync_once()  # the sidecar follows the chain to the new head

    db = Database(settings.database_url)
    await db.upgrade()
    writer = RequestLogWriter(db, flush_interval=0.01)
    writer.start()
    for uid, n in SERVED.items():
        neuron = metagraph.by_uid[uid]
        for _ in range(n):
            writer.record(LogEntry(task=TASK.name, key_id=None, status=200, latency_ms=5.0, request_bytes=10,
                                   response_bytes=10, miner_uid=uid, miner_hotkey=neuron.hotkey, attempts=1))
    writer.record(LogEntry(task=TASK.name, key_id=None, status=503, latency_ms=5.0, request_bytes=10,
                           response_bytes=0, miner_uid=3, miner_hotkey=metagraph.by_uid[3].hotkey, attempts=1))
    await writer.aclose()  # flushes every row

    app = create_gateway_app(
        settings, tasks={TASK.name: TASK}, redis=redis, keys=keys, metagraph=RedisMetagraphSource(redis, keys),
        miner_client=MinerClient(validator), quota_book=quotas, score_book=scores, db=db,
    )
    return Validator(app, chain, metagraph, success.block, scores, quotas, settings, db)


@pytest.fixture
async def validator(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Validator]:
    v = await build_validator(redis, tmp_path)
    yield v
    await v.db.aclose()


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


# -- the JSON ---------------------------------------------------------------------------------------------


async def test_data_shows_every_miner_with_scores_quotas_latency_and_weights(validator: Validator) -> None:
    async with client(validator.app) as http:
        response = await http.get("/dashboard/data")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    metagraph = validator.metagraph

    assert data["netuid"] == NETUID and data["tasks"] == [TASK.name]
    assert data["metagraph_block"] == metagraph.block and data["block"] == metagraph.block
    assert 0 <= data["metagraph_age_seconds"] < 60
    rows = {m["uid"]: m for m in data["miners"]}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert rows[0]["is_self"] and rows[0]["validator_permit"] and not rows[1]["is_self"]
    assert [rows[u]["serving"] for u in range(5)] == [False, True, True, True, False]
    assert rows[1]["hotkey"] == metagraph.by_uid[1].hotkey and "…" in rows[1]["hotkey_short"]

    # scores are the score book's aggregates, and they rank what was measured
    identities = [metagraph.by_uid[u].identity for u in range(5)]
    expected = await validator.scores.aggregates(identities, {TASK.name: TASK.timeout})
    for uid in range(5):
        assert rows[uid]["score"] == pytest.approx(expected[identities[uid]])
    assert rows[1]["score"] > rows[2]["score"] > rows[3]["score"] > rows[4]["score"] == 0.0

    # latency: median of the answered samples only; answered share over all recent samples
    assert rows[1]["latency_ms"] == pytest.approx(160.0)  # median of 100, 120, 200, 300 ms
    assert rows[2]["latency_ms"] == pytest.approx(1100.0)
    assert rows[3]["latency_ms"] == pytest.approx(600.0)  # the two 2 s failures are not latencies
    assert rows[3]["success_rate"] == pytest.approx(0.5) and rows[1]["success_rate"] == 1.0
    assert rows[4]["latency_ms"] is None and rows[4]["success_rate"] is None and rows[4]["recent_samples"] == 0

    # quota: this validator's share and what the gateway and the orchestrator consumed this epoch
    for uid in range(1, 5):
        status = (await validator.quotas.status([identities[uid]], TASK.name))[identities[uid]]
        quota = rows[uid]["quota"][TASK.name]
        assert quota["share"] == status.share > 0
        assert quota["used"] == SYNTHETIC.get(uid, 0) + ROUTED.get(uid, 0)
        assert quota["used_synthetic"] == SYNTHETIC.get(uid, 0)
        assert quota["left"] == status.total_left == status.share - quota["used"] + status.borrow_left
        assert rows[uid]["organic_routed"] == ROUTED.get(uid, 0)
        assert rows[uid]["organic_served"] == SERVED.get(uid, 0)  # the 503 row is not a served request
    assert rows[2]["quota"][TASK.name]["share"] == 2 * rows[1]["quota"][TASK.name]["share"]

    # weights: the last successful set, per uid, and every attempt newest first
    last = data["last_weights"]
    assert last["block"] == validator.success_block and last["path"] == "set_weights"
    assert last["uids"] == 5 and last["nonzero"] == 3
    assert data["blocks_since_weights"] == metagraph.block - validator.success_block > 0
    assert sum(rows[u]["weight"] for u in range(5)) == pytest.approx(1.0)
    assert rows[1]["weight"] > rows[2]["weight"] > rows[3]["weight"] > 0
    assert rows[0]["weight"] == rows[4]["weight"] == 0.0
    on_chain = validator.chain.weights(NETUID)[0]  # what the chain holds from the validator (uid 0)
    assert max(on_chain, key=lambda u: on_chain[u]) == 1
    assert [a["outcome"] for a in data["attempts"]] == ["too_soon", "success"]
    assert data["attempts"][0]["ready_at_block"] > validator.success_block
    assert data["attempts"][1]["extrinsic_hash"] and data["attempts"][1]["uids"] == 3  # the non-zero ones sent
    assert data["notes"] == []


async def test_dashboard_needs_no_key_and_can_be_switched_off(redis: aioredis.Redis, tmp_path: Path) -> None:
    on = await build_validator(redis, tmp_path / "on")
    off = await build_validator(redis, tmp_path / "off", dashboard=False)
    try:
        async with client(on.app) as http:
            page = await http.get("/dashboard")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "script-src 'sha256-" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
            # no CDN, nothing external: the one URL is the SVG namespace, an identifier no browser fetches
            assert re.findall(r"https?://[^\s\"'<>]+", page.text) == ["http://www.w3.org/2000/svg"]
            assert (await http.get("/v1/tasks/arithmetic")).status_code == 405  # the API itself still needs keys
            schema = (await http.get("/openapi.json")).json()
            assert {"/dashboard", "/dashboard/data"} <= set(schema["paths"])
        async with client(off.app) as http:
            for path in ("/dashboard", "/dashboard/data"):
                response = await http.get(path)
                assert response.status_code == 404 and response.json()["error"] == "not_found"
    finally:
        await on.db.aclose()
        await off.db.aclose()


async def test_missing_metagraph_is_a_note_and_dead_redis_a_503(redis: aioredis.Redis, tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    keys = Keys(subnet=f"dash{time.monotonic_ns()}", netuid=NETUID, role=kp("validator").ss58_address)
    db = Database(settings.database_url)  # never migrated: the served column says it cannot be read

    def app_on(redis: aioredis.Redis, metagraph: MetagraphSource) -> FastAPI:
        return create_gateway_app(
            settings, tasks={TASK.name: TASK}, redis=redis, keys=keys, metagraph=metagraph,
            miner_client=MinerClient(kp("validator")), quota_book=QuotaBook(redis, keys, settings.validator.quotas),
            score_book=ScoreBook(redis, keys, settings.validator.scoring), db=db,
        )

    # the sidecar has written nothing yet: the page still answers, and says why it is empty
    async with client(app_on(redis, RedisMetagraphSource(redis, keys))) as http:
        data = (await http.get("/dashboard/data")).json()
    assert data["miners"] == [] and data["block"] is None and data["last_weights"] is None
    assert any("no metagraph yet" in n for n in data["notes"])
    assert any("request log unavailable" in n for n in data["notes"])
    # Redis unreachable: a 503 with a reason, not a traceback
    dead = connect(f"redis://127.0.0.1:{free_port()}/0")
    app = app_on(dead, StaticMetagraphSource(Metagraph(netuid=NETUID, block=1, neurons=())))
    try:
        async with client(app) as http:
            response = await http.get("/dashboard/data")
        assert response.status_code == 503
        assert response.json() == {"error": "unavailable", "reason": "Redis is unreachable, try again shortly"}
    finally:
        await dead.aclose()
        await db.aclose()


# -- the page in a real browser ---------------------------------------------------------------------------


async def test_page_renders_live_data_in_headless_chromium(validator: Validator, tmp_path: Path) -> None:
    async with client(validator.app) as http:
        expected = (await http.get("/dashboard/data")).json()
    shot = tmp_path / "dashboard.png"
    hits: Counter[str] = Counter()
    async with serving(validator.app, hits) as base:
        dom_bytes, _ = await asyncio.gather(
            chromium(f"{base}/dashboard", tmp_path / "profile-dom", "--dump-dom"),
            chromium(f"{base}/dashboard", tmp_path / "profile-shot", f"--screenshot={shot}"),
        )
    dom = dom_bytes.decode()

    # the live JS ran: the rows it built from /dashboard/data carry the uids and the scores
    assert 'data-loaded="true"' in dom
    rows = dict(re.findall(r'<tr data-uid="(\d+)"[^>]*>(.*?)</tr>', dom, flags=re.DOTALL))
    assert sorted(int(u) for u in rows) == [0, 1, 2, 3, 4]
    for miner in expected["miners"]:
        row = rows[str(miner["uid"])]
        assert f'<td class="uid">{miner["uid"]}</td>' in row
        score = re.search(r'<td class="score">(.*?)</td>', row, flags=re.DOTALL)
        assert score is not None and f"{miner['score']:.3f}" in score.group(1)
        assert miner["hotkey_short"] in row
    assert f"{expected['miners'][1]['latency_ms']:.0f} ms" in rows["1"]
    assert ">too soon<" in dom and ">success<" in dom
    assert f"{expected['blocks_since_weights']} blocks ago" in dom
    status = re.search(r'<span id="status">(.*?)</span>', dom)
    assert status is not None and status.group(1).startswith("live ·"), status

    # and kept polling: each browser fetched the data again within its 5 s of virtual time
    assert hits["/dashboard"] == 2 and hits["/dashboard/data"] >= 4, hits

    # the screenshot is the window, and not blank
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == WINDOW
    bpp = len(pixels[0]) // width
    colours = {row[i:i + 3] for row in pixels[::3] for i in range(0, len(row), bpp * 3)}
    assert len(colours) > 50, f"only {len(colours)} colours: a blank page?"
    background = statistics.mode(row[i:i + 3] for row in pixels[::9] for i in range(0, len(row), bpp * 9))
    inked = sum(row[i:i + 3] != background for row in pixels[::9] for i in range(0, len(row), bpp * 9))
    assert inked > 0.05 * (width // 9) * (height // 9)


# -- after real traffic: correctness, 429s, errors, keys, rates, backlog, services ---------------------------


def cell(row: str, cls: str) -> str:
    found = re.search(rf'<td class="{cls}[^"]*"[^>]*>(.*?)</td>', row, flags=re.DOTALL)
    assert found is not None, (cls, row)
    return found.group(1)


async def until_counted(http: httpx.AsyncClient, requests: int) -> dict[str, Any]:
    """The dashboard data once the gateway's traffic counts (flushed every second) reach ``requests``."""
    deadline = time.monotonic() + 15
    while True:
        data = (await http.get("/dashboard/data")).json()
        if data["traffic"]["totals"]["requests"] >= requests or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.3)


async def test_panels_show_correctness_limits_errors_keys_rates_backlog_and_services_after_real_traffic(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """Real miners (one honest, one answering every request wrongly) behind the real gateway under uvicorn:
    synthetic rounds scored by the real workers, organic requests with a tight key, a bad payload, no key,
    and a request no miner can serve; then the JSON and the page in Chromium show what happened."""
    scoring = ScoringSettings(prior_strength=0, organic_sample_rate=0.0)  # the backlog: synthetic jobs only
    # (plain per-epoch counts, a burst of the whole epoch: the panel counts a handful of requests at once)
    async with LocalSubnet(redis, keys, ["honest", "wrong"], scoring=scoring,
                           quotas=QuotaSettings(synthetic_fraction=1.0, burst_seconds=4320.0)) as net:
        parts = net.validator_parts()
        orchestrator, workers = parts["orchestrator"], parts["workers"]
        for _ in range(4):
            assert (await orchestrator.round()).job_id is not None
        async with running(workers):  # one scoring job per miner and round: enough evidence for the bar
            assert await workers.wait_processed(8, timeout=30)
        for _ in range(2):  # queued with no worker running: the scoring backlog
            assert (await orchestrator.round()).job_id is not None

        # a sidecar process that beats, and a scoring process that died two minutes ago
        host = ServiceHost([MetagraphSync(net.chain, redis, keys, netuid=SUBNET_NETUID)], redis=redis, keys=keys,
                           heartbeat_seconds=0.2, instance="validator-host-1")
        await host.start()
        async with redis.pipeline(transaction=False) as pipe:
            beats.beat(pipe, keys, [beats.member("scoring", "crashed-host-7")], time.time() - 120)
            await pipe.execute()

        settings = load_settings(subnet_name=keys.subnet, database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
                                 validator={"quotas": net.quotas.model_dump(), "heartbeat_seconds": 0.2})
        db = Database(settings.database_url)
        await db.upgrade()
        store = ApiKeyStore(db)
        user, user_secret = await store.create("dash-user", rate_per_minute=4, max_concurrent=4)
        ops, ops_secret = await store.create("dash-ops", rate_per_minute=100, max_concurrent=4)
        app = create_gateway_app(
            settings, tasks={QUICK_TASK.name: QUICK_TASK}, redis=redis, keys=keys, metagraph=parts["source"],
            miner_client=parts["client"], quota_book=parts["quotas"], score_book=parts["scores"], db=db,
            check_metagraph_age=False,
        )
        body = {"op": "add", "a": 2, "b": 3}
        hits: Counter[str] = Counter()
        shot = tmp_path / "traffic.png"
        try:
            async with serving(app, hits) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
                if 60 - time.time() % 60 < 10:  # the key's per-minute budget must not reset mid-burst
                    await asyncio.sleep(60 - time.time() % 60 + 0.2)
                as_user = {"Authorization": f"Bearer {user_secret}"}
                as_ops = {"Authorization": f"Bearer {ops_secret}"}
                statuses = [(await http.post("/v1/tasks/arithmetic", json=body, headers=as_user)).status_code
                            for _ in range(6)]
                assert statuses == [200] * 4 + [429] * 2, (await http.post("/v1/tasks/arithmetic", json=body, headers=as_ops)).text
                for _ in range(2):
                    assert (await http.post("/v1/tasks/arithmetic", json=body, headers=as_ops)).status_code == 200
                bad = await http.post("/v1/tasks/arithmetic", json={"op": "divide"}, headers=as_ops)
                assert bad.status_code == 422
                assert (await http.post("/v1/tasks/arithmetic", json=body)).status_code == 401
                await net.stop_miners()
                down = await http.post("/v1/tasks/arithmetic", json=body, headers=as_ops)
                assert down.status_code == 503, down.text

                data = await until_counted(http, 11)
                dom_bytes, _ = await asyncio.gather(
                    chromium(f"{base}/dashboard", tmp_path / "profile-dom", "--dump-dom"),
                    chromium(f"{base}/dashboard", tmp_path / "profile-shot", f"--screenshot={shot}"),
                )
        finally:
            await host.stop()
            await db.aclose()
        # a clean stop leaves the beats; the crashed process stays listed as silent
        assert {(b.service, b.instance) for b in await beats.read(redis, keys) if b.service != "gateway"} == {
            ("scoring", "crashed-host-7")}

    # correctness is the scorer's verdict: the wrong miner answered (nearly) everything and got nothing right
    rows = {m["uid"]: m for m in data["miners"]}
    honest, wrong = rows[net.uid("honest")], rows[net.uid("wrong")]
    assert wrong["recent_samples"] == 4 and wrong["success_rate"] >= 0.75 and wrong["quality"] == 0.0
    assert honest["recent_samples"] == 4 and honest["quality"] >= 0.75

    # the gateway's answers by status, by key and per minute, summed from what it counted
    traffic = data["traffic"]
    assert traffic["by_status"] == {"200": 6, "401": 1, "422": 1, "429": 2, "503": 1}
    assert traffic["totals"] == {"requests": 11, "ok": 6, "limited": 2, "client_errors": 2, "server_errors": 1}
    assert len(traffic["minutes"]) == 60 and traffic["window_seconds"] == 3600
    assert sum(m["requests"] for m in traffic["minutes"]) == 11 and traffic["minutes"][-1]["requests"] > 0
    by_key = {k["key_id"]: k for k in traffic["keys"]}
    assert set(by_key) == {str(user.id), str(ops.id), None}
    assert {k: by_key[str(user.id)][k] for k in ("requests", "ok", "limited")} == {"requests": 6, "ok": 4, "limited": 2}
    assert {k: by_key[str(ops.id)][k] for k in ("requests", "ok", "client_errors", "server_errors")} == {
        "requests": 4, "ok": 2, "client_errors": 1, "server_errors": 1}
    assert by_key[None]["requests"] == by_key[None]["client_errors"] == 1

    # the two unscored rounds wait in the stream (a job per miner), and a job per answered organic request:
    # neither miner has organic evidence yet, so every organic answer is scored; the services as their
    # heartbeats say
    assert data["scoring"] == {"depth": 4 + 6, "pending": 0, "dead": 0}
    services = {(s["service"], s["instance"]): s for s in data["services"]}
    assert services[("sidecar", "validator-host-1")]["state"] == "up"
    assert services[("scoring", "crashed-host-7")]["state"] == "silent"
    assert services[("scoring", "crashed-host-7")]["seconds_since_beat"] >= 120
    assert [s["state"] for (name, _), s in services.items() if name == "gateway"] == ["up"]

    # the page shows the same figures
    dom = dom_bytes.decode()
    assert 'data-loaded="true"' in dom
    miner_rows = dict(re.findall(r'<tr data-uid="(\d+)"[^>]*>(.*?)</tr>', dom, flags=re.DOTALL))
    assert cell(miner_rows[str(net.uid("wrong"))], "quality") == "0 %"
    assert cell(miner_rows[str(net.uid("honest"))], "quality") == f"{100 * honest['quality']:.0f} %"
    answered = f'title="{100 * wrong["success_rate"]:.0f} % answered of 4 recent samples"'
    assert answered in miner_rows[str(net.uid("wrong"))]
    for card, value in (("req-total", "11"), ("req-limited", "2"), ("req-errors", "1"), ("backlog", "10"),
                        ("services-up", "2 / 3 up")):
        assert re.search(rf'id="{card}"[^>]*>{re.escape(value)}<', dom), card
    assert "200: 6 · 401: 1 · 422: 1 · 429: 2 · 503: 1" in dom
    key_rows = dict(re.findall(r'<tr data-key="([^"]+)"[^>]*>(.*?)</tr>', dom, flags=re.DOTALL))
    assert f">key {user.id}<" in key_rows[str(user.id)] and cell(key_rows[str(user.id)], "limited") == "2"
    assert "dash-user" not in dom and user.prefix not in dom  # a public page: no customer names or key prefixes
    assert cell(key_rows[str(ops.id)], "server") == "1" and cell(key_rows["-"], "client") == "1"
    service_rows = re.findall(r'<tr data-service="([^"]+)"[^>]*>(.*?)</tr>', dom, flags=re.DOTALL)
    assert {(name, "silent" in row) for name, row in service_rows} == {
        ("gateway", False), ("sidecar", False), ("scoring", True)}
    bars = re.findall(r'<rect class="bar (\w+)"[^>]*data-count="(\d+)"', dom)
    per_kind: dict[str, int] = {}
    for kind, n in bars:
        per_kind[kind] = per_kind.get(kind, 0) + int(n)
    assert per_kind == {"ok": 6, "limited": 2, "client": 2, "server": 1}
    width, height, _ = png_pixels(shot.read_bytes())
    assert (width, height) == WINDOW
