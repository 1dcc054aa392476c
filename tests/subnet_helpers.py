"""A subnet in one process for tests: the in-memory chain, real miner apps (honest and faulty) served by
uvicorn on 127.0.0.1, and the validator's parts built on real Redis (imported by tests; no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from bittensor_wallet import Keypair

from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import Metagraph
from inference_subnet.localnet.ports import free_port
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
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.canaries import CanaryBook
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


class Server(uvicorn.Server):
    """uvicorn in the test's event loop, leaving the process's signal handlers alone."""

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
        self._servers: list[tuple[Server, asyncio.Task[None]]] = []
        self._clients: list[MinerClient] = []
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
        server = Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[listen_socket("127.0.0.1", port)]))
        while not server.started:
            assert not task.done(), "miner server exited"
            await asyncio.sleep(0.01)
        self._servers.append((server, task))

    async def stop_miners(self) -> None:
        """Every miner goes down (its port refuses connections from now on)."""
        for server, _ in self._servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self._servers), return_exceptions=True)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_miners()
        for client in self._clients:
            await client.aclose()
        await self.chain.close()

    def validator_parts(self, *, miners_per_round: int = 16, max_concurrency: int = 64,
                        client: Any = None, rng_seed: int = 1) -> dict[str, Any]:
        source = RedisMetagraphSource(self.redis, self.keys, refresh_seconds=0)
        quotas = QuotaBook(self.redis, self.keys, self.quotas)
        scores = ScoreBook(self.redis, self.keys, self.scoring)
        volumes = VolumeBook(self.redis, self.keys, epoch_seconds=self.quotas.epoch_seconds)
        if client is None:
            client = MinerClient(self.validator, ip_override="127.0.0.1", max_connections=64)
            self._clients.append(client)
        canaries = CanaryBook(self.redis, self.keys, ttl_seconds=120.0, bench_seconds=600.0)
        synth = Synthesizer(self.redis, self.keys, {TASK.name: TASK}, organic_ratio=0.0,
                            rng=random.Random(rng_seed))
        orchestrator = Orchestrator(
            redis=self.redis, keys=self.keys, metagraph=source, quotas=quotas, scores=scores, client=client,
            synthesizer=synth, tasks={TASK.name: TASK}, my_hotkey=self.validator.ss58_address,
            miners_per_round=miners_per_round, max_concurrency=max_concurrency, round_interval=0.01,
            rng=random.Random(rng_seed), volumes=volumes, canaries=canaries,
        )
        workers = ScoringWorkers(self.redis, self.keys, {TASK.name: TASK}, scores, workers=2, claim_idle=1.0,
                                 block_seconds=0.05)
        weights = WeightSetter(self.chain, self.redis, self.keys, self.validator, scores, source,
                               {TASK.name: TASK.timeout}, netuid=NETUID, backoff=0.01, poll_seconds=0.2,
                               volumes=volumes, quotas=quotas, weight_power=self.scoring.weight_power,
                               volume_min_score=self.scoring.volume_min_score)
        return {"source": source, "quotas": quotas, "scores": scores, "volumes": volumes, "client": client,
                "synth": synth,
                "orchestrator": orchestrator, "workers": workers, "weights": weights,
                "canaries": canaries}


@contextlib.asynccontextmanager
async def running(*services: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield
    finally:
        assert not await cancel_all(tasks, timeout=10), "a service did not stop"
