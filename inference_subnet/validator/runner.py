"""Wiring: the validator's services built from settings, run together in one process or one at a time.

Every service talks to the others only through Redis (and the chain), so the same objects serve both
layouts: ``run_all`` shares one Redis pool, one chain connection and one miner client between all services
of a small validator; ``run_service`` starts a single one, to scale a service out on its own machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from bittensor_wallet import Keypair

from inference_subnet.chain.types import ChainClient, ChainError
from inference_subnet.protocol.task import Task, load_task
from inference_subnet.settings import Settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, connect, redact, resolve_url
from inference_subnet.protocol.challenge import share_secret
from inference_subnet.validator.canaries import PenalisedScores, canary_book
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.managing import QuotaBook, ScoreBook
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.orchestrator import Orchestrator
from inference_subnet.validator.scoring import ScoringWorkers
from inference_subnet.validator.service import Service, ServiceHost, instance_id
from inference_subnet.validator.sidecar import MetagraphSync, RedisMetagraphSource
from inference_subnet.validator.synthesizing import Synthesizer, SynthesizingService
from inference_subnet.validator.weights import WeightSetter

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("sidecar", "synthesizing", "scoring", "orchestrator", "weights")
"""Every service ``validator run`` starts, in start order (the sidecar first: the others read its copy)."""
NEEDS_CHAIN = frozenset({"sidecar", "weights"})
MEMORY = "memory"
"""``chain.network`` value for the in-memory chain (a demo subnet with this validator registered)."""


class UnknownService(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")


def validator_keys(settings: Settings, hotkey: str) -> Keys:
    """The key space of one validator hotkey on one subnet (the gateway uses the same)."""
    return Keys(subnet=settings.subnet_name, netuid=settings.chain.netuid, role=hotkey)


def open_chain(settings: Settings, keypair: Keypair) -> ChainClient:
    """The chain client named by ``chain.network``: the in-memory demo chain or a subtensor node."""
    if settings.chain.network == MEMORY:
        from inference_subnet.chain.memory import MemoryChainClient

        chain = MemoryChainClient()
        chain.create_subnet(settings.chain.netuid)
        chain.register(settings.chain.netuid, keypair, keypair, stake=1000.0, validator_permit=True)
        log.info("in-memory chain: subnet %d with this validator registered (no miners)", settings.chain.netuid)
        return chain
    from inference_subnet.chain.substrate import SubstrateChainClient

    return SubstrateChainClient.from_settings(settings.chain)


@dataclass
class Parts:
    """What the services of one process share."""

    settings: Settings
    keypair: Keypair
    redis: RedisClient
    keys: Keys
    tasks: dict[str, Task]
    chain: ChainClient | None
    metagraph: RedisMetagraphSource
    quotas: QuotaBook
    scores: ScoreBook
    _client: MinerClient | None = None
    _executor: Executor | None = None
    _owned: list[Any] = field(default_factory=list)

    @property
    def client(self) -> MinerClient:
        if self._client is None:
            v = self.settings.validator
            self._client = MinerClient(self.keypair, ip_override=self.settings.chain.ip_override,
                                       max_connections=max(16, v.max_concurrency),
                                       max_response_bytes=v.max_response_bytes,
                                       max_stream_line_bytes=v.max_stream_line_bytes,
                                       max_error_body_bytes=v.max_error_body_bytes)
        return self._client

    @property
    def executor(self) -> Executor | None:
        n = self.settings.validator.scoring.process_workers
        if n and self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"))
        return self._executor

    def need_chain(self) -> ChainClient:
        if self.chain is None:
            raise RuntimeError("this service needs a chain client")
        return self.chain

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        for owned in reversed(self._owned):
            with contextlib.suppress(Exception):
                await owned()


async def open_parts(
    settings: Settings,
    keypair: Keypair,
    *,
    names: Sequence[str] = SERVICES,
    chain: ChainClient | None = None,
    redis: RedisClient | None = None,
) -> Parts:
    """Open what ``names`` need: Redis always, the chain only for the sidecar and the weight setter."""
    owned: list[Any] = []
    if redis is None:
        redis = connect(settings.redis_url)
        owned.append(redis.aclose)
    if chain is None and NEEDS_CHAIN & set(names):
        chain = open_chain(settings, keypair)
        owned.append(chain.close)
    keys = validator_keys(settings, keypair.ss58_address)
    tasks = {t.name: t for t in (load_task(name) for name in settings.validator.tasks)}
    v = settings.validator
    return Parts(
        settings=settings, keypair=keypair, redis=redis, keys=keys, tasks=tasks, chain=chain,
        metagraph=RedisMetagraphSource(redis, keys, refresh_seconds=min(1.0, settings.chain.metagraph_refresh_seconds)),
        quotas=QuotaBook(redis, keys, v.quotas), scores=ScoreBook(redis, keys, v.scoring), _owned=owned,
    )


def make_service(name: str, parts: Parts, *, instance: str | None = None) -> Service:
    """One service built on shared parts."""
    s = parts.settings
    v = s.validator
    if name == "sidecar":
        return MetagraphSync(
            parts.need_chain(), parts.redis, parts.keys, netuid=s.chain.netuid, mechid=s.chain.mechid,
            interval=s.chain.metagraph_refresh_seconds, on_change=parts.scores.prune,
            max_age=v.max_metagraph_age_seconds,
        )
    if name == "synthesizing":
        return SynthesizingService(_synthesizer(parts))
    if name == "scoring":
        return ScoringWorkers(
            parts.redis, parts.keys, parts.tasks, parts.scores, workers=v.scoring.workers,
            consumer_prefix=instance or instance_id(), claim_idle=v.scoring.claim_idle_seconds,
            max_attempts=v.scoring.max_job_attempts, read_batch=v.scoring.read_batch, executor=parts.executor,
        )
    if name == "orchestrator":
        return Orchestrator(
            redis=parts.redis, keys=parts.keys, metagraph=parts.metagraph, quotas=parts.quotas,
            scores=parts.scores, client=parts.client, synthesizer=_synthesizer(parts), tasks=parts.tasks,
            my_hotkey=parts.keypair.ss58_address, miners_per_round=v.miners_per_round,
            max_concurrency=v.max_concurrency, round_interval=v.round_interval_seconds,
            capacity_refresh=v.capacity_refresh_seconds, volumes=_volumes(parts),
            canaries=canary_book(parts.redis, parts.keys, s),
        )
    if name == "weights":
        return WeightSetter(
            parts.need_chain(), parts.redis, parts.keys, parts.keypair, _weighed_scores(parts), parts.metagraph,
            {t.name: t.timeout for t in parts.tasks.values()}, netuid=s.chain.netuid, mechid=s.chain.mechid,
            interval=v.weights_interval_blocks, retries=v.weights_retries,
            backoff=v.weights_retry_backoff_seconds, max_blocks_without=v.max_blocks_without_weights,
            attempts_kept=v.weight_attempts_kept, poll_seconds=s.chain.metagraph_refresh_seconds,
            volumes=_volumes(parts), quotas=parts.quotas, weight_power=v.scoring.weight_power,
            volume_min_score=v.scoring.volume_min_score,
        )
    raise UnknownService(name)


def _volumes(parts: Parts) -> VolumeBook | None:
    """The served-volume counters, when weights pay by volume (``scoring.volume_weighting``)."""
    v = parts.settings.validator
    if not v.scoring.volume_weighting:
        return None
    return VolumeBook(parts.redis, parts.keys, epoch_seconds=v.quotas.epoch_seconds)


def _weighed_scores(parts: Parts) -> Any:
    """The scores weights are set from: miners on a canary bench count 0 (when canaries are on)."""
    book = canary_book(parts.redis, parts.keys, parts.settings)
    return parts.scores if book is None else PenalisedScores(parts.scores, book)


def _synthesizer(parts: Parts) -> Synthesizer:
    v = parts.settings.validator
    return Synthesizer(parts.redis, parts.keys, parts.tasks, organic_ratio=v.organic_reuse_ratio,
                       organic_cap=v.organic_samples_cap, rng=random.Random())


async def run_services(
    names: Sequence[str],
    settings: Settings,
    keypair: Keypair,
    *,
    chain: ChainClient | None = None,
    redis: RedisClient | None = None,
    host: str | None = None,
    port: int | None = None,
    install_signals: bool = True,
    on_start: Callable[[ServiceHost], Any] | None = None,
) -> None:
    """Run ``names`` in this process until SIGTERM/SIGINT (or ``host.request_stop()``), then stop cleanly.

    ``on_start`` receives the :class:`ServiceHost` before it serves (tests and embedders stop it with it).
    """
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise UnknownService(unknown[0])
    ordered = [n for n in SERVICES if n in names]
    parts = await open_parts(settings, keypair, names=ordered, chain=chain, redis=redis)
    try:
        await share_secret(parts.redis, parts.keys, settings)
        instance = instance_id()
        services = [make_service(name, parts, instance=instance) for name in ordered]
        if "sidecar" in ordered:
            await _first_sync(services[0])
        v = settings.validator
        service_host = ServiceHost(
            services, redis=parts.redis, keys=parts.keys,
            chain_probe=parts.chain.block if parts.chain is not None else None,
            metagraph=parts.metagraph if parts.chain is None else None,
            heartbeat_seconds=v.heartbeat_seconds, check_timeout=v.ready_timeout_seconds,
            max_metagraph_age=v.max_metagraph_age_seconds, instance=instance, http=settings.http,
        )
        if on_start is not None:
            on_start(service_host)
        default_port = v.sidecar_port if ordered == ["sidecar"] else v.metrics_port
        log.info("validator %s: services %s, redis %s, tasks %s", parts.keypair.ss58_address,
                 ", ".join(ordered), redact(resolve_url(settings.redis_url)), ", ".join(parts.tasks))
        await service_host.serve(host or v.service_host, default_port if port is None else port,
                                 install_signals=install_signals)
    finally:
        await parts.close()


async def _first_sync(sidecar: Service) -> None:
    """Publish a metagraph before the other services start, so the first round has one (best effort:
    the sidecar's loop keeps trying when the chain is not there yet)."""
    assert isinstance(sidecar, MetagraphSync)
    try:
        await asyncio.wait_for(sidecar.sync_once(), timeout=30)
    except (ChainError, OSError, asyncio.TimeoutError) as exc:
        log.warning("first metagraph read failed (the sidecar keeps trying): %s", exc)


async def run_all(settings: Settings, keypair: Keypair, **kwargs: Any) -> None:
    """Every validator service in one process, sharing one Redis pool, chain connection and miner client."""
    await run_services(SERVICES, settings, keypair, **kwargs)


async def run_service(name: str, settings: Settings, keypair: Keypair, **kwargs: Any) -> None:
    """One validator service in this process."""
    await run_services([name], settings, keypair, **kwargs)
