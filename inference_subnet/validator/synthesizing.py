"""Synthetic challenges: fresh ones from the task, mixed with replays of recorded organic requests.

Fresh synthetic requests alone can be told apart from real traffic (their shape and distribution are in the
task's public code), so a miner could serve them well and real users badly. Replaying recorded organic
requests at a configurable ratio makes the two indistinguishable. Recording is capped per task (newest kept),
can be switched off for privacy (``gateway.reuse_organic``), and a recorded request that no longer validates
(the task's model changed) is skipped, never sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from inference_subnet.protocol.task import Task
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.service import Check, Service, error

log = logging.getLogger(__name__)

Source = Literal["fresh", "organic"]


@dataclass(frozen=True, slots=True)
class SyntheticRequest:
    """A challenge and where it came from (kept for metrics and debugging, never sent to miners)."""

    task: str
    request: BaseModel
    source: Source


class Synthesizer:
    """Makes synthetic requests per task and records organic ones for reuse."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        tasks: Mapping[str, Task],
        *,
        organic_ratio: float = 0.2,
        organic_cap: int = 1000,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= organic_ratio <= 1.0:
            raise ValueError("organic_ratio must be within [0, 1]")
        self.redis = redis
        self.keys = keys
        self.tasks = dict(tasks)
        self.organic_ratio = organic_ratio
        self.organic_cap = organic_cap
        self.rng = rng or random.Random()

    def task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise LookupError(f"task {name!r} is not served by this validator "
                              f"(tasks: {', '.join(sorted(self.tasks))})") from None

    async def request(self, task_name: str) -> SyntheticRequest:
        """A challenge for ``task_name``: a recorded organic request with probability ``organic_ratio``
        (when any is recorded and still valid), else a fresh ``task.synthesize``. Never fails on Redis."""
        task = self.task(task_name)
        if self.organic_ratio > 0 and self.rng.random() < self.organic_ratio:
            replay = await self._organic(task)
            if replay is not None:
                metrics.synthetic_requests.labels(task.name, "organic").inc()
                return SyntheticRequest(task.name, replay, "organic")
        metrics.synthetic_requests.labels(task.name, "fresh").inc()
        # Off the loop: an example may render an image or decode a model to make its challenge. The thread
        # gets its own generator, seeded here, so the sequence stays reproducible from ``self.rng``.
        rng = random.Random(self.rng.getrandbits(64))
        return SyntheticRequest(task.name, await asyncio.to_thread(task.synthesize, rng), "fresh")

    async def _organic(self, task: Task) -> BaseModel | None:
        key = self.keys.organic_samples(task.name)
        try:
            size = await self.redis.llen(key)
            if not size:
                return None
            raw = await self.redis.lindex(key, self.rng.randrange(size))
        except (RedisError, OSError) as exc:
            log.warning("reading recorded organic requests failed, using a fresh one: %s", exc)
            return None
        if raw is None:  # trimmed between LLEN and LINDEX
            return None
        try:
            return task.Request.model_validate_json(raw)
        except ValidationError:
            log.info("skipping a recorded %s request that no longer validates", task.name)
            return None

    async def record_organic(self, task_name: str, request: BaseModel) -> bool:
        """Keep an organic request for reuse (newest first, capped). False when not recorded."""
        task = self.task(task_name)
        if self.organic_cap <= 0 or not isinstance(request, task.Request):
            return False
        return await record_organic(self.redis, self.keys, task.name, request, cap=self.organic_cap)


async def record_organic(
    redis: RedisClient, keys: Keys, task: str, request: BaseModel, *, cap: int = 1000
) -> bool:
    """Record one organic request for reuse as a synthetic challenge; the list keeps the newest ``cap``.

    A function (not only a method) so the gateway can record without building a :class:`Synthesizer`.
    """
    if cap <= 0:
        return False
    key = keys.organic_samples(task)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, request.model_dump_json())
        pipe.ltrim(key, 0, cap - 1)
        await pipe.execute()
    metrics.organic_recorded.labels(task).inc()
    return True


class SynthesizingService(Service):
    """Serves ``GET /synthetic/{task}`` for services in other processes; nothing to loop over."""

    name = "synthesizing"

    def __init__(self, synthesizer: Synthesizer) -> None:
        self.synthesizer = synthesizer

    async def run(self) -> None:
        # Stateless: requests are made on demand. Park until the host stops us.
        await asyncio.Event().wait()

    async def checks(self) -> list[Check]:
        return [Check("synthesizing", bool(self.synthesizer.tasks),
                      f"tasks: {', '.join(sorted(self.synthesizer.tasks)) or 'none'}")]

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/synthetic/{task}")
        async def synthetic(task: str) -> Response:
            try:
                made = await self.synthesizer.request(task)
            except LookupError as exc:
                return error(404, "unknown_task", str(exc))
            return JSONResponse({"task": made.task, "source": made.source,
                                 "request": made.request.model_dump(mode="json")})

        return router
