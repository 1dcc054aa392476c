"""The service shell: /health, /ready, /metrics, heartbeats, supervision and clean shutdown, on real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from inference_subnet.chain.types import Metagraph
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.store.redis import connect
from inference_subnet.validator import metrics
from inference_subnet.validator.service import Check, Service, ServiceHost
from conftest import free_port


class Flaky(Service):
    """Fails its first ``failures`` runs, then parks; counts runs and closes."""

    name = "flaky"

    def __init__(self, failures: int = 0, healthy: bool = True) -> None:
        self.failures = failures
        self.healthy = healthy
        self.runs = 0
        self.closed = False
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        self.running.set()
        await asyncio.Event().wait()

    async def checks(self) -> list[Check]:
        return [Check("flaky", self.healthy, "fine" if self.healthy else "broken on purpose")]

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/flaky")
        async def flaky() -> dict[str, int]:
            return {"runs": self.runs}

        return router

    async def close(self) -> None:
        self.closed = True


class Hanging(Service):
    """A service whose readiness check never answers."""

    name = "hanging"

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def checks(self) -> list[Check]:
        await asyncio.Event().wait()
        return []


async def serving(host: ServiceHost) -> AsyncIterator[tuple[asyncio.Task[None], httpx.AsyncClient]]:
    task = asyncio.create_task(host.serve("127.0.0.1", 0, install_signals=False))
    await asyncio.wait_for(host.serving.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.port}", timeout=10) as client:
        yield task, client
    host.request_stop()
    await asyncio.wait_for(task, 15)


@pytest.fixture
async def flaky_host(redis, keys) -> AsyncIterator[tuple[ServiceHost, Flaky, httpx.AsyncClient]]:
    service = Flaky(failures=2)
    host = ServiceHost([service], redis=redis, keys=keys, heartbeat_seconds=0.2,
                       restart_backoff=(0.01, 0.05), instance="test-instance")
    async for _, client in serving(host):
        yield host, service, client


async def test_health_ready_metrics_and_routes(flaky_host, redis, keys) -> None:
    host, service, client = flaky_host
    before = metrics.REGISTRY.get_sample_value("isn_service_restarts_total", {"service": "flaky"}) or 0
    await asyncio.wait_for(service.running.wait(), 5)  # restarted twice after failing
    assert service.runs == 3
    health = await client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["services"] == {"flaky": True}
    assert "boom 2" in body["last_errors"]["flaky"]
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert {c["name"] for c in ready.json()["checks"]} == {"redis", "flaky"}
    assert (await client.get("/flaky")).json() == {"runs": 3}
    text = (await client.get("/metrics")).text
    assert 'isn_service_up{service="flaky"} 1.0' in text
    after = metrics.REGISTRY.get_sample_value("isn_service_restarts_total", {"service": "flaky"})
    assert after is not None and after >= 2 and before <= after
    beat = await redis.get(keys.heartbeat("flaky", "test-instance"))
    assert beat is not None and json.loads(beat)["instance"] == "test-instance"
    assert 0 < await redis.ttl(keys.heartbeat("flaky", "test-instance")) <= 1


async def test_stop_closes_services_and_drops_heartbeat(redis, keys) -> None:
    service = Flaky()
    host = ServiceHost([service], redis=redis, keys=keys, heartbeat_seconds=0.2, instance="stopper")
    task = asyncio.create_task(host.serve("127.0.0.1", 0, install_signals=False))
    await asyncio.wait_for(host.serving.wait(), 10)
    await asyncio.wait_for(service.running.wait(), 5)
    assert await redis.exists(keys.heartbeat("flaky", "stopper"))
    host.request_stop()
    await asyncio.wait_for(task, 15)
    assert service.closed
    assert not await redis.exists(keys.heartbeat("flaky", "stopper"))
    assert metrics.REGISTRY.get_sample_value("isn_service_up", {"service": "flaky"}) == 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{host.port}/health")


async def test_ready_fails_with_reasons(keys) -> None:
    """Redis unreachable, a stale metagraph, a failing and a hanging check: 503 naming each, in bounded time."""
    dead_redis = connect(f"redis://127.0.0.1:{free_port()}/0")
    stale = StaticMetagraphSource(Metagraph(netuid=1, block=5, neurons=()))
    service = Flaky(healthy=False)
    host = ServiceHost([service, Hanging()], redis=dead_redis, keys=keys, metagraph=stale,
                       max_metagraph_age=-1.0, check_timeout=0.5)
    try:
        async for _, client in serving(host):
            started = asyncio.get_running_loop().time()
            ready = await client.get("/ready")
            elapsed = asyncio.get_running_loop().time() - started
            assert ready.status_code == 503
            checks = {c["name"]: c for c in ready.json()["checks"]}
            assert not checks["redis"]["ok"]
            assert not checks["metagraph"]["ok"] and "old" in checks["metagraph"]["detail"]
            assert not checks["flaky"]["ok"] and checks["flaky"]["detail"] == "broken on purpose"
            assert not checks["hanging"]["ok"] and "TimeoutError" in checks["hanging"]["detail"]
            assert elapsed < 5
            # liveness is not readiness: the process is alive and its loops run
            assert (await client.get("/health")).status_code == 200
    finally:
        await dead_redis.aclose()


async def test_chain_probe_in_ready(redis, keys) -> None:
    async def probe() -> int:
        return 1234

    host = ServiceHost([Flaky()], redis=redis, keys=keys, chain_probe=probe)
    async for _, client in serving(host):
        checks = {c["name"]: c for c in (await client.get("/ready")).json()["checks"]}
        assert checks["chain"] == {"name": "chain", "ok": True, "detail": "block 1234"}


async def test_port_in_use_is_a_clear_error(redis, keys) -> None:
    first = ServiceHost([Flaky()], redis=redis, keys=keys)
    async for _, _client in serving(first):
        service = Flaky()
        second = ServiceHost([service], redis=redis, keys=keys)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            await asyncio.wait_for(second.serve("127.0.0.1", first.port or 0, install_signals=False), 10)
        assert service.runs == 0  # nothing started
