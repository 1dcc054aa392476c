"""Build the runnable gateway app from settings: what ``inference-subnet gateway run`` serves, in its own
process (one worker) or in each of ``--workers N`` uvicorn worker processes.

Every piece of state the gateway shares lives in Redis (key limits, quota, scores, traffic, the score
and usage caches are per process and short-lived) or in the database, so N workers behind one listening
socket serve as one gateway. uvicorn's workers import the app by name; the parent hands them its resolved
choices (config file, CLI overrides, and the Redis URL it resolved, so that with no ``REDIS_URL`` every
worker shares the parent's embedded Valkey) through one environment variable, as the miner does. A worker
loads the wallet itself: an encrypted hotkey's password comes from its environment variable then (a
prompt cannot reach a worker).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI

from inference_subnet.settings import Settings, load_settings
from inference_subnet.store.redis import redact

log = logging.getLogger(__name__)

SPEC_ENV = "ISN_GATEWAY_RUN_SPEC"
FACTORY = "inference_subnet.cli.gateway_serve:app_factory"


@dataclass
class GatewaySpec:
    """What a worker needs to rebuild the parent's settings exactly."""

    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_env(cls) -> GatewaySpec:
        raw = os.environ.get(SPEC_ENV)
        if not raw:
            raise RuntimeError(f"{SPEC_ENV} is not set: start the gateway with `inference-subnet gateway run`")
        return cls(**json.loads(raw))

    def settings(self) -> Settings:
        return load_settings(self.config_file, **self.overrides)


def build_app(cfg: Settings, keypair: Any, tasks: dict[str, Any]) -> FastAPI:
    """The gateway app with its Redis client, metagraph source and miner client; its lifespan closes
    them after the app's own shutdown (the request log flushed first)."""
    from inference_subnet.miner.sources import FileMetagraphSource
    from inference_subnet.store.coalescing import coalescing_client
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import connect, resolve_url
    from inference_subnet.validator.client import MinerClient
    from inference_subnet.validator.gateway.app import create_gateway_app
    from inference_subnet.validator.managing import QuotaBook, ScoreBook
    from inference_subnet.validator.sidecar import RedisMetagraphSource

    redis_url = resolve_url(cfg.redis_url)
    redis = connect(redis_url)
    keys = Keys(subnet=cfg.subnet_name, netuid=cfg.chain.netuid, role=keypair.ss58_address)
    metagraph: Any
    if cfg.chain.metagraph_file is not None:
        metagraph = FileMetagraphSource(cfg.chain.metagraph_file)
    else:
        metagraph = RedisMetagraphSource(
            redis, keys, refresh_seconds=min(1.0, cfg.chain.metagraph_refresh_seconds)
        )
    client = MinerClient(keypair, ip_override=cfg.chain.ip_override,
                         max_response_bytes=cfg.validator.max_response_bytes,
                         max_stream_line_bytes=cfg.validator.max_stream_line_bytes,
                         max_error_body_bytes=cfg.validator.max_error_body_bytes)
    # Concurrent requests' key-limit, quota and lease commands share round trips.
    coalescing = coalescing_client(redis)
    books = coalescing or redis
    app = create_gateway_app(
        cfg,
        tasks=tasks,
        redis=redis,
        keys=keys,
        metagraph=metagraph,
        miner_client=client,
        quota_book=QuotaBook(books, keys, cfg.validator.quotas),
        score_book=ScoreBook(books, keys, cfg.validator.scoring),
        exclude_hotkeys=[keypair.ss58_address],
        check_metagraph_age=cfg.chain.metagraph_file is None,  # a development file is as fresh as it is
        coalescer=coalescing.coalescer if coalescing is not None else None,
    )
    log.info(
        "gateway for validator %s on %s:%d serving %s (redis %s, database %s, pid %d)",
        keypair.ss58_address,
        cfg.gateway.host,
        cfg.gateway.port,
        ", ".join(sorted(tasks)),
        redact(redis_url),
        redact(cfg.database_url),
        os.getpid(),
    )
    _close_after(app, [client.aclose, redis.aclose])
    return app


def _close_after(app: FastAPI, closers: list[Callable[[], Awaitable[Any]]]) -> None:
    """Run ``closers`` once the app's own lifespan has ended."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            for close in closers:
                await close()

    app.router.lifespan_context = lifespan


def app_factory() -> FastAPI:
    """uvicorn ``--factory`` entry point of every worker process (``gateway run --workers N``)."""
    from inference_subnet.chain.wallet import keypair_from_settings
    from inference_subnet.lifecycle import follow_parent_process
    from inference_subnet.logs import setup_logging
    from inference_subnet.protocol.task import load_task

    follow_parent_process()  # a worker stops when its supervisor dies
    cfg = GatewaySpec.from_env().settings()
    setup_logging(cfg.log_level, cfg.log_format, split=True)
    keypair = keypair_from_settings(cfg)
    tasks = {t.name: t for t in (load_task(name) for name in cfg.validator.tasks)}
    return build_app(cfg, keypair, tasks)
