"""The validator dashboard: one static page and the JSON it polls, built from what the validator keeps.

Everything shown is either public chain data (the metagraph, the weights this validator set) or the
validator's own bookkeeping (scores, quota use, weight attempts, the gateway's answer counts by status and
API key id, the scoring backlog, which services beat), so the page needs no API key (and shows no key names
or prefixes: they name the operator's customers); the gateway's ``dashboard``
setting turns it off. Nothing here is invented: a miner's behaviour is unknown to a validator, so the page
shows only what was measured (answer quality, latencies, successes) and what was decided (weights). A
miner's "correct" column is the mean quality the task's scorer gave its recent answers, not whether it
answered: a miner that answers every request wrongly shows 100 % answered and 0 % correct.

The page is a single HTML file with inline CSS and JS (no CDN, no build step) served with a
Content-Security-Policy that allows exactly its own inline script and fetches to this origin. The JSON is
built at most once per :data:`BUILD_TTL_SECONDS` whatever the number of open pages, because every build
reads each miner's score history.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Protocol

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from inference_subnet.chain.types import ChainError, Metagraph, MetagraphSource
from inference_subnet.protocol.quota_math import epoch_end
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import ErrorBody
from inference_subnet.settings import Settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.store.sql import Database, RequestLog, utcnow
from inference_subnet.validator import beats
from inference_subnet.validator.gateway.traffic import FLUSH_SECONDS, TrafficSummary, read_traffic
from inference_subnet.validator.managing.quotas import QuotaBook, QuotaStatus
from inference_subnet.validator.managing.score_math import Sample
from inference_subnet.validator.scoring import queue_state

log = logging.getLogger(__name__)

RECENT_SAMPLES = 20
"""Samples per miner and task behind the latency and success columns: recent enough to show a change."""
ATTEMPTS_SHOWN = 10
SERVED_WINDOW_SECONDS = 900.0
"""The request log is counted over this window (an index range on ``ts``, not the whole table)."""
SERVED_TTL_SECONDS = 5.0
BUILD_TTL_SECONDS = 1.0


class Aggregates(Protocol):
    """``managing.ScoreBook`` as the dashboard reads it."""

    async def aggregates(
        self, identities: Sequence[str], tasks: Mapping[str, float]
    ) -> Mapping[str, float]: ...


# -- the JSON ------------------------------------------------------------------------------------------


class TaskQuota(BaseModel):
    """This validator's share of one miner for one task in the current quota epoch."""

    share: int
    synthetic_limit: int
    used: int
    used_synthetic: int
    used_organic: int
    left: int
    latency_ms: float | None = Field(description="Median latency of the recent answered samples.")
    samples: int = Field(description="Recent samples behind the latency figure.")


class MinerRow(BaseModel):
    uid: int
    hotkey: str
    hotkey_short: str
    identity: str = Field(description="Hotkey with registration block: the key of its scores and quotas.")
    stake: float
    validator_permit: bool
    is_self: bool = Field(description="This validator's own uid.")
    serving: bool = Field(description="An axon is published on chain.")
    score: float = Field(description="Aggregate score (ScoreBook.aggregates) over the gateway's tasks.")
    weight: float | None = Field(description="Weight given to this uid in the last successful set.")
    latency_ms: float | None = Field(description="Median latency of the recent answered samples.")
    success_rate: float | None = Field(description="Share of the recent samples that were answered.")
    quality: float | None = Field(
        description="Mean quality the task's scorer gave the recent samples (0 for no answer): how correct "
                    "its answers are, whatever their HTTP status."
    )
    recent_samples: int
    organic_routed: int = Field(description="Organic requests routed to it this quota epoch.")
    organic_served: int | None = Field(description="Organic requests it served (HTTP 200) in the window.")
    quota: dict[str, TaskQuota]


class Attempt(BaseModel):
    """One weight-set attempt as the weight setter recorded it."""

    block: int
    outcome: str
    path: str | None = None
    uids: int
    digest: str = ""
    error: str | None = None
    ready_at_block: int | None = None
    extrinsic_hash: str | None = None
    ts: float | None = None


class LastWeights(BaseModel):
    block: int
    ts: float | None = None
    path: str | None = None
    digest: str = ""
    extrinsic_hash: str | None = None
    uids: int
    nonzero: int


class ScoringBacklog(BaseModel):
    depth: int = Field(description="Jobs in the scoring stream, new and delivered, not yet acknowledged.")
    pending: int = Field(description="Jobs delivered to a worker, not yet acknowledged.")
    dead: int = Field(description="Jobs set aside after too many failed attempts.")


class ServiceState(BaseModel):
    service: str
    instance: str = Field(description="The process: host, pid and a random suffix.")
    state: str = Field(description="`up` while it beats, `silent` once it missed its heartbeats.")
    seconds_since_beat: float


class DashboardData(BaseModel):
    generated_at: float
    netuid: int
    validator: str
    tasks: list[str]
    block: int | None = Field(description="Newest block known: the metagraph's or a later weight attempt's.")
    metagraph_block: int | None
    metagraph_age_seconds: float | None
    quota_epoch: int
    epoch_seconds: float
    epoch_seconds_left: float
    served_window_seconds: float
    miners: list[MinerRow]
    last_weights: LastWeights | None
    blocks_since_weights: int | None = Field(description="Blocks since the last successful weight set.")
    attempts: list[Attempt] = Field(description="The latest weight-set attempts, newest first.")
    traffic: TrafficSummary = Field(description="The gateway's answers per minute and per API key (by id, as "
                                                "`gateway keys list` shows it) over the last hour, every "
                                                "gateway process summed.")
    scoring: ScoringBacklog
    services: list[ServiceState] = Field(description="Every service and gateway process, by last heartbeat.")
    notes: list[str] = Field(description="What could not be read, in words.")


# -- pure helpers ----------------------------------------------------------------------------------------


def short_hotkey(hotkey: str) -> str:
    return hotkey if len(hotkey) <= 12 else f"{hotkey[:6]}…{hotkey[-4:]}"


def finite(value: float) -> float | None:
    """JSON has no infinity: an unknown age is ``null``."""
    return value if math.isfinite(value) else None


def median_latency_ms(samples: Sequence[Sample]) -> float | None:
    """Median over answered samples only: a timeout's latency is the deadline, not the miner's speed."""
    answered = [s.latency for s in samples if s.ok]
    return statistics.median(answered) * 1000.0 if answered else None


def success_rate(samples: Sequence[Sample]) -> float | None:
    return sum(s.ok for s in samples) / len(samples) if samples else None


def mean_quality(samples: Sequence[Sample]) -> float | None:
    """The scorer's verdict on the answers: a failure's score is 0 already."""
    return sum(s.score for s in samples) / len(samples) if samples else None


def blocks_since(current: int | None, last: int | None) -> int | None:
    return None if current is None or last is None else max(0, current - last)


def parse_attempt(raw: bytes | str) -> Attempt:
    data = json.loads(raw)
    return Attempt(
        block=int(data["block"]),
        outcome=str(data["outcome"]),
        path=data.get("path"),
        uids=len(data.get("uids") or ()),
        digest=data.get("digest") or "",
        error=data.get("error"),
        ready_at_block=data.get("ready_at_block"),
        extrinsic_hash=data.get("extrinsic_hash"),
        ts=data.get("ts"),
    )


def parse_last_weights(raw: bytes | str) -> tuple[LastWeights, dict[int, float]]:
    """The summary of the last successful set, and uid -> weight."""
    data = json.loads(raw)
    weights = {int(u): float(w) for u, w in zip(data["uids"], data["weights"], strict=True)}
    summary = LastWeights(
        block=int(data["block"]),
        ts=data.get("ts"),
        path=data.get("path"),
        digest=data.get("digest") or "",
        extrinsic_hash=data.get("extrinsic_hash"),
        uids=len(weights),
        nonzero=sum(1 for w in weights.values() if w > 0),
    )
    return summary, weights


# -- reading Redis ---------------------------------------------------------------------------------------


class DashboardSource:
    """Builds :class:`DashboardData` from Redis (scores, quotas, weights), the metagraph source and the
    request log. One build serves every page polling within :data:`BUILD_TTL_SECONDS`.

    Quotas are read through a :class:`QuotaBook` of its own with the validator's quota settings: reading
    needs only the key names and the epoch, which every process of the validator derives the same way.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tasks: Mapping[str, Task],
        redis: RedisClient,
        keys: Keys,
        metagraph: MetagraphSource,
        scores: Aggregates,
        db: Database | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.latency_references = {name: float(task.timeout) for name, task in sorted(tasks.items())}
        self.redis = redis
        self.keys = keys
        self.metagraph = metagraph
        self.scores = scores
        self.quotas = QuotaBook(redis, keys, settings.validator.quotas, clock=clock)
        self.db = db
        self.clock = clock
        self._built: tuple[float, DashboardData] | None = None
        self._served: tuple[float, dict[str, int]] | None = None
        self._lock = asyncio.Lock()

    async def data(self) -> DashboardData:
        async with self._lock:
            now = time.monotonic()
            if self._built is None or now - self._built[0] >= BUILD_TTL_SECONDS:
                self._built = (now, await self.build())
            return self._built[1]

    async def build(self) -> DashboardData:
        """Read everything now. Raises ``RedisError``/``OSError`` when Redis is down (the route says 503);
        a missing metagraph or request log only leaves a note."""
        notes: list[str] = []
        metagraph: Metagraph | None = None
        try:
            metagraph = await self.metagraph.current()
        except ChainError as exc:
            notes.append(f"no metagraph yet: {exc}")
        neurons = sorted(metagraph.neurons, key=lambda n: n.uid) if metagraph else []
        identities = [n.identity for n in neurons]
        tasks = list(self.latency_references)

        last_raw, attempts_raw = await self._weights()
        attempts: list[Attempt] = []
        for raw in attempts_raw:
            try:
                attempts.append(parse_attempt(raw))
            except (ValueError, KeyError, TypeError):
                notes.append("skipped an unreadable weight attempt record")
        last: LastWeights | None = None
        weights: dict[int, float] = {}
        try:
            if last_raw is not None:
                last, weights = parse_last_weights(last_raw)
        except (ValueError, KeyError, TypeError):
            notes.append("the last weights record is unreadable")
        if last_raw is None:
            notes.append("no successful weight set recorded yet")

        aggregates = await self.scores.aggregates(identities, self.latency_references) if identities else {}
        recent = await self._recent_samples(identities, tasks)
        status = {task: await self.quotas.status(identities, task) for task in tasks}
        served = await self._served_counts(notes)
        now = self.clock()
        traffic = await read_traffic(self.redis, self.keys, now)
        backlog = ScoringBacklog(**await queue_state(self.redis, self.keys))
        # three missed beats, counted at the slower of the services' heartbeat and the gateway's flush
        stale_after = 3 * max(self.settings.validator.heartbeat_seconds, FLUSH_SECONDS)
        services = [
            ServiceState(service=b.service, instance=b.instance, state=beats.state(b.last_beat, now, stale_after),
                         seconds_since_beat=max(0.0, now - b.last_beat))
            for b in sorted(await beats.read(self.redis, self.keys), key=lambda b: (b.service, b.instance))
        ]

        rows: list[MinerRow] = []
        for neuron in neurons:
            identity = neuron.identity
            per_task = {task: recent.get((identity, task), []) for task in tasks}
            pooled = [s for samples in per_task.values() for s in samples]
            quota = {task: _task_quota(status[task][identity], per_task[task]) for task in tasks}
            rows.append(
                MinerRow(
                    uid=neuron.uid,
                    hotkey=neuron.hotkey,
                    hotkey_short=short_hotkey(neuron.hotkey),
                    identity=identity,
                    stake=neuron.stake,
                    validator_permit=neuron.validator_permit,
                    is_self=neuron.hotkey == self.keys.role,
                    serving=neuron.axon is not None and neuron.axon.is_served,
                    score=aggregates.get(identity, self.settings.validator.scoring.prior_score),
                    weight=weights.get(neuron.uid) if last is not None else None,
                    latency_ms=median_latency_ms(pooled),
                    success_rate=success_rate(pooled),
                    quality=mean_quality(pooled),
                    recent_samples=len(pooled),
                    organic_routed=sum(q.used_organic for q in quota.values()),
                    organic_served=served.get(neuron.hotkey, 0) if served is not None else None,
                    quota=quota,
                )
            )

        known = [
            b
            for b in (metagraph.block if metagraph else None, attempts[0].block if attempts else None)
            if b is not None
        ]
        block = max(known) if known else None
        epoch = self.quotas.epoch(now)
        epoch_seconds = self.settings.validator.quotas.epoch_seconds
        return DashboardData(
            generated_at=now,
            netuid=self.keys.netuid,
            validator=self.keys.role,
            tasks=tasks,
            block=block,
            metagraph_block=metagraph.block if metagraph else None,
            metagraph_age_seconds=finite(self.metagraph.age_seconds) if metagraph else None,
            quota_epoch=epoch,
            epoch_seconds=epoch_seconds,
            epoch_seconds_left=max(0.0, epoch_end(epoch, epoch_seconds) - now),
            served_window_seconds=SERVED_WINDOW_SECONDS,
            miners=rows,
            last_weights=last,
            blocks_since_weights=blocks_since(block, last.block if last else None),
            attempts=attempts,
            traffic=traffic,
            scoring=backlog,
            services=services,
            notes=notes,
        )

    async def _weights(self) -> tuple[bytes | None, list[bytes]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.last_weights())
        pipe.lrange(self.keys.weight_attempts(), 0, ATTEMPTS_SHOWN - 1)
        last, attempts = await pipe.execute()
        return last, list(attempts)

    async def _recent_samples(
        self, identities: Sequence[str], tasks: Sequence[str]
    ) -> dict[tuple[str, str], list[Sample]]:
        """The newest samples of every miner and task, in one pipelined round trip."""
        if not identities or not tasks:
            return {}
        pairs = [(identity, task) for identity in identities for task in tasks]
        pipe = self.redis.pipeline(transaction=False)
        for identity, task in pairs:
            pipe.lrange(self.keys.score_history(identity, task), 0, RECENT_SAMPLES - 1)
        out: dict[tuple[str, str], list[Sample]] = {}
        for pair, raw in zip(pairs, await pipe.execute(), strict=True):
            samples = []
            for item in raw:
                try:
                    samples.append(Sample.from_json(item))
                except (ValueError, KeyError, TypeError):  # the score book skips these too
                    continue
            out[pair] = samples
        return out

    async def _served_counts(self, notes: list[str]) -> dict[str, int] | None:
        """hotkey -> organic requests served with HTTP 200 in the window, from the request log."""
        if self.db is None:
            return None
        now = time.monotonic()
        if self._served is not None and now - self._served[0] < SERVED_TTL_SECONDS:
            return self._served[1]
        since = utcnow() - dt.timedelta(seconds=SERVED_WINDOW_SECONDS)
        query = (
            select(RequestLog.miner_hotkey, func.count())
            .where(RequestLog.ts >= since, RequestLog.status == 200, RequestLog.miner_hotkey.is_not(None))
            .group_by(RequestLog.miner_hotkey)
        )
        try:
            async with self.db.sessions() as session:
                counts = {str(hotkey): int(n) for hotkey, n in (await session.execute(query)).all()}
        except (SQLAlchemyError, OSError) as exc:
            notes.append(f"request log unavailable: {type(exc).__name__}")
            return None
        self._served = (now, counts)
        return counts


def _task_quota(status: QuotaStatus, samples: Sequence[Sample]) -> TaskQuota:
    return TaskQuota(
        share=status.share,
        synthetic_limit=status.synthetic_limit,
        used=status.used_total,
        used_synthetic=status.used_synthetic,
        used_organic=status.used_organic,
        left=status.total_left,
        latency_ms=median_latency_ms(samples),
        samples=len(samples),
    )


# -- the page --------------------------------------------------------------------------------------------


@cache
def page() -> tuple[str, str]:
    """The HTML and its Content-Security-Policy: the inline script allowed by its hash, nothing else."""
    html = files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, csp


def dashboard_router(source: DashboardSource) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    no_store = {"Cache-Control": "no-store"}

    @router.get(
        "/dashboard",
        response_class=HTMLResponse,
        summary="The live validator dashboard (HTML)",
        responses={200: {"content": {"text/html": {}}, "description": "A page that polls /dashboard/data."}},
    )
    async def dashboard_page() -> HTMLResponse:
        html, csp = page()
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, **no_store})

    @router.get(
        "/dashboard/data",
        summary="Miners, scores, quotas, latency and weights as the dashboard shows them",
        response_model=DashboardData,
        responses={503: {"model": ErrorBody, "description": "Redis is unreachable."}},
    )
    async def dashboard_data() -> Response:
        try:
            data = await source.data()
        except (RedisError, OSError) as exc:
            log.warning("dashboard: Redis unavailable: %s", exc)
            body = ErrorBody(error="unavailable", reason="Redis is unreachable, try again shortly")
            return JSONResponse(body.model_dump(), status_code=503, headers=no_store)
        return Response(data.model_dump_json(), media_type="application/json", headers=no_store)

    return router
