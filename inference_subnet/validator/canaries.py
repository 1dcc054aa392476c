"""Canaries: fresh synthetic challenges planted so that a copycat forwarding one to this validator's gateway
is caught.

A copycat has no model: it answers a challenge by sending it as an organic request to a public gateway, which
spends a real miner's capacity, and returns that answer. The orchestrator records a digest of every fresh
challenge it sends (one per miner, so the digest names the miner it went to) with a short expiry; the
gateway looks up every organic request's digest, and a hit means the miner the challenge went to forwarded
it. The gateway then refuses the request as if no miner were free (the copycat cannot tell a caught forward
from a busy gateway, and no good miner's capacity is spent), and the miner is *caught*: its answer to the
challenge scores 0, and for ``validator.canary_bench_seconds`` it gets no organic traffic and no weight from
this validator. An honest miner never sends a validator's challenge into that validator's gateway, so a
hit is proof, not a statistic.

Only fresh challenges are planted: a challenge that replays a recorded organic request is a copy of a
user's request, which the user may send again. A canary is only as specific as the request space: a task
whose challenges can collide with users' requests (a tiny arithmetic space) should keep canaries off or its
challenges varied enough. Gateways of other validators cannot recognise the challenge (they never saw it):
a copycat that forwards only to other validators' gateways is caught by none of them, only by the
answer-digest overlap of tasks whose honest answers differ (see ``docs/mechanism.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from inference_subnet.settings import Settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics

IGNORED_FIELDS = frozenset({"id"})
"""Top-level request fields left out of the digest: a challenge id can be dropped or redrawn by whoever
forwards the request (the gateway gives an organic request without one a random id), the content cannot."""


def request_digest(request: BaseModel | Mapping[str, Any]) -> str:
    """The digest of a request's content: canonical JSON (sorted keys, no spaces) without
    :data:`IGNORED_FIELDS`, SHA-256 in hex. The same for the request as the orchestrator sent it and as
    the gateway parsed it back from a forwarded body. Pure."""
    data = request.model_dump(mode="json") if isinstance(request, BaseModel) else dict(request)
    content = {k: v for k, v in data.items() if k not in IGNORED_FIELDS}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def canary_book(redis: RedisClient, keys: Keys, settings: Settings) -> CanaryBook | None:
    """The canary book of a validator's settings; None when ``validator.canaries`` is off."""
    v = settings.validator
    if not v.canaries:
        return None
    return CanaryBook(redis, keys, ttl_seconds=v.canary_ttl_seconds, bench_seconds=v.canary_bench_seconds)


class CanaryBook:
    """Planted challenges and caught miners of one validator, in Redis (keys in :class:`Keys`)."""

    def __init__(self, redis: RedisClient, keys: Keys, *, ttl_seconds: float, bench_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.bench_ms = int(bench_seconds * 1000)

    async def plant(self, task: str, sent: Iterable[tuple[BaseModel, str]]) -> int:
        """Record ``(request, identity)`` pairs of fresh challenges about to be sent; returns how many."""
        pipe = self._redis.pipeline(transaction=False)
        n = 0
        for request, identity in sent:
            pipe.set(self._keys.canary(task, request_digest(request)), identity, px=self.ttl_ms)
            n += 1
        if n:
            await pipe.execute()
            metrics.canaries_planted.labels(task).inc(n)
        return n

    async def check(self, task: str, request: BaseModel) -> str | None:
        """The identity caught when ``request`` (an organic one) is a live challenge, else None. A hit
        benches that identity (unless the bench is 0 s); the canary stays live, so a retried forward is refused
        too."""
        identity = await self._redis.get(self._keys.canary(task, request_digest(request)))
        if identity is None:
            return None
        caught = identity.decode() if isinstance(identity, bytes) else str(identity)
        if self.bench_ms > 0:
            await self._redis.set(self._keys.canary_caught(caught), task, px=self.bench_ms)
        return caught

    async def caught(self, identities: Sequence[str]) -> set[str]:
        """Those of ``identities`` on a canary bench now (one GET each, pipelined: they live in any slot)."""
        if not identities:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            pipe.exists(self._keys.canary_caught(identity))
        flags = await pipe.execute()
        return {i for i, flag in zip(identities, flags) if flag}


class PenalisedScores:
    """A score book as the weight setter reads it, with miners on a canary bench at 0."""

    def __init__(self, scores: Any, canaries: CanaryBook) -> None:
        self._scores = scores
        self._canaries = canaries

    async def aggregates(
        self, identities: Sequence[str], tasks: Mapping[str, float] | Sequence[str]
    ) -> dict[str, float]:
        out = await self._scores.aggregates(identities, tasks)
        for identity in await self._canaries.caught(list(out)):
            out[identity] = 0.0
        return out
