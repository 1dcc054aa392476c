"""The metagraph sidecar: one process reads the chain, every other service reads Redis.

Reading the metagraph is the heaviest routine chain call a validator makes; doing it once per block in one
place (instead of in every service and gateway worker) keeps chain load flat however far the validator scales
out. The snapshot is ``Metagraph.to_json()`` under ``keys.metagraph()``, a freshness stamp beside it, and a
message on ``keys.metagraph_updates()`` for whoever wants to react at once. When the set of miner identities
changes (a deregistration, a new hotkey on a uid) the sidecar asks the score book to prune, so a new hotkey
starts from zero and departed miners leave no state behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Response
from redis.exceptions import RedisError

from inference_subnet.chain.types import ChainClient, ChainError, Metagraph
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.service import Check, Service, cancel_all, error, watch_blocks

log = logging.getLogger(__name__)

PruneHook = Callable[[Metagraph], Awaitable[Any]]


def identities_digest(metagraph: Metagraph) -> str:
    """Fingerprint of who holds which uid: changes exactly when pruning may be needed."""
    text = "\n".join(f"{n.uid}:{n.identity}" for n in sorted(metagraph.neurons, key=lambda n: n.uid))
    return hashlib.sha256(text.encode()).hexdigest()


class MetagraphSync(Service):
    """Keeps ``keys.metagraph()`` fresh: each new block (or each interval when blocks are quiet)."""

    name = "sidecar"

    def __init__(
        self,
        chain: ChainClient,
        redis: RedisClient,
        keys: Keys,
        *,
        netuid: int,
        mechid: int = 0,
        interval: float = 12.0,
        follow_blocks: bool = True,
        on_change: PruneHook | None = None,
        max_age: float = 300.0,
    ) -> None:
        self.chain = chain
        self.redis = redis
        self.keys = keys
        self.netuid = netuid
        self.mechid = mechid
        self.interval = interval
        self.follow_blocks = follow_blocks
        self.on_change = on_change
        self.max_age = max_age
        self.current: Metagraph | None = None
        self.last_sync: float | None = None
        self._pruned_digest: str | None = None
        self._new_block = asyncio.Event()

    async def sync_once(self) -> Metagraph:
        """Read the chain, publish the snapshot, prune if identities changed. Raises on chain errors."""
        try:
            metagraph = await self.chain.metagraph(self.netuid, self.mechid)
        except Exception:
            metrics.metagraph_syncs.labels("chain_error").inc()
            raise
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.metagraph(), metagraph.to_json())
            pipe.set(self.keys.metagraph_synced(), repr(now))
            await pipe.execute()
        self.current = metagraph
        self.last_sync = now
        metrics.metagraph_syncs.labels("ok").inc()
        metrics.metagraph_block.set(metagraph.block)
        metrics.metagraph_neurons.set(len(metagraph.neurons))
        digest = identities_digest(metagraph)
        if digest != self._pruned_digest and self.on_change is not None:
            await self.on_change(metagraph)
            metrics.metagraph_pruned.inc()
            log.info("metagraph changed at block %d (%d neurons): scores pruned", metagraph.block,
                     len(metagraph.neurons), extra={"service": self.name, "block": metagraph.block})
        self._pruned_digest = digest
        # Announced last, on its own (a cluster pipeline refuses PUBLISH): a subscriber told of a block
        # finds its snapshot stored and the state of departed miners already pruned.
        await self.redis.publish(self.keys.metagraph_updates(), str(metagraph.block))
        return metagraph

    async def run(self) -> None:
        watcher = asyncio.create_task(watch_blocks(self.chain, self._new_block)) if self.follow_blocks else None
        try:
            while True:
                self._new_block.clear()  # before reading: a block produced during the read wakes us again
                try:
                    await self.sync_once()
                except (ChainError, RedisError, OSError, asyncio.TimeoutError) as exc:
                    metrics.service_errors.labels(self.name, type(exc).__name__).inc()
                    log.warning("metagraph sync failed (keeping the last snapshot): %s", exc,
                                extra={"service": self.name})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._new_block.wait(), timeout=self.interval)
        finally:
            if watcher is not None:
                await cancel_all([watcher], timeout=5)

    async def checks(self) -> list[Check]:
        if self.last_sync is None:
            return [Check("sidecar", False, "no metagraph read from the chain yet")]
        age = time.time() - self.last_sync
        assert self.current is not None
        detail = f"block {self.current.block}, {len(self.current.neurons)} neurons, {age:.0f}s old"
        return [Check("sidecar", age <= self.max_age, detail)]

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/metagraph")
        async def metagraph() -> Response:
            """The snapshot as stored in Redis (so every sidecar replica answers the same)."""
            raw: bytes | None = None
            try:
                raw = await self.redis.get(self.keys.metagraph())
            except (RedisError, OSError):
                if self.current is not None:
                    raw = self.current.to_json().encode()
            if raw is None:
                return error(503, "no_metagraph", "the sidecar has not read the metagraph yet")
            return Response(raw, media_type="application/json")

        return router


class RedisMetagraphSource:
    """A :class:`MetagraphSource` over the sidecar's copy in Redis, for every other service.

    The snapshot is re-read only when the sidecar's stamp changed (a cheap GET at most every
    ``refresh_seconds``), and the last good snapshot is kept through Redis outages.
    """

    def __init__(self, redis: RedisClient, keys: Keys, *, refresh_seconds: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.refresh_seconds = refresh_seconds
        self._snapshot: Metagraph | None = None
        self._stamp: bytes | None = None
        self._checked = -math.inf
        self._lock = asyncio.Lock()

    async def current(self) -> Metagraph:
        if self._snapshot is not None and time.monotonic() - self._checked < self.refresh_seconds:
            return self._snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() - self._checked < self.refresh_seconds:
                return self._snapshot
            try:
                await self._refresh()
            except (RedisError, OSError, ValueError, KeyError, TypeError) as exc:
                if self._snapshot is None:
                    raise ChainError(f"no metagraph available from the sidecar: {exc}") from exc
                log.warning("metagraph refresh from Redis failed (keeping block %d): %s",
                            self._snapshot.block, exc)
            if self._snapshot is None:
                raise ChainError("the sidecar has not written a metagraph to Redis yet")
            return self._snapshot

    async def _refresh(self) -> None:
        stamp = await self.redis.get(self.keys.metagraph_synced())
        self._checked = time.monotonic()
        if stamp is not None and stamp == self._stamp and self._snapshot is not None:
            return
        raw = await self.redis.get(self.keys.metagraph())
        if raw is None:
            return
        self._snapshot = Metagraph.from_json(raw)
        self._stamp = stamp

    @property
    def age_seconds(self) -> float:
        """Seconds since the sidecar last read the chain successfully (infinite when unknown)."""
        if self._stamp is None:
            return math.inf
        return max(0.0, time.time() - float(self._stamp))
