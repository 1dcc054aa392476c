"""``inference-subnet gateway run --workers 2``: both worker processes serve, and ``/metrics`` (whichever
worker answers it) counts every worker's requests.

Real processes on 127.0.0.1: two honest miners, the gateway's supervisor and its two workers, one Redis.
Each request goes on a fresh connection, so the kernel hands them to either worker.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from test_gateway_helpers import LocalSubnet, free_port, seed_evidence, wait_until_serving

from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.sql import Database
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.managing import QuotaBook, ScoreBook

ROUNDS = 40
"""Rounds of concurrent fresh-connection requests at most before both workers must have answered."""
PER_ROUND = 8


@pytest.fixture(scope="module")
async def subnet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[LocalSubnet]:
    net = LocalSubnet(tmp_path_factory.mktemp("subnet"), redis_url)
    net.setup(["honest", "honest"], tasks=("arithmetic",))
    net.start_miners()
    try:
        await net.wait_ready()
        yield net
    finally:
        net.stop()


def _pids(exposition: str) -> set[str]:
    """The workers that have answered a scrape: each sets its own request-log gauge (one series a pid)."""
    return set(re.findall(r'^isn_gateway_request_log_pending\{pid="(\d+)"\}', exposition, re.M))


def _count(exposition: str, route: str, status: str) -> float:
    pattern = (
        rf'^isn_http_requests_total\{{component="gateway",method="(?:GET|POST)",route="{re.escape(route)}",'
        rf'status="{status}"\}} (\S+)$'
    )
    return sum(float(v) for v in re.findall(pattern, exposition, re.M))


async def test_two_workers_both_serve_and_metrics_sum_them(
    subnet: LocalSubnet, redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    db = Database(db_url)
    await db.upgrade()
    _, plain = await ApiKeyStore(db).create("workers", rate_per_minute=10_000, max_concurrent=100)
    await db.aclose()
    validator_keys = Keys(subnet=keys.subnet, netuid=subnet.netuid, role=subnet.validator.ss58_address)
    settings = load_settings()
    quota = QuotaBook(redis, validator_keys, settings.validator.quotas)
    await quota.set_stakes(subnet.metagraph(), subnet.validator.ss58_address)
    miners = [subnet.metagraph().by_uid[m.uid].identity for m in subnet.miners]
    for identity in miners:
        await quota.set_capacity(identity, {"arithmetic": 10_000})
    await seed_evidence(ScoreBook(redis, validator_keys, settings.validator.scoring), miners, ["arithmetic"])

    port = free_port()
    args = [
        sys.executable, "-m", "inference_subnet.cli.main", "gateway", "run", "--port", str(port),
        "--host", "127.0.0.1", "--metagraph-file", str(subnet.metagraph_file),
        "--wallet-path", str(subnet.wallet_path), "--wallet-name", "validator", "--wallet-hotkey", "default",
        "--task", "arithmetic", "--workers", "2",
    ]
    log_file = tmp_path / "gateway.log"
    with open(log_file, "ab") as log:
        env = subnet.env(DATABASE_URL=db_url, ISN_SUBNET_NAME=keys.subnet, ISN_CHAIN__NETUID=str(subnet.netuid))
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(
            wait_until_serving, f"{base}/ready", proc, lambda: log_file.read_text()[-3000:], 60.0
        )

        async def fresh(method: str, path: str, **kwargs: object) -> httpx.Response:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:  # one connection per request
                return await http.request(method, path, **kwargs)  # type: ignore[arg-type]

        served = 0
        seen: set[str] = set()
        for _ in range(ROUNDS):
            answers = await asyncio.gather(*(
                fresh("POST", "/v1/tasks/arithmetic", json={"op": "add", "a": served + i, "b": 1},
                      headers={"Authorization": f"Bearer {plain}"})
                for i in range(PER_ROUND)
            ))
            for i, answer in enumerate(answers):
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"result": served + i + 1}
            served += PER_ROUND
            scrapes = await asyncio.gather(*(fresh("GET", "/metrics") for _ in range(PER_ROUND)))
            for scrape in scrapes:
                assert scrape.status_code == 200
                seen |= _pids(scrape.text)
            if len(seen) >= 2:
                break
        assert len(seen) == 2, f"only worker(s) {seen} answered {ROUNDS * PER_ROUND} fresh connections"
        # Whichever worker answers, the counts are every worker's.
        for _ in range(4):
            exposition = (await fresh("GET", "/metrics")).text
            assert _count(exposition, "/v1/tasks/arithmetic", "200") == served
            assert 'isn_gateway_upstream_requests_total{' in exposition
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_file.read_text()[-3000:]
