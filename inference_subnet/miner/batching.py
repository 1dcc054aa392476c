"""Automatic pipelining of the miner's Redis commands.

Under load a miner verifies many requests in the same event-loop turn, and each then needs one Redis
command (the nonce ``SET NX``, the quota script). Sent one by one, every command pays a pool checkout, a
socket write and a wake-up of its own; that, not the signature check, was most of what authentication
cost. The batcher queues the commands issued during one loop turn and sends them as one pipeline at the
start of the next, so the cost is shared while a lone request still goes out immediately on its own.
Pipelines are not transactions: each command keeps its own result, and one command's error is that
command's alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inference_subnet.store.redis import RedisClient


class CommandBatcher:
    """Send the commands of concurrent callers as one pipeline per event-loop turn."""

    def __init__(self, client: RedisClient, *, max_batch: int = 512) -> None:
        self._client = client
        self._max_batch = max_batch
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Pipelines sent so far (for tests and benchmarks)."""
        self.commands = 0

    async def execute(self, *args: Any) -> Any:
        """Run one command (``"SET", key, value, "NX", ...``) and return its parsed reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, future))
        if len(self._pending) >= self._max_batch:
            self._flush_now()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        return await future

    def _flush_now(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.commands += len(batch)
        try:
            if len(batch) == 1:
                results: list[Any] = [await self._client.execute_command(*batch[0][0])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for args, _ in batch:
                    pipe.execute_command(*args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every caller of this batch learns it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results):
            if future.done():  # the caller went away (client disconnected); the command still ran
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
