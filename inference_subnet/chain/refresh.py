"""A ``MetagraphSource`` backed by the chain: refreshed in the background, last good snapshot kept.

A miner checks every request against the metagraph; it must not wait for the chain on the request path,
and it must not stop serving because a node restarts. So ``current()`` returns the newest snapshot
without I/O, a background task refreshes it every ``interval`` seconds, and a failed refresh keeps the old
snapshot (its age, ``age_seconds``, grows and is what a health check should alert on). The loop never
gives up: when the chain comes back, the next refresh succeeds and the age drops to zero by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Self

from inference_subnet.chain.types import ChainClient, ChainError, Metagraph

__all__ = ["RefreshingMetagraphSource"]

log = logging.getLogger(__name__)


class RefreshingMetagraphSource:
    """Implements :class:`~inference_subnet.chain.types.MetagraphSource` on a :class:`ChainClient`."""

    def __init__(
        self,
        client: ChainClient,
        netuid: int,
        interval: float,
        mechid: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.client = client
        self.netuid = netuid
        self.mechid = mechid
        self.interval = interval
        self._clock = clock
        self._snapshot: Metagraph | None = None
        self._refreshed_at: float | None = None
        self._attempted_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._first_read = asyncio.Lock()
        self.last_error: ChainError | None = None
        """The error of the latest refresh, ``None`` once one succeeds again."""
        self.failures = 0
        """Consecutive failed refreshes."""
        self._stopping = False

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the background refresh (idempotent)."""
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"metagraph-{self.netuid}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True  # also ends the loop should a library swallow the cancellation
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def snapshot(self) -> Metagraph | None:
        return self._snapshot

    @property
    def age_seconds(self) -> float:
        """Seconds since the last successful refresh; infinite before the first one."""
        if self._refreshed_at is None:
            return math.inf
        return max(0.0, self._clock() - self._refreshed_at)

    async def current(self) -> Metagraph:
        """The newest snapshot; before the first one exists, a refresh now (its error if it fails)."""
        if self._snapshot is not None:
            return self._snapshot
        async with self._first_read:  # concurrent first callers share one read instead of queueing many
            if self._snapshot is not None:
                return self._snapshot
            try:
                return await self.refresh()
            finally:
                self.start()

    async def refresh(self) -> Metagraph:
        """Read the chain now. On failure the previous snapshot stays and the error is raised."""
        self._attempted_at = self._clock()
        try:
            graph = await self.client.metagraph(self.netuid, self.mechid)
        except ChainError as exc:
            if self.failures == 0:
                log.warning("metagraph refresh of netuid %s failed, serving the last snapshot: %s", self.netuid, exc)
            self.failures += 1
            self.last_error = exc
            async with self._changed:
                self._changed.notify_all()
            raise
        if self.failures:
            log.info("metagraph refresh of netuid %s recovered after %d failures", self.netuid, self.failures)
        self._snapshot = graph
        self._refreshed_at = self._clock()
        self.failures = 0
        self.last_error = None
        async with self._changed:
            self._changed.notify_all()
        return graph

    async def wait_refreshed(self, *, after: float | None = None) -> Metagraph:
        """Wait for a successful refresh later than ``after`` (a ``clock()`` reading; default: now)."""
        mark = self._clock() if after is None else after
        async with self._changed:
            await self._changed.wait_for(lambda: self._refreshed_at is not None and self._refreshed_at > mark)
        assert self._snapshot is not None
        return self._snapshot

    async def wait_failures(self, count: int = 1) -> ChainError:
        """Wait until ``count`` refreshes in a row have failed; the latest error (health checks, tests)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.failures >= count)
        assert self.last_error is not None
        return self.last_error

    async def _loop(self) -> None:
        while not self._stopping:
            if self._attempted_at is not None:  # one refresh per interval, counted from the last attempt
                await asyncio.sleep(max(0.0, self._attempted_at + self.interval - self._clock()))
            try:
                await self.refresh()
            except ChainError:
                pass  # logged in refresh(); the snapshot stays
            except Exception:  # a bug must not silently end the refresh of a serving miner
                log.exception("metagraph refresh of netuid %s crashed; retrying", self.netuid)
