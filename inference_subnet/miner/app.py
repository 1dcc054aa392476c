"""The miner's ASGI app: only signed, fresh, non-replayed requests from allowed validators reach a handler.

Each task route is a small pure-ASGI endpoint rather than a FastAPI route: the hot path is a fixed list of
checks, cheapest first, and none of FastAPI's per-request dependency machinery is needed for it.

1. method and declared size (``Content-Length``): 405, 413, before reading anything;
2. the *claimed* sender against the metagraph (403), a dict lookup before any signature work;
3. the body, read with a running byte count (413 as soon as it passes the limit);
4. btauth/1: shape, receiver, freshness, signature, then the shared Redis nonce store (401);
5. the caller's stake-based quota (429 with ``Retry-After``);
6. the payload against ``task.Request`` (422);
7. the handler under ``task.timeout`` (504), a generic 500 on a crash (never the traceback), and the
   answer checked against ``task.Response`` (or streamed as NDJSON, one ``task.Chunk`` per line).

Every error is an :class:`~inference_subnet.protocol.wire.ErrorBody`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bittensor_wallet import Keypair
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inference_subnet import telemetry
from inference_subnet.chain.types import ChainError, Metagraph, MetagraphSource
from inference_subnet.miner import metrics as miner_metrics
from inference_subnet.miner.blacklist import check_caller
from inference_subnet.miner.health import RedisProbe
from inference_subnet.miner.nonces import RedisNonceStore
from inference_subnet.miner.quota import MinerQuota, QuotaDecision
from inference_subnet.protocol.wire import QUOTA_REASON_HEADER
from inference_subnet.protocol import btauth
from inference_subnet.protocol.task import Handler, HandlerError, Task
from inference_subnet.protocol.wire import CapacityInfo, ErrorBody
from inference_subnet.settings import Settings
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient

log = logging.getLogger(__name__)

NDJSON = b"application/x-ndjson"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_HOTKEY_HEADER = btauth.HEADER_HOTKEY.lower()

_AUTH_CODES: dict[type[btauth.AuthError], str] = {
    btauth.MalformedAuth: "malformed_auth",
    btauth.WrongReceiver: "wrong_receiver",
    btauth.StaleRequest: "stale_request",
    btauth.ReplayedRequest: "replayed_request",
    btauth.BadSignature: "bad_signature",
}


class StreamAborted(Exception):
    """A streaming handler failed or ran out of time after the first chunk was sent.

    The status line is gone by then, so the only honest signal left is to break the connection: the
    client sees an incomplete chunked body instead of a stream that merely looks short.
    """


def _error_bytes(code: str, reason: str) -> bytes:
    return ErrorBody(error=code, reason=reason).model_dump_json().encode()


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, code: str, reason: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _send_json(send, status, _error_bytes(code, reason), extra)


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise _BodyTooLarge
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _request_target(scope: Scope) -> str:
    """Path plus ``?query`` exactly as sent: what btauth/1 signs."""
    raw = scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class _MinerState:
    """Everything the task endpoints share, resolved once at start-up."""

    def __init__(
        self,
        settings: Settings,
        keypair: Keypair,
        metagraph: MetagraphSource,
        nonce_store: RedisNonceStore,
        quota: MinerQuota,
        validate_responses: bool,
    ) -> None:
        m = settings.miner
        self.hotkey = keypair.ss58_address
        self.metagraph = metagraph
        self.nonce_store = nonce_store
        self.quota = quota
        self.auth_enabled = m.auth_enabled
        self.enforce_quota = m.enforce_quota
        self.max_body = m.max_body_bytes
        self.require_permit = m.require_validator_permit
        self.min_stake = m.min_validator_stake
        self.max_age = m.max_request_age
        self.allowed_skew = m.allowed_clock_skew
        self.validate_responses = validate_responses
        self.counts: Counter[str] = Counter()
        """Requests of this worker by outcome (``handled`` = reached a handler), shown on ``/health``."""


class _CountingSend:
    """Counts each answer by status, so ``/health`` shows what a worker refused and why."""

    __slots__ = ("_counts", "_send", "started")

    def __init__(self, send: Send, counts: Counter[str]) -> None:
        self._send = send
        self._counts = counts
        self.started = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self._counts[str(message["status"])] += 1
        await self._send(message)


class TaskEndpoint:
    """The ASGI app behind one task's route."""

    def __init__(self, task: Task, handler: Handler, state: _MinerState) -> None:
        self.task = task
        self.handler = handler
        self.state = state
        self.streaming = task.streaming
        if self.streaming and task.Chunk is None:
            raise ValueError(f"task {task.name!r} streams but declares no Chunk model")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counted = _CountingSend(send, self.state.counts)
        try:
            await self._handle(scope, receive, counted.send)
        except StreamAborted:
            raise
        except Exception:
            # Task routes bypass Starlette's error middleware: a bug here must still answer in JSON.
            if counted.started:
                raise
            log.exception("task endpoint %s failed", self.task.route)
            await _send_error(counted.send, 500, "internal_error", "the miner failed to handle the request")

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        st = self.state
        if scope["method"] != "POST":
            await _send_error(send, 405, "method_not_allowed", f"{self.task.route} accepts POST only",
                              [(b"allow", b"POST")])
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "bad_request", "Content-Length is not a non-negative integer")
                return
            if int(declared) > st.max_body:
                await _send_error(send, 413, "payload_too_large", f"body exceeds {st.max_body} bytes")
                return

        metagraph = None
        if st.auth_enabled:
            sender = headers.get(_HOTKEY_HEADER)
            if not sender:
                miner_metrics.auth_refusals.labels(self.task.name, "malformed_auth").inc()
                await _send_error(send, 401, "malformed_auth", f"missing {btauth.HEADER_HOTKEY}")
                return
            try:
                metagraph = await st.metagraph.current()
            except ChainError:
                log.warning("refusing a request: no metagraph snapshot available")
                miner_metrics.unavailable.labels(self.task.name, "metagraph_unavailable").inc()
                await _send_error(send, 503, "metagraph_unavailable", "the miner has no metagraph yet")
                return
            refusal = check_caller(
                metagraph, sender, require_validator_permit=st.require_permit, min_stake=st.min_stake
            )
            if refusal is not None:
                miner_metrics.auth_refusals.labels(self.task.name, refusal.code).inc()
                await _send_error(send, 403, refusal.code, refusal.reason)
                return

        try:
            body = await _read_body(receive, st.max_body)
        except _BodyTooLarge:
            await _send_error(send, 413, "payload_too_large", f"body exceeds {st.max_body} bytes")
            return
        except _Disconnected:
            return

        if st.auth_enabled:
            assert metagraph is not None
            try:
                decision = await self._admit(scope, headers, body, metagraph)
            except btauth.AuthError as exc:
                code = _AUTH_CODES.get(type(exc), "unauthorized")
                miner_metrics.auth_refusals.labels(self.task.name, code).inc()
                await _send_error(send, 401, code, str(exc))
                return
            except RedisError:
                log.warning("nonce or quota store unavailable; refusing requests until Redis answers")
                miner_metrics.unavailable.labels(self.task.name, "store_unavailable").inc()
                await _send_error(send, 503, "store_unavailable", "replay protection is unavailable, retry later")
                return
            if decision is not None and not decision.allowed:
                miner_metrics.quota_refusals.labels(self.task.name).inc()
                retry = str(max(1, math.ceil(decision.retry_after))).encode()
                reason = decision.reason or "beyond_share"
                why = ("this miner's capacity for the epoch is used up" if reason == "capacity" else
                       f"past the caller's guaranteed share ({decision.limit} requests per epoch, paced) "
                       "and no idle capacity to lend")
                await _send_error(
                    send, 429, "rate_limited", f"task {self.task.name}: {why} ({reason})",
                    [(b"retry-after", retry), (QUOTA_REASON_HEADER, reason.encode())],
                )
                return

        try:
            request = self.task.Request.model_validate_json(body)
        except ValidationError as exc:
            await _send_error(send, 422, "invalid_request", _validation_reason(exc))
            return

        st.counts["handled"] += 1
        if self.streaming:
            await self._stream(request, send)
        else:
            await self._answer(request, send)

    async def _admit(
        self, scope: Scope, headers: dict[str, str], body: bytes, metagraph: Metagraph
    ) -> QuotaDecision | None:
        """btauth/1 in full (signature first, then the shared nonce store), then the caller's quota when
        enforced (``None`` when not): raises :class:`btauth.AuthError` or ``RedisError``.

        With quotas the nonce check and the charge share one round trip
        (:meth:`~inference_subnet.miner.nonces.RedisNonceStore.check_and_count`), and the charge is made
        only for a nonce found fresh: a replay is refused without spending the caller's quota."""
        st = self.state
        caller = btauth.authenticate(
            headers, body, method="POST", path=_request_target(scope), self_hotkey_ss58=st.hotkey,
            max_age=st.max_age, allowed_skew=st.allowed_skew, require_receiver=True,
            lowercase_names=True,  # ASGI header names are lowercase
        )
        if not st.enforce_quota:
            if not await st.nonce_store.check_and_store(caller.hotkey_ss58, caller.nonce_ns):
                raise btauth.ReplayedRequest("this nonce was already accepted from this hotkey")
            return None
        charge = st.quota.charge(metagraph, caller.hotkey_ss58, self.task.name)
        fresh, counted = await st.nonce_store.check_and_count(
            caller.hotkey_ss58, caller.nonce_ns, charge.keys, charge.args)
        if not fresh:
            raise btauth.ReplayedRequest("this nonce was already accepted from this hotkey")
        if counted is None:  # not charged with the check (a new bucket, a cluster): charge it now
            return await st.quota.consume(metagraph, caller.hotkey_ss58, self.task.name)
        return charge.decision(*counted)

    async def _answer(self, request: BaseModel, send: Send) -> None:
        deadline = asyncio.timeout(self.task.timeout)
        try:
            async with deadline:
                result = await self.handler(request)  # type: ignore[misc]
        except TimeoutError:
            if deadline.expired():
                await _send_error(send, 504, "timeout", f"handler exceeded {self.task.timeout:g}s")
                return
            log.exception("handler of task %s failed", self.task.name)
            await _send_error(send, 500, "handler_error", "the miner failed to handle the request")
            return
        except HandlerError as exc:
            await _upstream_failed(self.task.name, exc, send)
            return
        except Exception:
            log.exception("handler of task %s failed", self.task.name)
            await _send_error(send, 500, "handler_error", "the miner failed to handle the request")
            return
        try:
            body = self._encode(result, self.task.Response)
        except (ValidationError, TypeError, ValueError):
            log.error("handler of task %s returned an invalid response", self.task.name)
            await _send_error(send, 500, "invalid_response", "the miner produced an invalid response")
            return
        await _send_json(send, 200, body)

    def _encode(self, result: Any, model: type[BaseModel]) -> bytes:
        if type(result) is model:
            return result.model_dump_json().encode()
        if not self.state.validate_responses:
            if isinstance(result, BaseModel):
                return result.model_dump_json().encode()
            return json.dumps(result).encode()
        if isinstance(result, BaseModel):
            result = result.model_dump()
        if not isinstance(result, dict):
            raise TypeError(f"handler returned {type(result).__name__}, expected {model.__name__} or dict")
        return model.model_validate(result).model_dump_json().encode()

    async def _stream(self, request: BaseModel, send: Send) -> None:
        chunk_model = self.task.Chunk
        assert chunk_model is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.task.timeout
        produced = self.handler(request)
        if not hasattr(produced, "__anext__"):
            if inspect.iscoroutine(produced):
                produced.close()
            log.error("handler of streaming task %s is not an async generator", self.task.name)
            await _send_error(send, 500, "handler_error", "the miner failed to handle the request")
            return
        chunks: Any = produced
        try:
            first = await self._next_line(chunks, chunk_model, deadline)
        except TimeoutError:
            await _aclose(chunks)
            await _send_error(send, 504, "timeout", f"handler exceeded {self.task.timeout:g}s")
            return
        except HandlerError as exc:
            await _aclose(chunks)
            await _upstream_failed(self.task.name, exc, send)
            return
        except Exception:
            await _aclose(chunks)
            log.exception("streaming handler of task %s failed before its first chunk", self.task.name)
            await _send_error(send, 500, "handler_error", "the miner failed to handle the request")
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", NDJSON)]})
        try:
            line = first
            while line is not None:
                await send({"type": "http.response.body", "body": line, "more_body": True})
                line = await self._next_line(chunks, chunk_model, deadline)
        except Exception as exc:  # noqa: BLE001  (whatever broke the stream, the answer is the same)
            await _aclose(chunks)
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, HandlerError) else type(exc).__name__
            log.warning("stream of task %s aborted: %s", self.task.name, reason)
            raise StreamAborted(f"stream of task {self.task.name} aborted") from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _next_line(self, chunks: Any, chunk_model: type[BaseModel], deadline: float) -> bytes | None:
        """The next chunk as one JSON line, or ``None`` at the end of the stream."""
        async with asyncio.timeout_at(deadline):
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return None
        return self._encode(chunk, chunk_model) + b"\n"


async def _upstream_failed(task: str, exc: HandlerError, send: Send) -> None:
    log.error("handler of task %s failed: %s", task, exc)
    await _send_error(send, 502, "upstream_error", "the miner's model server failed")


async def _aclose(chunks: Any) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001, S110  (a generator failing while closing has nothing more to say)
            pass


class MinerApp(FastAPI):
    """FastAPI for ``/capacity``, ``/health`` and errors; task routes are dispatched straight to their
    endpoints, past the middleware stack, because they are the hot path and handle their own errors."""

    task_endpoints: dict[str, TaskEndpoint]
    instrumented: ASGIApp | None = None
    """:meth:`dispatch` under the HTTP instrumentation (set by :func:`create_miner_app`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.instrumented is not None and scope["type"] == "http":
            await self.instrumented(scope, receive, send)
        else:
            await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.task_endpoints.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_miner_app(
    tasks: Sequence[Task],
    handlers: Mapping[str, Handler],
    settings: Settings,
    *,
    keypair: Keypair,
    metagraph: MetagraphSource,
    redis: RedisClient,
    keys: Keys,
    validate_responses: bool = True,
    lifespan: Callable[[FastAPI], Any] | None = None,
    started_ns: int | None = None,
) -> FastAPI:
    """The miner app serving ``tasks`` with ``handlers`` (task name -> handler).

    ``validate_responses=False`` ships whatever a handler returns: only for simulating faulty miners.
    ``lifespan`` is passed to FastAPI (the caller owns ``redis`` and closes it there). ``started_ns`` is
    when the miner started (default: now), the earliest a fresh replay store accepts nonces from.
    """
    missing = [t.name for t in tasks if t.name not in handlers]
    if missing:
        raise ValueError(f"no handler for task(s): {', '.join(missing)}")
    m = settings.miner
    quotas = settings.validator.quotas
    capacities = {t.name: int(m.capacity.get(t.name, t.capacity_hint)) for t in tasks}
    coalescer = Coalescer(redis)
    nonce_store = RedisNonceStore(redis, keys, max_age=m.max_request_age, allowed_skew=m.allowed_clock_skew,
                                  coalescer=coalescer,
                                  clock=time.time_ns if started_ns is None else lambda: started_ns)
    quota = MinerQuota(
        redis,
        keys,
        capacities=capacities,
        epoch_seconds=quotas.epoch_seconds,
        min_share=quotas.min_share,
        min_requests=quotas.min_requests,
        burst_seconds=quotas.burst_seconds,
        borrow_ceiling=quotas.borrow_ceiling,
        require_validator_permit=m.require_validator_permit,
        coalescer=coalescer,
    )
    state = _MinerState(settings, keypair, metagraph, nonce_store, quota, validate_responses)

    # No /docs, /redoc or /openapi.json: a miner's callers are validators, not people browsing it.
    app = MinerApp(title="inference-subnet miner", lifespan=lifespan, docs_url=None, redoc_url=None,
                   openapi_url=None)
    app.state.miner = state
    app.task_endpoints = {}
    for task in tasks:
        endpoint = TaskEndpoint(task, handlers[task.name], state)
        app.task_endpoints[task.route] = endpoint
        # also routed normally, so the route is listed and reachable through any mounted sub-app
        app.router.routes.append(Route(task.route, endpoint, name=f"task:{task.name}"))

    capacity = CapacityInfo(hotkey=keypair.ss58_address, capacities=capacities,
                            epoch_seconds=quotas.epoch_seconds, burst_seconds=quotas.burst_seconds)
    task_names = [t.name for t in tasks]

    @app.get("/capacity", response_model=CapacityInfo)
    async def get_capacity() -> CapacityInfo:
        """Requests per epoch this miner accepts per task."""
        return capacity

    redis_probe = RedisProbe(redis)

    @app.get("/health")
    async def get_health() -> JSONResponse:
        """Liveness, Redis reachability (503 without it: every signed request would be refused), the
        metagraph's age in seconds, and the tasks served."""
        age = metagraph.age_seconds
        redis_ok = await redis_probe.reachable()
        return JSONResponse({
            "status": "ok" if redis_ok else "unavailable",
            "redis": "ok" if redis_ok else "unreachable",
            "metagraph_age": round(age, 3) if math.isfinite(age) else None,
            "tasks": task_names,
            "hotkey": keypair.ss58_address,
            "requests": dict(state.counts),
            "redis_pipelining": {"commands": coalescer.commands, "round_trips": coalescer.round_trips},
        }, status_code=200 if redis_ok else 503)

    allowed = telemetry.networks(m.metrics_allow)
    if allowed:

        @app.get("/metrics")
        async def get_metrics(request: Request) -> Response:
            """Prometheus metrics, for peers inside ``miner.metrics_allow`` only; anyone else gets the
            404 of a path that does not exist."""
            if not telemetry.may_scrape(request.scope, allowed):
                raise StarletteHTTPException(404, "Not Found")
            miner_metrics.COMMON.redis_up.set(1 if await redis_probe.reachable() else 0)
            miner_metrics.COMMON.metagraph_age.set(metagraph.age_seconds)
            body, content_type = miner_metrics.render()
            return Response(body, media_type=content_type)

    app.instrumented = telemetry.HttpInstrumentation(
        app.dispatch, metrics=miner_metrics.COMMON.http,
        route_of=telemetry.exact_routes([*app.task_endpoints, "/capacity", "/health", "/metrics"]),
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            ErrorBody(error=code, reason=str(exc.detail)).model_dump(),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    return app
