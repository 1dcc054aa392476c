"""The shell every validator service runs in: supervised loops, a heartbeat, and a small HTTP API.

A service is a long-running loop plus optional readiness checks and routes. The shell is the same whether a
process runs one service (``validator service NAME``) or all of them (``validator run``), so the operator sees
one ``/health`` (is the process alive and are its loops running), one ``/ready`` (can it do useful work:
Redis answers, the chain or the sidecar's metagraph is fresh, and each service's own checks), and one
``/metrics`` for the whole process.

Loops are supervised: an unexpected exception is logged, counted, and the loop restarts after a backoff, so a
Redis restart or a chain hiccup never kills the process; only a stop (SIGTERM/SIGINT or ``stop()``) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError

from inference_subnet.chain.types import ChainClient, ChainError, MetagraphSource
from inference_subnet.protocol.wire import ErrorBody
from inference_subnet.serving import server_config
from inference_subnet.settings import HttpSettings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.telemetry import HttpInstrumentation, starlette_routes
from inference_subnet.validator import beats, metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check: its name, whether it passed, and what an operator should know."""

    name: str
    ok: bool
    detail: str = ""


class Service(ABC):
    """A validator service: one loop, its readiness checks and its HTTP routes."""

    name: ClassVar[str]

    @abstractmethod
    async def run(self) -> None:
        """The service's loop; runs until cancelled. Errors escaping it restart it after a backoff."""

    async def checks(self) -> list[Check]:
        """Service-specific readiness checks (the shell adds Redis and chain checks)."""
        return []

    def router(self) -> APIRouter | None:
        """Routes the service serves besides /health, /ready and /metrics."""
        return None

    async def close(self) -> None:
        """Release what the service opened; called once after its loop stopped."""


ChainProbe = Callable[[], Awaitable[int]]
"""Returns the current block; used by /ready to prove the chain is reachable."""


def instance_id() -> str:
    """Names this process in heartbeats: host, pid and a random suffix (pids repeat across containers)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the shell owns SIGTERM/SIGINT so it can stop its loops
    first (uvicorn would re-raise the signal after serving and kill the process before cleanup)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ServiceHost:
    """Runs services under supervision and serves their HTTP API."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        redis: RedisClient,
        keys: Keys,
        chain_probe: ChainProbe | None = None,
        metagraph: MetagraphSource | None = None,
        heartbeat_seconds: float = 5.0,
        check_timeout: float = 2.0,
        max_metagraph_age: float = 300.0,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        instance: str | None = None,
        http: HttpSettings | None = None,
    ) -> None:
        if not services:
            raise ValueError("a service host needs at least one service")
        self.services = list(services)
        self.redis = redis
        self.keys = keys
        self.chain_probe = chain_probe
        self.metagraph = metagraph
        self.heartbeat_seconds = heartbeat_seconds
        self.check_timeout = check_timeout
        self.max_metagraph_age = max_metagraph_age
        self.restart_backoff = restart_backoff
        self.instance = instance or instance_id()
        self.http = http or HttpSettings()
        """Limits of the HTTP API's server (``settings.http``)."""
        self.started_at = time.time()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_error: dict[str, str] = {}
        self._late_checks: set[asyncio.Task[list[Check]]] = set()
        self._stop = asyncio.Event()
        self._closed = False
        self.port: int | None = None
        self.serving = asyncio.Event()
        """Set once the HTTP API accepts connections (``port`` is then the bound port)."""

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every service loop and the heartbeat (no HTTP server: see :meth:`serve`)."""
        for service in self.services:
            if service.name in self._tasks:
                raise ValueError(f"service {service.name!r} added twice")
            self._tasks[service.name] = asyncio.create_task(
                self._supervise(service), name=f"service:{service.name}"
            )
        self._heartbeat = asyncio.create_task(self._beat(), name="service:heartbeat")

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel the loops, wait for them (bounded), close the services and drop the heartbeats."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        tasks = [*self._tasks.values(), *([self._heartbeat] if self._heartbeat else [])]
        for task in await cancel_all(tasks, timeout):
            log.warning("task %s did not stop within %.1fs", task.get_name(), timeout)
        for service in self.services:
            try:
                await service.close()
            except Exception:
                log.exception("closing service %s failed", service.name)
            metrics.service_up.labels(service.name).set(0)
        with contextlib.suppress(Exception):  # best effort, and no waiting out a Redis that hangs
            async with asyncio.timeout(self.check_timeout):
                await self.redis.delete(*(self.keys.heartbeat(s.name, self.instance) for s in self.services))
                await beats.forget(self.redis, self.keys, self._members())

    def _members(self) -> list[str]:
        return [beats.member(s.name, self.instance) for s in self.services]

    def request_stop(self) -> None:
        """Ask :meth:`serve` to shut down (what SIGTERM and SIGINT do)."""
        self._stop.set()

    async def serve(self, host: str, port: int, *, install_signals: bool = True) -> None:
        """Run the services and the HTTP API until :meth:`request_stop` or a signal, then shut down cleanly.

        The port is bound before any loop starts, so "address already in use" is an ``OSError`` naming the
        address, raised at once (uvicorn alone would exit the whole process from inside a task).
        """
        sock = listen_socket(host, port)
        self.port = sock.getsockname()[1]
        config = server_config(self.app(), self.http, log_config=None, lifespan="off", access_log=False)
        server = _Server(config)
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
        await self.start()
        http = asyncio.create_task(server.serve(sockets=[sock]), name="service:http")
        try:
            while not server.started and not http.done():
                await asyncio.sleep(0.01)
            if http.done():
                http.result()
            self.serving.set()
            log.info("services %s serving on http://%s:%d", ", ".join(self.names), host, self.port)
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stop, http}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(http, timeout=10)
            sock.close()
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            log.info("services %s stopped", ", ".join(self.names))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.services]

    # -- supervision -----------------------------------------------------------------------------------
    async def _supervise(self, service: Service) -> None:
        low, high = self.restart_backoff
        delay = low
        while not self._stop.is_set():
            metrics.service_up.labels(service.name).set(1)
            started = time.monotonic()
            try:
                await service.run()
                log.info("service %s finished", service.name)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error[service.name] = f"{type(exc).__name__}: {exc}"
                metrics.service_restarts.labels(service.name).inc()
                log.exception("service %s failed; restarting in %.1fs", service.name, delay,
                              extra={"service": service.name})
            if time.monotonic() - started > high:
                delay = low  # it ran well for a while: this is a fresh failure, not a crash loop
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            delay = min(high, delay * 2)

    async def _beat(self) -> None:
        ttl = max(1, int(self.heartbeat_seconds * 3))
        while not self._stop.is_set():
            body = json.dumps({"instance": self.instance, "pid": os.getpid(), "ts": time.time(),
                               "started_at": self.started_at})
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for service in self.services:
                        pipe.set(self.keys.heartbeat(service.name, self.instance), body, ex=ttl)
                    beats.beat(pipe, self.keys, self._members(), time.time())
                    await pipe.execute()
            except Exception as exc:  # Redis down: keep beating, it will come back
                metrics.service_errors.labels("heartbeat", type(exc).__name__).inc()
                log.debug("heartbeat failed: %s", exc)
            await pause(self._stop, self.heartbeat_seconds)

    # -- health and readiness --------------------------------------------------------------------------
    def alive(self) -> dict[str, bool]:
        """Per service: is its supervised loop still running?"""
        return {name: not task.done() for name, task in self._tasks.items()}

    async def readiness(self) -> list[Check]:
        """Every readiness check, run at once and each bounded by ``check_timeout``, so the whole answer
        takes about one ``check_timeout`` even when Redis accepts connections and never replies."""
        probes: list[tuple[str, Callable[[], Awaitable[Any]], str]] = [
            ("redis", self._check_redis, "")]
        if self.chain_probe is not None:
            probes.append(("chain", self._check_chain, ""))
        elif self.metagraph is not None:
            probes.append(("metagraph", self._check_metagraph, ""))
        probes.extend((s.name, s.checks, "check failed: ") for s in self.services)
        tasks = [asyncio.create_task(self._timed(*probe)) for probe in probes]
        # A check that swallows its cancellation must not hold the answer either: stop waiting just after
        # the deadline and report whatever has not answered as failed.
        done, late = await asyncio.wait(tasks, timeout=self.check_timeout + 0.25)
        for task in late:
            task.cancel()
            self._late_checks.add(task)
            task.add_done_callback(self._late_checks.discard)
        checks: list[Check] = []
        for (name, _, prefix), task in zip(probes, tasks, strict=True):
            if task in done:
                checks.extend(task.result())
            else:
                checks.append(Check(name, False, f"{prefix}no answer within {self.check_timeout:.1f}s"))
        return checks

    async def _timed(self, name: str, check: Callable[[], Awaitable[Any]], prefix: str) -> list[Check]:
        try:
            async with asyncio.timeout(self.check_timeout):
                found = await check()
        except TimeoutError:
            return [Check(name, False, f"{prefix}TimeoutError: no answer within {self.check_timeout:.1f}s")]
        except Exception as exc:
            return [Check(name, False, f"{prefix}{type(exc).__name__}: {exc}")]
        return found if isinstance(found, list) else [found]

    async def _check_redis(self) -> Check:
        """PING, once more on a dropped connection: after a Redis restart the first ping can draw a pooled
        connection the server closed, which the pool then discards. PING changes nothing, so a second try
        asks the server itself rather than reporting a dead socket as a dead Redis."""
        try:
            await self.redis.ping()
        except RedisConnectionError:
            await self.redis.ping()
        return Check("redis", True)

    async def _check_chain(self) -> Check:
        assert self.chain_probe is not None
        block = await self.chain_probe()
        return Check("chain", True, f"block {block}")

    async def _check_metagraph(self) -> Check:
        assert self.metagraph is not None
        # Services that never read the metagraph themselves (synthesizing, scoring) would otherwise
        # report an age of infinity forever: read it here, keeping the last snapshot on failure.
        with contextlib.suppress(ChainError):
            await self.metagraph.current()
        age = self.metagraph.age_seconds
        if age > self.max_metagraph_age:
            return Check("metagraph", False, f"snapshot is {age:.0f}s old (limit {self.max_metagraph_age:.0f}s)")
        return Check("metagraph", True, f"snapshot is {age:.0f}s old")

    # -- HTTP ------------------------------------------------------------------------------------------
    def app(self) -> FastAPI:
        """The process's HTTP API: /health, /ready, /metrics and every service's routes."""
        app = FastAPI(title="inference-subnet validator", docs_url=None, redoc_url=None)
        @app.get("/health")
        async def health() -> JSONResponse:
            alive = self.alive()
            ok = all(alive.values())
            body: dict[str, Any] = {"ok": ok, "instance": self.instance, "services": alive,
                                    "uptime_seconds": round(time.time() - self.started_at, 3)}
            if self._last_error:
                body["last_errors"] = self._last_error
            return JSONResponse(body, status_code=200 if ok else 503)

        @app.get("/ready")
        async def ready() -> JSONResponse:
            checks = await self.readiness()
            ok = all(c.ok for c in checks)
            return JSONResponse({"ok": ok, "checks": [asdict(c) for c in checks]},
                                status_code=200 if ok else 503)

        @app.get("/metrics")
        async def prometheus() -> Response:
            await self.observe()
            body, content_type = metrics.render()
            return Response(body, media_type=content_type)

        for service in self.services:
            router = service.router()
            if router is not None:
                app.include_router(router)
        app.add_middleware(HttpInstrumentation, metrics=metrics.COMMON.http, route_of=starlette_routes(app))
        return app

    async def observe(self) -> None:
        """Set the gauges read at scrape time: Redis reachability and the age of the metagraph the sidecar
        keeps in Redis (the one every service works from), each within ``check_timeout``."""
        try:
            async with asyncio.timeout(self.check_timeout):
                await self._check_redis()
                stamp = await self.redis.get(self.keys.metagraph_synced())
        except Exception as exc:  # noqa: BLE001  (any failure means the same: Redis does not answer)
            log.debug("redis unavailable for /metrics: %s", exc)
            metrics.COMMON.redis_up.set(0)
            return
        metrics.COMMON.redis_up.set(1)
        age = math.inf
        if stamp is not None:
            with contextlib.suppress(ValueError):
                age = max(0.0, time.time() - float(stamp))
        metrics.COMMON.metagraph_age.set(age)


async def cancel_all(tasks: Sequence[asyncio.Task[Any]], timeout: float) -> set[asyncio.Task[Any]]:
    """Cancel tasks and wait for them; returns those still running after ``timeout``.

    Cancellation is repeated: a library that swallows one ``CancelledError`` mid-call (redis-py's asyncio
    client has such a race) must not keep a loop alive through shutdown. If the caller is itself cancelled
    meanwhile (a parent shutting down), the children are still reaped first, then the cancellation goes on.
    """
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    interrupted = False
    while pending and loop.time() < end:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=min(0.2, max(0.0, end - loop.time())))
        except asyncio.CancelledError:
            interrupted = True
            pending = {t for t in pending if not t.done()}
    if interrupted:
        raise asyncio.CancelledError
    return pending


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket; ``OSError`` names the address when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def error(status: int, code: str, reason: str) -> JSONResponse:
    """A 4xx/5xx answer with the project's error body."""
    return JSONResponse(ErrorBody(error=code, reason=reason).model_dump(), status_code=status)


class Every:
    """Tells a loop when a periodic chore is due, without sleeping: ``if every.due(): ...``."""

    def __init__(self, seconds: float, *, immediately: bool = True) -> None:
        self.seconds = seconds
        self._next = 0.0 if immediately else time.monotonic() + seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.seconds
            return True
        return False


async def watch_blocks(chain: ChainClient, new_block: asyncio.Event) -> None:
    """Set ``new_block`` on each block the chain produces; resubscribe with backoff when the stream breaks.
    Runs until cancelled (the sidecar and the weight setter wake on it)."""
    delay = 1.0
    while True:
        try:
            async for _ in chain.blocks():
                new_block.set()
                delay = 1.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("block subscription ended: %s", exc)
        await asyncio.sleep(delay)
        delay = min(30.0, delay * 2)


async def pause(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True when stopping."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
