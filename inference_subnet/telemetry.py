"""The Prometheus pieces every HTTP component shares: build info, the Redis and metagraph gauges set when
scraped, HTTP instrumentation as a pure ASGI middleware, who may scrape, and rendering.

Each component (validator services, gateway, miner) keeps its metrics in its own registry and makes one
:class:`ComponentMetrics` in it, so every ``/metrics`` shows the same shared families, told apart by the
``component`` label, and nothing of another component.

Label values are always bounded sets the code chooses: route *templates* (``/v1/tasks/{task}``, never the
path a client sent, which would let a hostile client create series at will), a fixed set of methods, the
status the app answered. A request to no route is counted under ``route="unmatched"``.

One process or several: a miner running ``--workers N`` shares one listening socket among N processes, so
a scrape reaches any one of them. Its supervisor then sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh private
directory before the workers start; prometheus-client keeps every worker's values in memory-mapped files
there, and :func:`render` sums them, so every scrape shows the whole miner whichever worker answers.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_subnet import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (by the miner's supervisor) when several worker processes share one set of metrics."""
UNMATCHED = "unmatched"
"""The route label of a request no route matched."""
NO_ANSWER = "499"
"""The status label of a request whose client left before any answer was sent."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RouteOf = Callable[[Scope], str]


class HttpMetrics:
    """The HTTP families of one registry, and their labelled children cached per (route, method, status):
    ``labels()`` takes a lock and builds a tuple each call, which the miner's hot path need not pay."""

    def __init__(self, registry: CollectorRegistry, component: str) -> None:
        self.component = component
        self.requests = Counter(
            "isn_http_requests_total", "HTTP requests answered, by route template, method and status.",
            ["component", "route", "method", "status"], registry=registry)
        self.duration = Histogram(
            "isn_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and status.",
            ["component", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.request_bytes = Counter(
            "isn_http_request_bytes_total", "Request body bytes read, by route template.",
            ["component", "route"], registry=registry)
        self.response_bytes = Counter(
            "isn_http_response_bytes_total", "Response body bytes sent, by route template.",
            ["component", "route"], registry=registry)
        self.first_byte = Histogram(
            "isn_http_stream_first_byte_seconds",
            "Streamed answers: time from a request's arrival to the first body byte sent.",
            ["component", "route"], buckets=LATENCY_BUCKETS, registry=registry)
        self._by_status: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._by_route: dict[str, tuple[Any, Any, Any]] = {}

    def observe(self, route: str, method: str, status: str, seconds: float, read: int, sent: int,
                first_byte: float | None) -> None:
        key = (route, method, status)
        pair = self._by_status.get(key)
        if pair is None:
            pair = (self.requests.labels(self.component, route, method, status),
                    self.duration.labels(self.component, route, status))
            self._by_status[key] = pair
        per_route = self._by_route.get(route)
        if per_route is None:
            per_route = (self.request_bytes.labels(self.component, route),
                         self.response_bytes.labels(self.component, route),
                         self.first_byte.labels(self.component, route))
            self._by_route[route] = per_route
        pair[0].inc()
        pair[1].observe(seconds)
        if read:
            per_route[0].inc(read)
        if sent:
            per_route[1].inc(sent)
        if first_byte is not None:
            per_route[2].observe(first_byte)


class ComponentMetrics:
    """What every component exports: build info, Redis reachability, metagraph age, HTTP traffic."""

    def __init__(self, registry: CollectorRegistry, component: str) -> None:
        self.component = component
        self.build_info = Gauge(
            "isn_build_info", "Always 1; the labels name the running version.",
            ["component", "version", "python"], registry=registry, multiprocess_mode="max")
        self.build_info.labels(component, __version__, platform.python_version()).set(1)
        self.redis_up = Gauge(
            "isn_redis_up", "1 when Redis answered a PING at the last scrape, else 0.",
            registry=registry, multiprocess_mode="mostrecent")
        self.metagraph_age = Gauge(
            "isn_metagraph_age_seconds",
            "Age of the metagraph snapshot this process works from, at the last scrape (+Inf: none yet).",
            registry=registry, multiprocess_mode="mostrecent")
        self.http = HttpMetrics(registry, component)


class HttpInstrumentation:
    """Pure ASGI middleware: counts and times every HTTP request of ``app``, with its body bytes both ways
    and, for streamed answers (more than one body message), the time to the first byte.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs each request in an extra task and
    buffers streams; here the cost is two wrapped callables and one cached-child update per request."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, route_of: RouteOf) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        read = 0
        sent = 0
        status: str | None = None
        first_byte: float | None = None

        async def counted_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal sent, status, first_byte
            kind = message["type"]
            if kind == "http.response.body":
                size = len(message.get("body", b""))
                if first_byte is None and size and message.get("more_body", False):
                    first_byte = time.perf_counter() - started
                sent += size
            elif kind == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        except BaseException:
            if status is None:
                status = "500"  # what the server answers for an exception before the status line
            raise
        finally:
            method = scope["method"]
            self.metrics.observe(self.route_of(scope), method if method in METHODS else "other",
                                 status or NO_ANSWER, time.perf_counter() - started, read, sent, first_byte)


def starlette_routes(app: Any) -> RouteOf:
    """Route templates of a Starlette/FastAPI app: the route the router chose (FastAPI leaves it in the
    scope), else the first route whose template matches (a request a middleware answered before routing,
    such as a 413), else :data:`UNMATCHED`."""

    def route_of(scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", UNMATCHED))
        for candidate in app.routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                return str(getattr(candidate, "path", UNMATCHED))
        return UNMATCHED

    return route_of


def exact_routes(paths: Iterable[str]) -> RouteOf:
    """Route labels for an app whose routes are all fixed paths (the miner): one set lookup."""
    known = frozenset(paths)

    def route_of(scope: Scope) -> str:
        path = scope["path"]
        return path if path in known else UNMATCHED

    return route_of


def networks(values: Sequence[str | Network]) -> tuple[Network, ...]:
    return tuple(v if not isinstance(v, str) else ipaddress.ip_network(v, strict=False) for v in values)


def may_scrape(scope: Scope, allowed: Sequence[Network]) -> bool:
    """Whether the peer of this connection is inside one of ``allowed`` (an IPv4-mapped IPv6 peer is
    compared as the IPv4 address it carries)."""
    client = scope.get("client")
    if not client or not allowed:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a Unix socket or anything else without an IP address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in allowed)


class _Joined:
    """Several collectors (registries, restricted registries) as one, for one exposition."""

    def __init__(self, collectors: Sequence[Any]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def multiprocess() -> bool:
    """Whether this process's metrics live in a shared multiprocess directory."""
    return bool(os.environ.get(MULTIPROC_ENV))


def render(*collectors: Any, shared: bool = False) -> tuple[bytes, str]:
    """The exposition body and its content type: ``collectors`` joined or, when ``shared`` and this
    process is one of several workers (:func:`multiprocess`), every worker's values summed."""
    if shared and multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(_Joined(collectors)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
