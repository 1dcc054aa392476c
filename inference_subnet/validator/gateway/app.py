"""The gateway's HTTP API: one route per installed task, API keys, per-key limits, routing, the log.

Order of checks on a task route, cheapest and least revealing first: body size (413, middleware), API key
(401), payload against the task's Request model (422), the key's limits (429 with ``Retry-After``), then
routing (503 with a reason when no miner can serve). Every error body under ``/v1/`` is OpenAI's
:class:`~inference_subnet.validator.gateway.errors.OpenAIError` (one shape for the task and the chat routes);
the service routes answer :class:`~inference_subnet.protocol.wire.ErrorBody`. Every answer carries
``x-request-id``, and every admitted or rate-refused one the key's ``x-ratelimit-*`` state. The payload is parsed here rather than by FastAPI so
that an unauthenticated client is refused before its body is even decoded; the Request models still
appear in the OpenAPI schema (added to its components by the app's ``openapi``).

Per request the hot path costs the key's limit script, the quota script and the lease release (pipelined
across concurrent requests when the books share the limiter's coalescer, as ``gateway run`` wires them) and
the miner call; keys, scores and quota use are cached for a few seconds, and the request log and organic
scoring run in background tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

import anyio
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from inference_subnet.chain.types import ChainError, MetagraphSource
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import ErrorBody
from inference_subnet.settings import Settings
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.store.sql import Database
from inference_subnet.telemetry import HttpInstrumentation, starlette_routes
from inference_subnet.validator import metrics
from inference_subnet.validator.gateway.answers import (
    HEADER_ATTEMPTS,
    HEADER_HOTKEY,
    HEADER_UID,
    GatewayError,
)
from inference_subnet.validator.gateway.answers import served_headers as _served_headers
from inference_subnet.validator.gateway.answers import validation_reason as _validation_reason
from inference_subnet.validator.gateway import metrics as gateway_metrics
from inference_subnet.validator.gateway.apikeys import ApiKeyInfo, ApiKeyStore
from inference_subnet.validator.gateway.bodylimit import BodyLimit
from inference_subnet.validator.gateway.dashboard import DashboardSource, dashboard_router
from inference_subnet.validator.gateway.docs import add_offline_docs
from inference_subnet.validator.gateway.errors import OpenAIError, is_v1, openai_error_bytes, openai_error_response
from inference_subnet.validator.gateway.fixed import FixedAnswers
from inference_subnet.validator.gateway.limits import Admission, KeyLimiter
from inference_subnet.validator.gateway.organic import OrganicFeed
from inference_subnet.validator.gateway.reqheaders import (
    ResponseHeaders,
    add_response_headers,
    current_request_id,
    ratelimit_headers,
)
from inference_subnet.validator.gateway.requestlog import LogEntry, RequestLogWriter
from inference_subnet.validator.gateway.routing import (
    MinerCaller,
    NoMinerAvailable,
    OpenStream,
    QuotaSource,
    Router,
    ScoreCache,
    Served,
)
from inference_subnet.validator.gateway.taskroutes import TaskRoutes
from inference_subnet.validator.gateway.traffic import TrafficCounter, TrafficMiddleware, mark_key
from inference_subnet.validator.canaries import canary_book
from inference_subnet.validator.managing.breaker import Breaker
from inference_subnet.validator.managing.sampling import quality_bar
from inference_subnet.validator.managing.score_math import Standing
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.service import instance_id

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
HEALTHY = {"status": "ok"}
METRIC_CHILDREN_CACHE = 4096
"""Labelled metric children kept per gateway (tasks x miner uids x outcomes); past it the cache starts over."""
STATUS_CLIENT_CLOSED = 499
"""Logged (never sent) when a streaming client went away mid-stream."""
STATUS_STREAM_BROKEN = 502
"""Logged (the client got a final error line) when the miner's stream broke after the first chunk."""


class ScoreKeeper(Protocol):
    """``managing.ScoreBook`` as the gateway uses it: organic dropout and routing scores."""

    async def admit(self, identity: str, task: str, kind: Any, rng: random.Random, *, sure: bool = False) -> bool: ...

    async def standings(
        self, identities: Sequence[str], task: str, latency_reference: float | None = None
    ) -> Mapping[str, Standing]: ...


class TaskInfo(BaseModel):
    name: str
    path: str = Field(description="Where to POST requests of this task on this gateway.")
    streaming: bool = Field(description="Answers are NDJSON, one chunk per line.")
    timeout: float = Field(description="Seconds one miner gets to answer.")


class TaskList(BaseModel):
    tasks: list[TaskInfo]


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]


def _error_response(
    status: int, code: str, reason: str, headers: Mapping[str, str] | None = None, *, path: str = "",
    param: str | None = None,
) -> JSONResponse:
    """An error answer in the shape of the route: OpenAI's under ``/v1/``, ``ErrorBody`` elsewhere."""
    if is_v1(path):
        return openai_error_response(status, code, reason, headers, param=param)
    return JSONResponse(
        ErrorBody(error=code, reason=reason).model_dump(), status_code=status, headers=headers
    )


_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def _described(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": OpenAIError, "description": description}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds until the key may call again.", "schema": {"type": "integer"}}
}
_TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _described("Missing, invalid or revoked API key."),
    413: _described("Request body too large."),
    422: _described("The payload does not match the task's Request model."),
    429: _described("The key's requests-per-minute or concurrency limit is reached.", _RETRY_AFTER),
    503: _described("No miner could serve the request (the reason says why)."),
}
_SERVED_HEADERS = {
    HEADER_UID: {"description": "Uid of the miner that served the request.", "schema": {"type": "integer"}},
    HEADER_HOTKEY: {
        "description": "Hotkey of the miner that served the request.",
        "schema": {"type": "string"},
    },
    HEADER_ATTEMPTS: {
        "description": "Miners tried, the serving one included.",
        "schema": {"type": "integer"},
    },
    "x-request-id": {
        "description": "The request's id: the client's own when short and plain, else a generated one.",
        "schema": {"type": "string"},
    },
    "x-ratelimit-limit-requests": {"description": "The key's requests per minute.", "schema": {"type": "integer"}},
    "x-ratelimit-remaining-requests": {
        "description": "Requests the key may send at once from now.", "schema": {"type": "integer"},
    },
    "x-ratelimit-reset-requests": {
        "description": "When the key's whole burst is back (`500ms`, `20s`, `1m0s`).", "schema": {"type": "string"},
    },
}


class Gateway:
    """The request pipeline behind the routes. Another route adapter (an OpenAI-compatible
    ``/v1/chat/completions``) authenticates with :meth:`authenticate`, maps its payload to a task's
    Request, and calls :meth:`run` or :meth:`open`; it formats the answer its own way."""

    def __init__(
        self,
        settings: Settings,
        *,
        tasks: Mapping[str, Task],
        api_keys: ApiKeyStore,
        limiter: KeyLimiter,
        router: Router,
        request_log: RequestLogWriter,
        organic: OrganicFeed,
        db: Database,
        redis: RedisClient,
        metagraph: MetagraphSource,
    ):
        self.settings = settings
        self.tasks = dict(tasks)
        self.api_keys = api_keys
        self.limiter = limiter
        self.router = router
        self.request_log = request_log
        self.organic = organic
        self.db = db
        self.redis = redis
        self.metagraph = metagraph
        self.max_metagraph_age: float | None = settings.validator.max_metagraph_age_seconds
        """``/ready`` fails beyond this age; ``None`` for a fixed metagraph (a development file)."""
        self._dropped_seen = 0
        self._children: dict[tuple[str, int, str], tuple[Any, Any, Any, Any]] = {}

    # -- pipeline steps -----------------------------------------------------------------------------
    async def authenticate(
        self, credentials: HTTPAuthorizationCredentials | None, request: Request | None = None
    ) -> ApiKeyInfo:
        """The verified key; with ``request``, its answer is counted under that key (``traffic``)."""
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            gateway_metrics.auth_refusals.labels("missing_key").inc()
            raise GatewayError(
                401, "unauthorized", "missing API key: send `Authorization: Bearer isn_...`", challenge
            )
        info = await self.api_keys.verify(credentials.credentials)
        if info is None:
            gateway_metrics.auth_refusals.labels("invalid_key").inc()
            raise GatewayError(401, "unauthorized", "invalid or revoked API key", challenge)
        if request is not None:
            mark_key(request, info.id)
        return info

    def parse(self, task: Task, body: bytes) -> BaseModel:
        """The payload as the task's Request, parsed exactly as the miner will parse it (the model's own
        mode: lax unless the task's model says strict), so the gateway never refuses what a miner takes."""
        try:
            return task.Request.model_validate_json(body)
        except ValidationError as exc:
            raise GatewayError(422, "invalid_request", _validation_reason(exc)) from None

    async def admit(self, key: ApiKeyInfo, task: Task) -> Admission:
        try:
            admission = await self.limiter.acquire(
                key.id, rate_per_minute=key.rate_per_minute, max_concurrent=key.max_concurrent
            )
        except (RedisError, OSError) as exc:
            log.error("rate limiter unavailable: %s", exc)
            raise GatewayError(503, "unavailable", "rate limiter unavailable, try again shortly") from None
        add_response_headers(ratelimit_headers(admission.limit, admission.remaining, admission.reset_seconds))
        if not admission.allowed:
            gateway_metrics.rate_limited.labels(task.name, admission.reason).inc()
            what = (
                f"{key.rate_per_minute} requests per minute"
                if admission.reason == "rate"
                else f"{key.max_concurrent} concurrent requests"
            )
            raise GatewayError(
                429,
                "rate_limited",
                f"API key limit reached: {what}",
                {"Retry-After": str(admission.retry_after)},
            )
        return admission

    async def release(self, key: ApiKeyInfo, admission: Admission) -> None:
        if admission.ticket is None:
            return
        try:
            await self.limiter.release(key.id, admission.ticket)
        except (RedisError, OSError) as exc:  # the lease expires on its own
            log.warning("could not release an in-flight lease: %s", exc)

    def _log(
        self,
        task: Task,
        key: ApiKeyInfo,
        *,
        status: int,
        started: float,
        request_bytes: int,
        response_bytes: int,
        attempts: Sequence[Any] = (),
        request: BaseModel | None = None,
        response: BaseModel | None = None,
    ) -> None:
        served = next((a for a in attempts if a.outcome == "ok"), None)
        payload = None
        if self.settings.gateway.log_payloads and request is not None:
            payload = {
                "request": request.model_dump(mode="json"),
                "response": response.model_dump(mode="json") if response is not None else None,
            }
        self.request_log.record(
            LogEntry(
                task=task.name,
                key_id=key.id,
                status=status,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                request_bytes=request_bytes,
                response_bytes=response_bytes,
                miner_uid=served.uid if served else None,
                miner_hotkey=served.hotkey if served else None,
                attempts=len(attempts),
                payload=payload,
                prompt_tokens=_tokens(response, "prompt_tokens"),
                completion_tokens=_tokens(response, "completion_tokens"),
                request_id=current_request_id(),
            )
        )
        for attempt in attempts:
            counted = self._attempt_metrics(task.name, attempt.uid, attempt.outcome)
            counted[0].inc()
            counted[1].observe(attempt.latency)
            counted[2].inc()
            counted[3].observe(attempt.latency)

    def _attempt_metrics(self, task: str, uid: int, outcome: str) -> tuple[Any, Any, Any, Any]:
        """The labelled children one attempt updates, looked up once per (task, uid, outcome): ``labels()``
        takes a lock and builds a tuple on every call. Bounded by :data:`METRIC_CHILDREN_CACHE`."""
        key = (task, uid, outcome)
        children = self._children.get(key)
        if children is None:
            if len(self._children) >= METRIC_CHILDREN_CACHE:
                self._children.clear()
            children = self._children[key] = (
                metrics.miner_requests.labels(task, "organic", outcome),
                metrics.miner_latency.labels(task, "organic"),
                gateway_metrics.upstream_requests.labels(task, str(uid), outcome),
                gateway_metrics.upstream_seconds.labels(task, str(uid)),
            )
        return children

    # -- the organic pipeline: what every route adapter calls ---------------------------------------
    async def run(
        self, task: Task, key: ApiKeyInfo, request: BaseModel, *, request_bytes: int
    ) -> tuple[Served, bytes]:
        """Limits, routing, the log row and organic feedback for one request. Returns who served it and
        the task Response as JSON; raises :class:`GatewayError` (429 over the key's limits, 503 when no
        miner can serve)."""
        started = time.perf_counter()
        admission = await self.admit(key, task)
        try:
            served = await self.router.call(task, request)
        except NoMinerAvailable as exc:
            raise self._no_miner(task, key, request, exc, started=started, request_bytes=request_bytes) from None
        finally:
            await self.release(key, admission)
        content = served.response.model_dump_json().encode()
        self._log(
            task,
            key,
            status=200,
            started=started,
            request_bytes=request_bytes,
            response_bytes=len(content),
            attempts=served.attempts,
            request=request,
            response=served.response,
        )
        self.organic.submit(task, request, served.attempts)
        return served, content

    def _no_miner(
        self, task: Task, key: ApiKeyInfo, request: BaseModel, exc: NoMinerAvailable, *, started: float,
        request_bytes: int,
    ) -> GatewayError:
        """Log and feed back a request no miner could serve; the 503 for the caller to raise."""
        gateway_metrics.no_miner.labels(task.name).inc()
        self._log(task, key, status=503, started=started, request_bytes=request_bytes, response_bytes=0,
                  attempts=exc.attempts, request=request)
        self.organic.submit(task, request, exc.attempts)
        return GatewayError(503, "no_miner", exc.reason)

    async def open(self, task: Task, key: ApiKeyInfo, request: BaseModel, *, request_bytes: int) -> Relay:
        """A streaming request admitted and routed, its first chunk in hand (failover happens before it):
        the caller may now answer 200 and relay the stream in its own format (:meth:`Relay.stream`)."""
        started = time.perf_counter()
        admission = await self.admit(key, task)
        try:
            opened = await self.router.open_stream(task, request)
        except NoMinerAvailable as exc:
            await self.release(key, admission)
            raise self._no_miner(task, key, request, exc, started=started, request_bytes=request_bytes) from None
        except BaseException:
            await self.release(key, admission)
            raise
        gateway_metrics.upstream_first_byte.labels(task.name).observe(opened.attempts[-1].latency)
        return Relay(self, task, key, admission, request, opened, started, request_bytes)

    # -- the task routes -------------------------------------------------------------------------------
    async def serve(self, task: Task, key: ApiKeyInfo, body: bytes) -> Response:
        """``POST /v1/tasks/{task}`` of a non-streaming task."""
        request = self.parse(task, body)
        served, content = await self.run(task, key, request, request_bytes=len(body))
        return Response(content, media_type="application/json", headers=_served_headers(served))

    async def serve_stream(self, task: Task, key: ApiKeyInfo, body: bytes) -> StreamingResponse:
        """``POST /v1/tasks/{task}`` of a streaming task: NDJSON, one chunk a line, at the client's pace."""
        request = self.parse(task, body)
        relay = await self.open(task, key, request, request_bytes=len(body))
        return StreamingResponse(
            relay.stream(_ndjson_line, _ndjson_error),
            media_type=NDJSON,
            headers=_served_headers(relay.opened),
        )

    # -- health --------------------------------------------------------------------------------------
    async def readiness(self) -> Readiness:
        """Every check at once, each within ``validator.ready_timeout_seconds``: a Redis or database that
        accepts connections and never answers makes ``/ready`` fail fast instead of hanging the probe."""
        timeout = self.settings.validator.ready_timeout_seconds

        async def bounded(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
            try:
                async with asyncio.timeout(timeout):
                    return await check()
            except TimeoutError:
                return Check(name=name, ok=False, detail=f"no answer within {timeout:g}s")
            except Exception as exc:
                return Check(name=name, ok=False, detail=type(exc).__name__)

        checks = list(await asyncio.gather(
            bounded("redis", self._check_redis),
            bounded("database", self._check_database),
            bounded("metagraph", self._check_metagraph),
        ))
        backlog = self.request_log.pending
        checks.append(
            Check(
                name="request_log",
                ok=backlog < self.settings.gateway.log_queue_size,
                detail=f"{backlog} rows queued, {self.request_log.stats.dropped} dropped",
            )
        )
        return Readiness(ready=all(c.ok for c in checks), checks=checks)

    async def _check_redis(self) -> Check:
        await self.redis.ping()
        return Check(name="redis", ok=True)

    async def observe(self) -> None:
        """Set the gauges read at scrape time: Redis reachability (one PING within
        ``validator.ready_timeout_seconds``), the metagraph's age, the request log's backlog."""
        common = gateway_metrics.COMMON
        try:
            async with asyncio.timeout(self.settings.validator.ready_timeout_seconds):
                await self.redis.ping()
            common.redis_up.set(1)
        except Exception as exc:  # noqa: BLE001  (any failure means the same: Redis does not answer)
            log.debug("redis unavailable for /metrics: %s", exc)
            common.redis_up.set(0)
        if self.max_metagraph_age is not None:  # a development file is as fresh as it is
            common.metagraph_age.set(self.metagraph.age_seconds)
        gateway_metrics.request_log_pending.set(self.request_log.pending)
        dropped = self.request_log.stats.dropped
        if dropped > self._dropped_seen:
            gateway_metrics.request_log_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    async def _check_database(self) -> Check:
        async with self.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return Check(name="database", ok=True)

    async def _check_metagraph(self) -> Check:
        try:
            graph = await self.metagraph.current()
        except ChainError as exc:
            return Check(name="metagraph", ok=False, detail=f"none yet ({type(exc).__name__})")
        age = self.metagraph.age_seconds
        fresh = self.max_metagraph_age is None or age <= self.max_metagraph_age
        return Check(name="metagraph", ok=fresh,
                     detail=f"block {graph.block}, {len(graph.neurons)} neurons, {age:.0f}s old")


def _tokens(response: BaseModel | None, field: str) -> int | None:
    """A token count of a chat-shaped answer (``None`` for a task whose answers count none)."""
    value = getattr(response, field, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _assemble(task: Task, chunks: Sequence[BaseModel]) -> BaseModel | None:
    try:
        return task.assemble(chunks)
    except Exception:  # a task without assemble, or chunks it cannot join: not scorable, still served
        return None


def _ndjson_line(chunk: BaseModel) -> bytes:
    return chunk.model_dump_json().encode() + b"\n"


def _ndjson_error(reason: str) -> bytes:
    return openai_error_bytes(502, "stream_broken", reason) + b"\n"


class Relay:
    """One routed stream on its way to the client. :meth:`stream` encodes chunks in the adapter's format
    (NDJSON lines here, server-sent events for an OpenAI-compatible route) and, whatever happens, releases
    the key's lease and the miner connection and writes the log row when the stream ends."""

    def __init__(
        self,
        gateway: Gateway,
        task: Task,
        key: ApiKeyInfo,
        admission: Admission,
        request: BaseModel,
        opened: OpenStream,
        started: float,
        request_bytes: int,
    ):
        self.gateway = gateway
        self.task = task
        self.key = key
        self.admission = admission
        self.request = request
        self.opened = opened
        self.started = started
        self.request_bytes = request_bytes

    async def stream(
        self, encode: Callable[[BaseModel], bytes], broken: Callable[[str], bytes]
    ) -> AsyncIterator[bytes]:
        """The encoded chunks; if the miner's stream breaks after the first chunk (the status line is
        gone by then), a last ``broken(reason)`` part says so in-band."""
        sent = 0
        chunks: list[BaseModel] = []
        status = STATUS_CLIENT_CLOSED
        try:
            try:
                async for chunk in self.opened.chunks():
                    part = encode(chunk)
                    chunks.append(chunk)
                    sent += len(part)
                    yield part
                status = 200
            except Exception as exc:  # the miner's stream broke after the first chunk
                status = STATUS_STREAM_BROKEN
                yield broken(f"the miner's stream broke after {len(chunks)} chunk(s): {exc}"[:300])
        finally:
            # Shielded: a client disconnect cancels this generator, and the lease, the miner connection
            # and the log row must still be taken care of.
            with anyio.CancelScope(shield=True):
                await self._finish(status, chunks, sent)

    async def _finish(self, status: int, chunks: list[BaseModel], sent: int) -> None:
        gw, task = self.gateway, self.task
        await self.opened.aclose()
        await gw.release(self.key, self.admission)
        attempts = list(self.opened.attempts)
        assembled = _assemble(task, chunks) if status == 200 else None
        last = attempts[-1]
        outcome = "ok" if status == 200 else ("aborted" if status == STATUS_CLIENT_CLOSED else "broken")
        attempts[-1] = dataclasses.replace(
            last,
            outcome=outcome,
            latency=time.perf_counter() - self.opened.started + last.latency,
            response=assembled,
        )
        gw._log(
            task,
            self.key,
            status=status,
            started=self.started,
            request_bytes=self.request_bytes,
            response_bytes=sent,
            attempts=attempts,
            request=self.request,
            response=assembled,
        )
        if status != STATUS_CLIENT_CLOSED:  # an aborted stream says nothing about the miner
            gw.organic.submit(task, self.request, attempts)


# -- the app ------------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API key from `inference-subnet gateway keys create`.")


async def _api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> ApiKeyInfo:
    gateway: Gateway = request.app.state.gateway
    return await gateway.authenticate(credentials, request)


ApiKeyDep = Annotated[ApiKeyInfo, Depends(_api_key)]


def _task_endpoint(task: Task) -> Any:
    if task.streaming:

        async def stream_endpoint(request: Request, key: ApiKeyDep) -> Response:
            gateway: Gateway = request.app.state.gateway
            return await gateway.serve_stream(task, key, await request.body())

        return stream_endpoint

    async def endpoint(request: Request, key: ApiKeyDep) -> Response:
        gateway: Gateway = request.app.state.gateway
        return await gateway.serve(task, key, await request.body())

    return endpoint


def _request_schemas(tasks: Sequence[Task]) -> tuple[dict[str, str], dict[str, Any]]:
    """task name -> ``$ref`` of its Request (and Chunk) model, and the component schemas they need."""
    models: list[tuple[type[BaseModel], Any]] = []
    for task in tasks:
        models.append((task.Request, "validation"))
        if task.streaming and task.Chunk is not None:
            models.append((task.Chunk, "serialization"))
    if not models:
        return {}, {}
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    out: dict[str, str] = {}
    for task in tasks:
        out[task.name] = refs[(task.Request, "validation")]["$ref"]
        if task.streaming and task.Chunk is not None:
            out[f"{task.name}:chunk"] = refs[(task.Chunk, "serialization")]["$ref"]
    return out, defs.get("$defs", {})


def create_gateway_app(
    settings: Settings,
    *,
    tasks: Mapping[str, Task],
    redis: RedisClient,
    keys: Keys,
    metagraph: MetagraphSource,
    miner_client: MinerCaller,
    quota_book: QuotaSource,
    score_book: ScoreKeeper,
    db: Database | None = None,
    exclude_hotkeys: Sequence[str] = (),
    rng: random.Random | None = None,
    check_metagraph_age: bool = True,
    coalescer: Coalescer | None = None,
) -> FastAPI:
    """The gateway app. It owns the database (unless one is given), the request-log writer and the
    organic feed; the lifespan migrates the database, starts the background writers and flushes them.

    ``coalescer`` carries the key limiter's commands; pass the one behind the quota and score books'
    client (a :class:`~inference_subnet.store.coalescing.CoalescingRedis`) so that concurrent requests'
    limit, quota and lease commands share round trips. Without one the limiter gets its own."""
    gw = settings.gateway
    owns_db = db is None
    database = db if db is not None else Database(settings.database_url)
    rng = rng or random.Random()
    standings = ScoreCache(
        lambda ids, task: score_book.standings(ids, task, tasks[task].timeout), ttl=gw.score_cache_seconds
    )
    router = Router(
        metagraph=metagraph,
        client=miner_client,
        quotas=quota_book,
        scores=standings,
        max_attempts=gw.max_attempts,
        total_deadline=gw.total_deadline_seconds,
        first_byte_timeout=gw.first_byte_timeout,
        bar=quality_bar(settings.validator.quotas),
        breaker=Breaker(failures=gw.breaker_failures, cooldown=gw.breaker_seconds),
        contenders=settings.validator.quotas.organic_contenders,
        exclude_hotkeys=exclude_hotkeys,
        rng=rng,
        usage_ttl=gw.usage_refresh_seconds,
        canaries=canary_book(redis, keys, settings),
    )
    gateway = Gateway(
        settings,
        tasks=tasks,
        api_keys=ApiKeyStore(database, cache_seconds=gw.api_key_cache_seconds),
        limiter=KeyLimiter(
            redis,
            keys,
            lease_seconds=gw.total_deadline_seconds + 60.0,
            burst=gw.rate_burst,
            coalescer=coalescer or Coalescer(redis),
        ),
        router=router,
        request_log=RequestLogWriter(
            database,
            batch_size=gw.log_batch_size,
            flush_interval=gw.log_flush_seconds,
            max_queue=gw.log_queue_size,
        ),
        organic=OrganicFeed(
            redis,
            keys,
            admit=score_book.admit,
            standings=standings.known,
            reuse=gw.reuse_organic,
            reuse_rate=gw.reuse_sample_rate,
            reuse_cap=settings.validator.organic_samples_cap,
            rng=rng,
            volumes=VolumeBook(redis, keys, epoch_seconds=settings.validator.quotas.epoch_seconds)
            if settings.validator.scoring.volume_weighting
            else None,
        ),
        db=database,
        redis=redis,
        metagraph=metagraph,
    )

    if not check_metagraph_age:
        gateway.max_metagraph_age = None
    traffic = TrafficCounter(redis, keys, instance=instance_id())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.upgrade()
        gateway.request_log.start()
        gateway.organic.start()
        traffic.start()
        try:
            yield
        finally:
            await traffic.aclose()
            await gateway.organic.aclose()
            await gateway.request_log.aclose()
            if owns_db:
                await database.aclose()

    app = FastAPI(
        title="inference-subnet gateway",
        summary="Organic requests to the subnet's miners, routed by a validator.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)  # Swagger UI and ReDoc from installed assets, not a CDN
    app.state.gateway = gateway
    ordered = [tasks[name] for name in sorted(tasks)]
    refs, component_schemas = _request_schemas(ordered)

    for task in ordered:
        body = {"required": True, "content": {"application/json": {"schema": {"$ref": refs[task.name]}}}}
        if task.streaming:
            ok: dict[int | str, dict[str, Any]] = {
                200: {
                    "description": "NDJSON: one chunk per line; a last `ErrorBody` line if the stream broke.",
                    "content": {NDJSON: {"schema": {"$ref": refs[f"{task.name}:chunk"]}}},
                    "headers": _SERVED_HEADERS,
                }
            }
            app.add_api_route(
                f"/v1/tasks/{task.name}",
                _task_endpoint(task),
                methods=["POST"],
                tags=["tasks"],
                name=f"task_{task.name}",
                summary=f"Run task `{task.name}` (streaming)",
                response_class=StreamingResponse,
                responses={**ok, **_TASK_ERRORS},
                openapi_extra={"requestBody": body},
            )
        else:
            app.add_api_route(
                f"/v1/tasks/{task.name}",
                _task_endpoint(task),
                methods=["POST"],
                tags=["tasks"],
                name=f"task_{task.name}",
                summary=f"Run task `{task.name}`",
                response_model=task.Response,
                responses={200: {"headers": _SERVED_HEADERS}, **_TASK_ERRORS},
                openapi_extra={"requestBody": body},
            )

    @app.post(
        "/v1/tasks/{task}",
        tags=["tasks"],
        summary="Unknown task",
        status_code=404,
        response_model=OpenAIError,
        responses={404: {"model": OpenAIError, "description": "No such task; the message lists the tasks."}},
    )
    async def unknown_task(task: str) -> JSONResponse:
        names = ", ".join(sorted(tasks)) or "none"
        return openai_error_response(404, "unknown_task", f"unknown task {task!r}; tasks: {names}")

    @app.get("/v1/tasks", tags=["tasks"], summary="The tasks this gateway serves")
    async def list_tasks() -> TaskList:
        return TaskList(
            tasks=[
                TaskInfo(name=t.name, path=f"/v1/tasks/{t.name}", streaming=t.streaming, timeout=t.timeout)
                for t in ordered
            ]
        )

    @app.get("/health", tags=["service"], summary="Liveness")
    async def health() -> dict[str, str]:
        return HEALTHY  # GET is answered by FixedAnswers with these bytes, before routing

    @app.get(
        "/ready",
        tags=["service"],
        summary="Readiness: Redis, database and metagraph",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready; the checks say why."}},
    )
    async def ready() -> JSONResponse:
        state = await gateway.readiness()
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        await gateway.observe()
        body, content_type = gateway_metrics.render()
        return Response(body, media_type=content_type)

    from inference_subnet.validator.gateway.openai import chat_router  # an adapter over this pipeline

    if (chat := chat_router(ordered)) is not None:  # OpenAI-compatible routes for chat-shaped tasks
        app.include_router(chat)

    if gw.dashboard:
        app.include_router(
            dashboard_router(
                DashboardSource(
                    settings, tasks=tasks, redis=redis, keys=keys, metagraph=metagraph, scores=score_book,
                    db=database,
                )
            )
        )

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.reason, exc.headers, path=request.url.path,
                               param=exc.param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(
            exc.status_code, _ERROR_CODES.get(exc.status_code, "error"), str(exc.detail), exc.headers,
            path=request.url.path,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]
        )
        return _error_response(422, "invalid_request", reason or "invalid request", path=request.url.path)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in component_schemas.items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    fastapi_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        """The gateway's own pure-ASGI layers outside FastAPI's (server errors, telemetry, exception
        handlers, routing), so that ``GET /health`` and the task routes, which these layers answer,
        pay for none of them. Built when the app first serves, after every route is added."""
        routes = {getattr(r, "path", None): r for r in app.routes}
        inner: ASGIApp = TaskRoutes(fastapi_stack(), gateway=gateway, routes=routes,
                                    tasks={f"/v1/tasks/{t.name}": t for t in ordered})
        inner = BodyLimit(inner, max_bytes=gw.max_body_bytes)
        inner = TrafficMiddleware(inner, counter=traffic)  # refusals of the body limit are counted too
        inner = FixedAnswers(inner, answers={"/health": HEALTHY}, routes={"/health": routes["/health"]})
        inner = ResponseHeaders(inner)  # every answer carries a request id, a 413 or /health's included
        return HttpInstrumentation(inner, metrics=gateway_metrics.COMMON.http, route_of=starlette_routes(app))

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    return app
