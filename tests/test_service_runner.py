"""``run_all``: every service in one process on shared clients, against real miner apps, the in-memory chain
and real Redis; and the same services started one by one as separate hosts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from inference_subnet.settings import load_settings
from inference_subnet.validator.runner import SERVICES, UnknownService, run_all, run_service, validator_keys
from inference_subnet.validator.service import ServiceHost
from test_orchestrator import NETUID, LocalSubnet


def validator_settings(keys: Any, redis_url: str, **validator: Any) -> Any:
    return load_settings(
        subnet_name=keys.subnet, redis_url=redis_url,
        chain={"netuid": NETUID, "ip_override": "127.0.0.1", "metagraph_refresh_seconds": 0.2},
        validator={"round_interval_seconds": 0.05, "heartbeat_seconds": 0.2,
                   "scoring": {"prior_strength": 0, "claim_idle_seconds": 1.0}} | validator,
    )


class Started:
    """``on_start`` callback: keeps the host and tells when it serves."""

    def __init__(self) -> None:
        self.host: ServiceHost | None = None
        self._given = asyncio.Event()

    def __call__(self, host: ServiceHost) -> None:
        self.host = host
        self._given.set()

    async def wait(self) -> ServiceHost:
        await asyncio.wait_for(self._given.wait(), 30)
        assert self.host is not None
        await asyncio.wait_for(self.host.serving.wait(), 10)
        return self.host

    def stop(self) -> None:
        if self.host is not None:
            self.host.request_stop()


async def test_run_all_sets_weights_ranking_the_honest_miner_first(redis, redis_url, keys) -> None:
    async with LocalSubnet(redis, keys, ["honest", "wrong", "garbage"]) as net:
        cfg = validator_settings(keys, redis_url)
        start = Started()
        runner = asyncio.create_task(run_all(cfg, net.validator, chain=net.chain, host="127.0.0.1", port=0,
                                             install_signals=False, on_start=start))
        try:
            host = await start.wait()
            assert host.names == list(SERVICES)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.port}", timeout=10) as http:
                row: dict[int, float] = {}
                for _ in range(100):  # bounded: blocks are produced by the test, rounds every 50 ms
                    net.chain.advance(1)
                    await asyncio.sleep(0.1)
                    row = net.chain.weights(NETUID).get(0, {})
                    if row.get(net.uid("honest")):  # a set may come while a job is half recorded
                        break
                assert row, "no weights were set"
                assert row[net.uid("honest")] == max(row.values())
                assert row.get(net.uid("garbage"), 0) == 0
                ready = await http.get("/ready")
                assert ready.status_code == 200, ready.text
                checks = {c["name"] for c in ready.json()["checks"]}
                assert checks == {"redis", "chain", *SERVICES}
                metrics = (await http.get("/metrics")).text
                for name in ("isn_rounds_total", "isn_miner_requests_total", "isn_quota_decisions_total",
                             "isn_scores_bucket", "isn_weight_sets_total", "isn_scoring_queue_depth",
                             "isn_blocks_since_last_weight_set"):
                    assert name in metrics, name
                metagraph = await http.get("/metagraph")
                assert metagraph.status_code == 200 and len(metagraph.json()["neurons"]) == 4
                vkeys = validator_keys(cfg, net.validator.ss58_address)
                last = json.loads(await redis.get(vkeys.last_weights()))
                assert last["uids"] == [0, 1, 2, 3]
                for name in SERVICES:
                    assert await redis.exists(vkeys.heartbeat(name, host.instance))
        finally:
            start.stop()
            await asyncio.wait_for(runner, 20)
        for name in SERVICES:
            assert not await redis.exists(vkeys.heartbeat(name, host.instance))


async def test_services_run_apart(redis, redis_url, keys) -> None:
    """The same work split over separate hosts (as separate processes would): sidecar, orchestrator,
    scoring and weights meet only in Redis."""
    async with LocalSubnet(redis, keys, ["honest", "wrong"]) as net:
        cfg = validator_settings(keys, redis_url)
        hosts: dict[str, Started] = {}
        runners = []
        for name in ("sidecar", "orchestrator", "scoring", "weights"):
            hosts[name] = Started()
            runners.append(asyncio.create_task(run_service(
                name, cfg, net.validator, chain=net.chain if name in ("sidecar", "weights") else None,
                host="127.0.0.1", port=0, install_signals=False, on_start=hosts[name])))
        try:
            for name in hosts:
                await hosts[name].wait()
            orchestrator_host = await hosts["orchestrator"].wait()
            # a service without a chain client proves readiness by the sidecar's snapshot age
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{orchestrator_host.port}") as http:
                checks = {c["name"]: c for c in (await http.get("/ready")).json()["checks"]}
                assert checks["metagraph"]["ok"] and "chain" not in checks
            row: dict[int, float] = {}
            for _ in range(100):
                net.chain.advance(1)
                await asyncio.sleep(0.1)
                row = net.chain.weights(NETUID).get(0, {})
                if row.get(net.uid("honest")):  # a set may come while a job's samples are half recorded
                    break
            assert row and row[net.uid("honest")] > row.get(net.uid("wrong"), 0)
        finally:
            for found in hosts.values():
                found.stop()
            await asyncio.wait_for(asyncio.gather(*runners), 20)


async def test_unknown_service(redis_url, keys) -> None:
    from bittensor_wallet import Keypair

    with pytest.raises(UnknownService, match="choose from sidecar"):
        await run_service("gateway", validator_settings(keys, redis_url), Keypair.create_from_uri("//X"))
