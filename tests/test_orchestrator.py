"""The synthetic loop end to end in one process: in-memory chain, real Redis, real miner apps on 127.0.0.1
(honest and faulty), the sidecar, the orchestrator, the scoring workers and the weight setter."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from bittensor_wallet import Keypair

from conftest import free_port
from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import Metagraph
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.serve import miner_keys
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import Handler
from inference_subnet.settings import QuotaSettings, ScoringSettings, Settings, load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.managing.quotas import QuotaBook
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.orchestrator import Orchestrator
from inference_subnet.validator.scoring import ScoringWorkers
from inference_subnet.validator.service import cancel_all, listen_socket
from inference_subnet.validator.sidecar import MetagraphSync, RedisMetagraphSource
from inference_subnet.validator.synthesizing import Synthesizer
from inference_subnet.validator.weights import WeightSetter

NETUID = 1


class QuickArithmetic(ArithmeticTask):
    """The arithmetic task with a short deadline, so a slow miner costs a test half a second."""

    timeout = 0.5


TASK = QuickArithmetic()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalSubnet:
    """A subnet on the in-memory chain with one validator and miner apps served on 127.0.0.1.

    Axons are stored on chain with public-looking IPs (the chain refuses loopback) and reached through
    ``ip_override='127.0.0.1'``, as on a local subtensor.
    """

    def __init__(self, redis: Any, keys: Keys, behaviours: list[str], *, capacity: int = 1000,
                 down: int = 0, delay: float = 0.0, scoring: ScoringSettings | None = None,
                 quotas: QuotaSettings | None = None, handler_wrapper: Any = None) -> None:
        self.redis = redis
        self.keys = keys
        self.behaviours = behaviours
        self.capacity = capacity
        self.down = down
        self.delay = delay
        self.handler_wrapper = handler_wrapper
        self.scoring = scoring or ScoringSettings(prior_strength=0)
        self.quotas = quotas or QuotaSettings(synthetic_fraction=1.0)
        self.chain = MemoryChainClient()
        self.chain.create_subnet(NETUID, tempo=10, weights_rate_limit=2)
        tag = keys.subnet
        self.validator = Keypair.create_from_uri(f"//{tag}Validator")
        self.chain.register(NETUID, self.validator, Keypair.create_from_uri("//Owner"), stake=1000,
                            validator_permit=True)
        self.miners: list[tuple[str, Keypair, int]] = []
        for i, behaviour in enumerate(behaviours + ["down"] * down):
            hotkey = Keypair.create_from_uri(f"//{tag}Miner{i}")
            self.chain.register(NETUID, hotkey, Keypair.create_from_uri("//Owner"))
            self.miners.append((behaviour, hotkey, free_port()))
        self._servers: list[tuple[_Server, asyncio.Task[None]]] = []
        self.settings: Settings = load_settings(subnet_name=tag, miner={"capacity": {TASK.name: capacity}},
                                                validator={"quotas": self.quotas.model_dump()})

    def uid(self, behaviour: str) -> int:
        return 1 + [b for b, _, _ in self.miners].index(behaviour)

    async def metagraph(self) -> Metagraph:
        return await self.chain.metagraph(NETUID)

    async def __aenter__(self) -> LocalSubnet:
        for i, (behaviour, hotkey, port) in enumerate(self.miners):
            await self.chain.serve_axon(hotkey, NETUID, f"10.0.{i // 250}.{i % 250 + 1}", port)
        metagraph = await self.metagraph()
        for behaviour, hotkey, port in self.miners:
            if behaviour != "down":
                await self._serve(behaviour, hotkey, port, metagraph)
        await MetagraphSync(self.chain, self.redis, self.keys, netuid=NETUID).sync_once()
        return self

    async def _serve(self, behaviour: str, hotkey: Keypair, port: int, metagraph: Metagraph) -> None:
        handler: Handler = load_handler(TASK, {"behaviour": behaviour, "delay": self.delay, "seed": port})
        if self.handler_wrapper is not None:
            handler = self.handler_wrapper(handler)
        app = create_miner_app(
            [TASK], {TASK.name: handler}, self.settings, keypair=hotkey,
            metagraph=StaticMetagraphSource(metagraph), redis=self.redis,
            keys=miner_keys(self.settings, hotkey.ss58_address), validate_responses=behaviour != "garbage",
        )
        server = _Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[listen_socket("127.0.0.1", port)]))
        while not server.started:
            assert not task.done(), "miner server exited"
            await asyncio.sleep(0.01)
        self._servers.append((server, task))

    async def __aexit__(self, *exc: object) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self._servers), return_exceptions=True)
        await self.chain.close()

    def validator_parts(self, *, miners_per_round: int = 16, max_concurrency: int = 64,
                        client: Any = None, rng_seed: int = 1) -> dict[str, Any]:
        source = RedisMetagraphSource(self.redis, self.keys, refresh_seconds=0)
        quotas = QuotaBook(self.redis, self.keys, self.quotas)
        scores = ScoreBook(self.redis, self.keys, self.scoring)
        client = client or MinerClient(self.validator, ip_override="127.0.0.1", max_connections=64)
        synth = Synthesizer(self.redis, self.keys, {TASK.name: TASK}, organic_ratio=0.0,
                            rng=random.Random(rng_seed))
        orchestrator = Orchestrator(
            redis=self.redis, keys=self.keys, metagraph=source, quotas=quotas, scores=scores, client=client,
            synthesizer=synth, tasks={TASK.name: TASK}, my_hotkey=self.validator.ss58_address,
            miners_per_round=miners_per_round, max_concurrency=max_concurrency, round_interval=0.01,
            rng=random.Random(rng_seed),
        )
        workers = ScoringWorkers(self.redis, self.keys, {TASK.name: TASK}, scores, workers=2, claim_idle=1.0,
                                 block_seconds=0.05)
        weights = WeightSetter(self.chain, self.redis, self.keys, self.validator, scores, source,
                               {TASK.name: TASK.timeout}, netuid=NETUID, backoff=0.01, poll_seconds=0.2)
        return {"source": source, "quotas": quotas, "scores": scores, "client": client, "synth": synth,
                "orchestrator": orchestrator, "workers": workers, "weights": weights}


@contextlib.asynccontextmanager
async def running(*services: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield
    finally:
        assert not await cancel_all(tasks, timeout=10), "a service did not stop"


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
        assert report.admitted == 6 and report.job_id is not None
        for _ in range(5):
            await orch.round()
        async with running(workers):
            assert await workers.wait_processed(6, timeout=20)
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


async def test_quota_bounds_synthetic_traffic_and_sampling_covers_every_miner(redis, keys) -> None:
    quotas = QuotaSettings(synthetic_fraction=0.3, min_share=0.01)
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


@pytest.fixture(autouse=True)
def _quiet_uvicorn() -> None:
    import logging

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
