"""One Redis client for every simulated validator, whose commands go out in as few round trips as possible.

A simulated step asks the same question of Redis for 64 validators at once: hundreds of concurrent score
recordings, quota consumptions and dropout admissions, each a command or a small pipeline of its own. Sent
one by one, every one of them pays a pool checkout, a socket write and a wake-up, and that, not Redis, would
bound how fast the simulation runs. This client queues every command and every non-transactional pipeline
issued during one event-loop turn and sends them together as one pipeline at the start of the next (what the
miner's :class:`~inference_subnet.miner.batching.CommandBatcher` does for single commands). Nothing about the
commands changes: each keeps its own reply and its own error, scripts are the same scripts, and MULTI
transactions go out as they are, on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

Command = tuple[tuple[Any, ...], dict[str, Any]]


class _Coalescer:
    """Queues units (one command, or a pipeline's commands) and sends every queued unit in one pipeline."""

    def __init__(self, inner: aioredis.Redis, max_commands: int, max_in_flight: int) -> None:
        self._inner = inner
        self._max = max_commands
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._queued = 0
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self.commands = 0

    async def submit(self, commands: Sequence[Command]) -> list[Any]:
        """Replies of ``commands`` in order; a command's error is its reply (an exception object)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, future))
        self._queued += len(commands)
        if self._queued >= self._max:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Send what is queued, unless ``max_in_flight`` pipelines are out already: then the queue keeps
        growing and goes out when one of them returns (each pipeline holds a pooled connection)."""
        self._scheduled = False
        if not self._queue or len(self._sending) >= self._max_in_flight:
            return
        batch, self._queue, self._queued = self._queue, [], 0
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        self.round_trips += 1
        pipe = self._inner.pipeline(transaction=False)
        for commands, _ in batch:
            for args, options in commands:
                pipe.execute_command(*args, **options)
                self.commands += 1
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every unit of this batch learns it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for commands, future in batch:
            if not future.done():
                future.set_result(list(replies[at : at + len(commands)]))
            at += len(commands)


class CoalescingRedis(aioredis.Redis):
    """A plain Redis client (sharing ``inner``'s connection pool) that coalesces concurrent commands."""

    def __init__(self, inner: aioredis.Redis, *, max_commands: int = 8192, max_in_flight: int = 8) -> None:
        super().__init__(connection_pool=inner.connection_pool)
        self.inner = inner
        self.coalescer = _Coalescer(inner, max_commands, max_in_flight)
        self._loaded: set[str] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        (reply,) = await self.coalescer.submit([(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        if transaction:  # MULTI/EXEC must stay one block on one connection
            return self.inner.pipeline(transaction=True, shard_hint=shard_hint)
        return _CoalescedPipeline(self)

    async def ensure_scripts(self, scripts: Sequence[Any]) -> None:
        """Load scripts once, before a pipeline refers to them by SHA."""
        for script in scripts:
            if script.sha not in self._loaded:
                await self.inner.script_load(script.script)
                self._loaded.add(script.sha)


class _CoalescedPipeline(Pipeline):
    """A non-transactional pipeline whose commands join the client's next coalesced round trip."""

    def __init__(self, client: CoalescingRedis) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, False, None)
        self._client = client

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = list(self.command_stack)
        scripts = list(self.scripts)
        await self.reset()
        if scripts:
            await self._client.ensure_scripts(scripts)
        if not stack:
            return []
        replies = await self._client.coalescer.submit(stack)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
