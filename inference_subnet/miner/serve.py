"""Build a runnable miner app from settings: what ``inference-subnet miner`` serves under uvicorn.

uvicorn's worker processes import the app by name, so the parent hands its resolved choices (config file,
CLI overrides, and the Redis URL it resolved) to them through one environment variable. The parent resolves
the Redis URL itself so that every worker shares one nonce store: with no ``REDIS_URL`` the parent's
embedded Valkey serves them all, instead of one private (and useless for replay protection) server each.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI

from inference_subnet.chain.refresh import RefreshingMetagraphSource
from inference_subnet.chain.types import ChainError, MetagraphSource
from inference_subnet.chain.wallet import keypair_from_settings
from inference_subnet.logs import setup_logging
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.sources import source_from_settings
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import load_task
from inference_subnet.settings import Settings, load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect

log = logging.getLogger(__name__)

SPEC_ENV = "ISN_MINER_SPEC"
FACTORY = "inference_subnet.miner.serve:app_factory"


@dataclass
class MinerSpec:
    """What a worker needs to rebuild the parent's settings exactly."""

    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    behaviour: str = "honest"
    started_ns: int | None = None
    """When the parent started (ns since the epoch): the replay store of every worker dates from it, so a
    request signed after the miner came up is never refused as older than a worker's own start."""

    def to_env(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_env(cls) -> MinerSpec:
        raw = os.environ.get(SPEC_ENV)
        if not raw:
            raise RuntimeError(f"{SPEC_ENV} is not set: start the miner with `inference-subnet miner`")
        return cls(**json.loads(raw))

    def settings(self) -> Settings:
        return load_settings(self.config_file, **self.overrides)


def miner_keys(settings: Settings, hotkey: str) -> Keys:
    """The Redis key space of one miner hotkey on one subnet."""
    return Keys(subnet=settings.subnet_name, netuid=settings.chain.netuid, role=f"miner:{hotkey}")


def settle_heap() -> None:
    """Move everything alive at start-up (the imported framework, models, the wallet) out of the
    collector's reach before serving.

    Without it every full collection walks those hundreds of thousands of objects while the event loop
    stands still: measured on a loaded miner, one full collection held every request in flight for 90 ms,
    which was most of its p99. Frozen, a full collection walks only what serving created (a few ms).
    Objects made later are collected as usual; nothing frozen is ever freed, and nothing needs to be.
    """
    gc.collect()
    gc.freeze()


def build_app(spec: MinerSpec) -> FastAPI:
    """The miner app with the wallet, tasks, metagraph source and Redis named by ``spec``."""
    settings = spec.settings()
    keypair = keypair_from_settings(settings)
    tasks = [load_task(name) for name in settings.miner.tasks]
    handlers = {
        task.name: load_handler(task, {"behaviour": spec.behaviour}, settings.miner.handlers.get(task.name))
        for task in tasks
    }
    source = source_from_settings(settings)
    client = connect(settings.redis_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if isinstance(source, RefreshingMetagraphSource):
            source.start()
        registration = asyncio.create_task(warn_if_unregistered(source, keypair.ss58_address),
                                           name="miner:registration-check")
        settle_heap()
        try:
            yield
        finally:
            registration.cancel()
            if isinstance(source, RefreshingMetagraphSource):
                await source.stop()
                await source.client.close()
            await client.aclose()

    return create_miner_app(
        tasks,
        handlers,
        settings,
        keypair=keypair,
        metagraph=source,
        redis=client,
        keys=miner_keys(settings, keypair.ss58_address),
        validate_responses=spec.behaviour != "garbage",
        lifespan=lifespan,
        started_ns=spec.started_ns,
    )


async def warn_if_unregistered(source: MetagraphSource, hotkey: str, timeout: float = 60.0) -> bool:
    """Log a WARNING when ``hotkey`` is not in the metagraph: validators then send this miner nothing,
    and nothing else would tell the operator why. Runs beside start-up, never delaying it; returns
    whether the hotkey was found (``True`` when the metagraph could not be read in ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            metagraph = await source.current()
    except (ChainError, TimeoutError) as exc:
        log.info("could not read the metagraph to check this miner's registration: %s",
                 exc or type(exc).__name__)
        return True
    if hotkey in metagraph.by_hotkey:
        return True
    log.warning("miner hotkey %s is not registered on subnet %d (metagraph at block %d): validators will "
                "send it no requests until it registers", hotkey, metagraph.netuid, metagraph.block)
    return False


def app_factory() -> FastAPI:
    """uvicorn ``--factory`` entry point for every worker process."""
    from inference_subnet.lifecycle import follow_parent_process

    follow_parent_process()  # a worker (``--workers N``) stops when its supervisor dies
    spec = MinerSpec.from_env()
    settings = spec.settings()
    setup_logging(settings.log_level, settings.log_format)
    return build_app(spec)
