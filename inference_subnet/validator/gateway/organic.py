"""What organic traffic gives back to the validator: evidence for scoring, and requests for reuse.

After a request is answered, its attempts go through the score book's organic dropout (a configurable share
is scored, capped per miner and period) and the admitted ones become one scoring job; a share of served
requests (``gateway.reuse_sample_rate``) is recorded for replay as a synthetic challenge unless the privacy
switch (``gateway.reuse_organic``) is off. The replay list keeps only the newest few hundred requests, so
recording every request would only churn Redis.

All of it happens in a background task fed by a bounded queue: Redis round trips for dropout and recording
must not add to the latency a user sees, and a backlog drops work (counted) instead of growing without end.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from inference_subnet.protocol.task import Task
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.gateway.routing import Attempt
from inference_subnet.validator.managing.score_math import Standing, chance
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.scoring import JobResponse, enqueue, job_from_results
from inference_subnet.validator.synthesizing import record_organic

log = logging.getLogger(__name__)


class Admit(Protocol):
    """``ScoreBook.admit``: whether one organic response is scored (``sure``: skip sampling and thinning)."""

    def __call__(
        self, identity: str, task: str, kind: str, rng: random.Random, *, sure: bool = False
    ) -> Awaitable[bool]: ...

NOT_SCORED_STATUSES = frozenset({429})
"""A miner that answers 429 to a borrow attempt (beyond this validator's guaranteed pace) is protecting the
capacity it declared: routing moves on, scoring does not punish it. A 429 within the guaranteed share is a
failure, scored as one."""


@dataclass(frozen=True, slots=True)
class OrganicItem:
    task: Task
    request: BaseModel
    attempts: tuple[Attempt, ...]


@dataclass
class FeedStats:
    recorded: int = 0
    jobs: int = 0
    admitted: int = 0
    dropped: int = 0
    errors: int = 0


def scorable(attempts: Sequence[Attempt]) -> list[Attempt]:
    """Attempts that are evidence about a miner (answers and failures, not capacity refusals)."""
    return [a for a in attempts if not (a.status in NOT_SCORED_STATUSES and a.borrowed)]


class OrganicFeed:
    """Background scoring admission and reuse recording of organic requests."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        admit: Admit,
        standings: Callable[[str], Mapping[str, Standing]] | None = None,
        reuse: bool,
        reuse_cap: int,
        reuse_rate: float = 1.0,
        max_queue: int = 10_000,
        rng: random.Random | None = None,
        volumes: VolumeBook | None = None,
    ):
        self._redis = redis
        self._keys = keys
        self._admit = admit
        self._standings = standings
        """task -> identity -> the standing the router chose by: miners short of organic evidence get every
        organic answer scored (within the cap)."""
        self._reuse = reuse
        self._reuse_cap = reuse_cap
        self._reuse_rate = reuse_rate
        self._max_queue = max_queue
        self._rng = rng or random.Random()
        self._volumes = volumes
        self._queue: asyncio.Queue[OrganicItem | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = FeedStats()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="organic-feed")

    def submit(self, task: Task, request: BaseModel, attempts: Sequence[Attempt]) -> bool:
        """Queue one answered (or failed) organic request; never waits. False when dropped."""
        if self._closing or self._queue.qsize() >= self._max_queue:
            self.stats.dropped += 1
            return False
        self._queue.put_nowait(OrganicItem(task, request, tuple(attempts)))
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Process what is queued (within ``timeout``), then stop."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("organic feed: %d items left unprocessed at shutdown", self._queue.qsize())

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            try:
                await self.process(item)
            except Exception as exc:  # Redis hiccup: lose this item's evidence, keep serving
                self.stats.errors += 1
                log.warning("organic feed: %s", exc)

    async def process(self, item: OrganicItem) -> None:
        name = item.task.name
        served = any(a.outcome == "ok" for a in item.attempts)
        if self._volumes is not None and served:  # the miner's verified volume: answers users got
            served = {a.identity: 1 for a in item.attempts if a.outcome == "ok"}
            await self._volumes.count(served, name, "organic")
        if (
            self._reuse
            and served
            and chance(self._reuse_rate, self._rng)
            and await record_organic(self._redis, self._keys, name, item.request, cap=self._reuse_cap)
        ):
            self.stats.recorded += 1
        admitted: list[JobResponse] = []
        known = self._standings(name) if self._standings is not None else {}
        for attempt in scorable(item.attempts):
            standing = known.get(attempt.identity)
            sure = standing is not None and standing.needs_organic_evidence
            if await self._admit(attempt.identity, name, "organic", self._rng, sure=sure):
                admitted.append(
                    JobResponse(
                        identity=attempt.identity,
                        uid=attempt.uid,
                        response=attempt.response.model_dump_json() if attempt.response is not None else None,
                        latency=attempt.latency,
                        outcome=attempt.outcome,
                    )
                )
                metrics.responses_admitted.labels(name, "organic").inc()
        if admitted:
            await enqueue(self._redis, self._keys, job_from_results(name, "organic", item.request, admitted))
            self.stats.jobs += 1
            self.stats.admitted += len(admitted)
