"""Automatic pipelining: the Redis commands of concurrent callers share one round trip per event-loop turn.

Under load many callers need Redis in the same loop turn: a miner verifying a burst of requests (one nonce
``SET NX`` and one quota script each), a gateway admitting and releasing API-key leases, a simulation asking
the same question for 64 validators at once. Sent one by one, every command pays a pool checkout, a socket
write and a wake-up of its own, and that, not Redis, is what bounds the caller. A :class:`Coalescer` queues
what is issued during one loop turn and sends it as one non-transactional pipeline at the start of the
next, so the cost is shared while a lone command still goes out at once, on its own.

Nothing about the commands changes: each keeps its own reply and its own error (a pipeline is not a
transaction), scripts are the same scripts. A round trip whose connection fails is sent again on a fresh
connection by the client underneath (:func:`inference_subnet.store.redis.retry_policy`: a Redis restart
closes every pooled connection), and only when those retries run out is the error reported to every
caller whose command was in it. A script the server forgot (NOSCRIPT after a restart) is loaded again and
only its calls are re-sent, since NOSCRIPT means they did not run. :class:`CoalescingRedis` puts a
coalescer behind the ordinary plain-Redis client interface, so code written for a client (the quota and
score books) coalesces without a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

from inference_subnet.store.redis import RedisClient

Command: TypeAlias = tuple[tuple[Any, ...], dict[str, Any]]
"""One command as redis-py queues it: its arguments, and the options its reply is parsed with."""
_Unit: TypeAlias = tuple[Sequence[Command], asyncio.Future[list[Any]]]
"""What one caller queued (one command, or a pipeline's commands) and where its replies go."""


class Coalescer:
    """Send the commands of concurrent callers in one round trip per event-loop turn.

    Works on a plain or a cluster client (a cluster pipeline routes each command to its node).
    ``max_commands`` queued commands go out without waiting for the next turn; ``max_in_flight`` (``None``:
    no bound) caps the round trips out at once, since each holds a pooled connection: beyond it the queue
    keeps growing and goes out when one returns.
    """

    def __init__(
        self, client: RedisClient, *, max_commands: int = 512, max_in_flight: int | None = None
    ) -> None:
        self._client = client
        self._max_commands = max_commands
        self._max_in_flight = max_in_flight
        self._queue: list[_Unit] = []
        self._queued = 0
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        """Round trips sent so far (for health output, tests and benchmarks)."""
        self.commands = 0
        """Commands sent so far."""

    async def execute(self, *args: Any, **options: Any) -> Any:
        """Run one command (``"SET", key, value, "NX", ...``): its parsed reply, or its error raised."""
        (reply,) = await self.submit([(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered script (``client.register_script``) by its SHA in the next round trip. A Redis
        that lost its script cache (restarted, flushed) gets it loaded again by the script's own call."""
        (reply,) = await self.submit([(("EVALSHA", script.sha, len(keys), *keys, *args), {})])
        if isinstance(reply, NoScriptError):
            return await script(keys=keys, args=args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def script_many(
        self, script: Any, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """:meth:`script` once per ``(keys, args)``, in order, as one unit of the next round trip: a caller
        holding a batch pays one future and one wake-up for all of it instead of one per call. Calls
        answered NOSCRIPT did not run: the script is loaded and only they are sent again. The first other
        error is raised."""
        commands: list[Command] = [
            (("EVALSHA", script.sha, len(keys), *keys, *args), {}) for keys, args in calls
        ]
        replies = await self.submit(commands) if commands else []
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:
            await self._client.script_load(script.script)  # same SHA1: the commands stay valid
            again = await self.submit([commands[i] for i in lost])
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def submit(self, commands: Sequence[Command]) -> list[Any]:
        """Replies of ``commands`` in order; a command's error is its reply (an exception object)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, future))
        self._queued += len(commands)
        if self._queued >= self._max_commands:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        if self._max_in_flight is not None and len(self._sending) >= self._max_in_flight:
            return  # _sent flushes again when a round trip returns
        batch, self._queue, self._queued = self._queue, [], 0
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[_Unit]) -> None:
        commands = [command for unit, _ in batch for command in unit]
        self.round_trips += 1
        self.commands += len(commands)
        try:
            replies = await self._round_trip(commands)
        except BaseException as exc:  # the connection failed: every caller of this batch learns it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for unit, future in batch:
            if not future.done():  # a done one is a caller that went away; its commands still ran
                future.set_result(list(replies[at : at + len(unit)]))
            at += len(unit)

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        """Replies of ``commands``, command errors included as replies, as a pipeline returns them."""
        if len(commands) == 1:  # alone: a plain command, without a pipeline's bookkeeping
            args, options = commands[0]
            try:
                return [await self._client.execute_command(*args, **options)]
            except ResponseError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for args, options in commands:
            pipe.execute_command(*args, **options)
        return list(await pipe.execute(raise_on_error=False))


class CoalescingRedis(aioredis.Redis):
    """A plain Redis client (sharing ``inner``'s connection pool) whose commands and non-transactional
    pipelines join a :class:`Coalescer`; MULTI transactions go out as they are, on their own."""

    def __init__(self, inner: aioredis.Redis, *, max_commands: int = 8192, max_in_flight: int = 8) -> None:
        super().__init__(connection_pool=inner.connection_pool)
        self.inner = inner
        self.coalescer = Coalescer(inner, max_commands=max_commands, max_in_flight=max_in_flight)
        self._loaded: set[str] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self.coalescer.execute(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        if transaction:  # MULTI/EXEC must stay one block on one connection
            return self.inner.pipeline(transaction=True, shard_hint=shard_hint)
        return _CoalescedPipeline(self)

    async def ensure_scripts(self, scripts: Sequence[Any], *, reload: bool = False) -> None:
        """Load scripts once, before a pipeline refers to them by SHA (again with ``reload``: the server
        answered NOSCRIPT, so it restarted or was flushed since)."""
        for script in scripts:
            if reload or script.sha not in self._loaded:
                await self.inner.script_load(script.script)
                self._loaded.add(script.sha)


def coalescing_client(client: RedisClient) -> CoalescingRedis | None:
    """A :class:`CoalescingRedis` in front of a plain client's pool; ``None`` for a cluster client, which has
    no single pool to stand in front of (its users then coalesce on their own, or not at all)."""
    return CoalescingRedis(client) if isinstance(client, aioredis.Redis) else None


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
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if scripts and lost:  # a restarted or flushed Redis forgot them; NOSCRIPT means it did not run
            await self._client.ensure_scripts(scripts, reload=True)
            again = await self._client.coalescer.submit([stack[i] for i in lost])
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
