"""Hostile clients against real servers on 127.0.0.1: the limits of ``settings.http`` hold.

The HTTP tests run a real uvicorn server, built by :func:`inference_subnet.serving.server_config` exactly as
the miner, gateway and validator services build theirs, in a thread with its own event loop (uvloop, as in
production), and talk to it over raw sockets: oversized and over-long heads get 431, slow and idle clients
are closed, connections beyond the cap are refused at once, and a huge head never holds up other callers.
One test runs the miner CLI with two workers to check the limits reach worker processes. The miner's and
the services' own endpoints are checked too: no docs, /health without Redis, /ready on a hung Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from bittensor_wallet import Keypair
from conftest import free_port

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.process import MinerProcess
from inference_subnet.miner.serve import warn_if_unregistered
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.serving import HttpLimits, server_config
from inference_subnet.serving.limits import usable_connections
from inference_subnet.settings import HttpSettings, load_settings
from inference_subnet.store.redis import connect
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.service import Check, Service, ServiceHost
from inference_subnet.validator.sidecar import RedisMetagraphSource

HOST = "127.0.0.1"
GET = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n"


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers 200 with its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ServerThread:
    """A uvicorn server with the framework's config, serving ``echo_app`` from its own thread and loop."""

    def __init__(self, **http: Any) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        config = server_config(echo_app, HttpSettings(**http), log_config=None, log_level="warning",
                               lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """Small limits, so the tests are quick: 1 s to send a request, 4 connections at most."""
    with ServerThread(request_read_timeout=1.0, keep_alive_timeout=5.0, max_connections=4) as running:
        yield running


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a ``content-length`` body."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(port: int, raw: bytes = GET) -> tuple[int, dict[str, str], bytes]:
    """``raw`` on a fresh connection, and the answer."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await read_response(reader)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed after ``within`` seconds."""
    data = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


# -- head limits -------------------------------------------------------------------------------------------
async def test_oversized_head_is_refused_with_431_and_the_server_keeps_serving(server: ServerThread) -> None:
    head = b"GET / HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * 65536 + b"\r\n\r\n"
    status, headers, body = await exchange(server.port, head)
    assert status == 431
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "header_too_large"
    assert (await exchange(server.port))[0] == 200


async def test_two_hundred_header_lines_get_431(server: ServerThread) -> None:
    lines = b"".join(b"x-h%d: 1\r\n" % i for i in range(200))
    assert len(lines) < 16_384  # refused for the count, not the size
    status, _, body = await exchange(server.port, b"GET / HTTP/1.1\r\nhost: test\r\n" + lines + b"\r\n")
    assert status == 431
    assert json.loads(body)["error"] == "too_many_headers"


async def test_requests_within_the_limits_are_served(server: ServerThread) -> None:
    """A head near the limit with a large body in the same write, pipelined requests, and keep-alive
    requests spread over more than one read timeout are all ordinary traffic."""
    body = b"x" * 200_000
    near_limit = (b"POST / HTTP/1.1\r\nhost: test\r\nx-pad: " + b"p" * 15_000
                  + b"\r\ncontent-length: %d\r\n\r\n" % len(body))
    status, _, answer = await exchange(server.port, near_limit + body)
    assert (status, answer) == (200, b"200000")

    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(GET * 3)
        async with asyncio.timeout(10):
            assert [(await read_response(reader))[0] for _ in range(3)] == [200, 200, 200]
        for _ in range(5):  # 1.25 s in all, more than the 1 s read timeout: each request gets its own
            await asyncio.sleep(0.25)
            writer.write(GET)
            async with asyncio.timeout(10):
                assert (await read_response(reader))[0] == 200
    finally:
        writer.close()


async def test_huge_head_does_not_hold_up_other_callers(server: ServerThread) -> None:
    """32 MiB of one header, sent in chunks: the server cuts it off and answers a normal request meanwhile."""
    sent = 0
    total = 512 * 65536
    started = asyncio.Event()

    async def flood() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nhost: test\r\nx-huge: ")
            chunk = b"h" * 65536
            for _ in range(512):
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if sent >= 4 * 65536:
                    started.set()
        except (ConnectionError, OSError):
            pass  # cut off by the server: what should happen
        finally:
            started.set()
            writer.close()

    flooding = asyncio.create_task(flood())
    async with asyncio.timeout(20):
        await started.wait()
        status, _, _ = await exchange(server.port)
        await flooding
    assert status == 200
    assert sent < total  # the server stopped reading the head long before its end


# -- slow and idle clients ---------------------------------------------------------------------------------
async def trickled_until_closed(port: int, start: bytes, byte: bytes) -> tuple[int, bytes]:
    """Send ``start``, then one ``byte`` every 0.25 s for up to 10 s; how many bytes were trickled before
    the server closed the connection (40 if it never did), and what it answered."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(start)
    trickled = 0

    async def trickle() -> None:
        nonlocal trickled
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(40):
                await asyncio.sleep(0.25)
                writer.write(byte)
                await writer.drain()
                trickled += 1

    trickling = asyncio.create_task(trickle())
    try:
        answer = await closed_by_server(reader, within=6)
    finally:
        trickling.cancel()
        writer.close()
    return trickled, answer


async def test_slowloris_head_is_closed_within_the_read_timeout(server: ServerThread) -> None:
    trickled, answer = await trickled_until_closed(
        server.port, b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: ", b"s")
    assert trickled < 40
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


async def test_slow_body_is_closed_within_the_read_timeout(server: ServerThread) -> None:
    trickled, answer = await trickled_until_closed(
        server.port, b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 1000\r\n\r\n", b"b")
    assert trickled < 40
    assert b" 200 " not in answer


async def test_idle_connection_is_closed(server: ServerThread) -> None:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        assert await closed_by_server(reader, within=6) == b""
    finally:
        writer.close()


# -- connection cap ----------------------------------------------------------------------------------------
async def test_connection_beyond_the_cap_is_refused_at_once(server: ServerThread) -> None:
    held = [await asyncio.open_connection(HOST, server.port) for _ in range(4)]
    try:
        for reader, writer in held:  # each is accepted and served, so the server counts all four
            writer.write(GET)
            async with asyncio.timeout(10):
                assert (await read_response(reader))[0] == 200
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            refused = await closed_by_server(reader, within=3)  # well before any timeout of the server
        finally:
            writer.close()
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"too_many_connections" in refused
        for reader, writer in held:  # the four already connected are still served
            writer.write(GET)
            async with asyncio.timeout(10):
                assert (await read_response(reader))[0] == 200
    finally:
        for _, writer in held:
            writer.close()
    # Released: a new connection is served again (once the server has seen the four close).
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(ConnectionError):
                if (await exchange(server.port))[0] == 200:
                    break
            await asyncio.sleep(0.05)


def test_connection_cap_leaves_file_descriptors_for_the_process() -> None:
    assert usable_connections(1024, 2048) == 768
    assert usable_connections(100_000, 2048) == 2048
    assert usable_connections(resource.RLIM_INFINITY, 2048) == 2048
    limits = HttpLimits.from_settings(HttpSettings(max_connections=50))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.max_connections == usable_connections(soft, 50)


# -- the miner CLI with several workers --------------------------------------------------------------------
def miner_subnet(root: Path) -> Path:
    _, miner = create_wallet(root / "wallets", "miner", "default")
    _, validator = create_wallet(root / "wallets", "validator", "default")
    metagraph = Metagraph(netuid=1, block=10, neurons=(
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey="c", stake=1000.0, validator_permit=True,
               registration_block=1),
        Neuron(uid=1, hotkey=miner.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
               registration_block=2, axon=AxonInfo(ip="10.0.0.1", port=1)),
    ))
    path = root / "metagraph.json"
    path.write_text(metagraph.to_json())
    return path


async def test_miner_workers_enforce_the_limits(tmp_path: Path, redis_url: str) -> None:
    """``--workers 2``: the config is pickled into spawned workers, and the limits come with it."""
    metagraph = miner_subnet(tmp_path)
    proc = MinerProcess(port=free_port(), wallet_path=tmp_path / "wallets", wallet_name="miner",
                        metagraph_file=metagraph, workers=2,
                        env={"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"hostile{free_port()}",
                             "ISN_HTTP__MAX_HEADER_BYTES": "4096"})
    with proc:
        for _ in range(4):  # fresh connections, so both workers answer some
            head = b"GET /capacity HTTP/1.1\r\nhost: miner\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n"
            status, _, body = await exchange(proc.port, head)
            assert status == 431 and b"4096" in body
            assert (await exchange(proc.port, b"GET /capacity HTTP/1.1\r\nhost: miner\r\n\r\n"))[0] == 200
        for path in ("/docs", "/redoc", "/openapi.json"):
            status, _, _ = await exchange(proc.port, b"GET %s HTTP/1.1\r\nhost: miner\r\n\r\n" % path.encode())
            assert status == 404


# -- the miner's own endpoints -----------------------------------------------------------------------------
MINER = Keypair.create_from_uri("//HostileMiner")
VALIDATOR = Keypair.create_from_uri("//HostileValidator")
METAGRAPH = Metagraph(netuid=1, block=3, neurons=(
    Neuron(uid=0, hotkey=VALIDATOR.ss58_address, coldkey="c", stake=100.0, validator_permit=True,
           registration_block=1),
    Neuron(uid=1, hotkey=MINER.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
           registration_block=1),
))


@contextlib.asynccontextmanager
async def miner_client(redis: Any, keys: Any) -> AsyncIterator[httpx.AsyncClient]:
    task = ArithmeticTask()
    app = create_miner_app([task], {task.name: load_handler(task, {})}, load_settings(None),
                           keypair=MINER, metagraph=StaticMetagraphSource(METAGRAPH), redis=redis, keys=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner",
                                 timeout=10) as client:
        yield client


async def test_miner_serves_no_docs(redis, keys) -> None:
    async with miner_client(redis, keys) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/capacity")).status_code == 200


async def test_miner_health_is_503_without_redis(redis, keys) -> None:
    async with miner_client(redis, keys) as client:
        healthy = await client.get("/health")
    assert healthy.status_code == 200 and healthy.json()["redis"] == "ok"
    dead = connect(f"redis://{HOST}:{free_port()}/0")
    try:
        async with miner_client(dead, keys) as client:
            health = await client.get("/health")
    finally:
        await dead.aclose()
    assert health.status_code == 503
    assert health.json()["redis"] == "unreachable"
    assert health.json()["status"] == "unavailable"


async def test_miner_warns_when_its_hotkey_is_not_registered(caplog: pytest.LogCaptureFixture) -> None:
    source = StaticMetagraphSource(METAGRAPH)
    stranger = Keypair.create_from_uri("//HostileUnregistered").ss58_address
    with caplog.at_level(logging.WARNING, logger="inference_subnet.miner.serve"):
        assert await warn_if_unregistered(source, MINER.ss58_address)
        assert not caplog.records
        assert not await warn_if_unregistered(source, stranger)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert stranger in caplog.records[0].getMessage()


# -- validator services on a hung Redis --------------------------------------------------------------------
class PingsRedis(Service):
    """A service whose readiness check asks Redis (as the scoring service's does)."""

    def __init__(self, name: str, redis: Any) -> None:
        self.name = name  # type: ignore[misc]
        self.redis = redis

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def checks(self) -> list[Check]:
        await self.redis.ping()
        return [Check(self.name, True)]


@contextlib.asynccontextmanager
async def hung_redis() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a Redis that hangs."""
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, HOST, 0)
    try:
        yield f"redis://{HOST}:{server.sockets[0].getsockname()[1]}/0"
    finally:
        release.set()
        await asyncio.sleep(0)
        server.close()


async def test_ready_answers_in_time_on_a_hung_redis(keys) -> None:
    ready_timeout = 1.0
    async with hung_redis() as url:
        redis = connect(url)
        host = ServiceHost(
            [PingsRedis("first", redis), PingsRedis("second", redis)], redis=redis, keys=keys,
            metagraph=RedisMetagraphSource(redis, keys), check_timeout=ready_timeout,
            http=HttpSettings(request_read_timeout=5.0),
        )
        serving = asyncio.create_task(host.serve(HOST, 0, install_signals=False))
        try:
            await asyncio.wait_for(host.serving.wait(), 10)
            # Four checks wait on Redis: one after another they would take four deadlines.
            async with httpx.AsyncClient(timeout=ready_timeout + 2) as client:
                ready = await client.get(f"http://{HOST}:{host.port}/ready")
            assert ready.status_code == 503
            checks = {c["name"]: c for c in ready.json()["checks"]}
            assert set(checks) == {"redis", "metagraph", "first", "second"}
            assert not any(c["ok"] for c in checks.values())
            assert "no answer within" in checks["redis"]["detail"]
        finally:
            host.request_stop()
            await asyncio.wait_for(serving, 15)
            await redis.aclose()


async def test_gateway_ready_answers_in_time_on_a_hung_redis(tmp_path: Path, keys) -> None:
    """The gateway's /ready runs its checks at once, each within ready_timeout_seconds: a Redis that
    accepts and never answers is a failed check, not a probe that hangs for the socket timeout."""
    from inference_subnet.store.sql import Database
    from inference_subnet.validator.client import MinerClient
    from inference_subnet.validator.gateway.app import create_gateway_app
    from inference_subnet.validator.managing.quotas import QuotaBook
    from inference_subnet.validator.managing.scores import ScoreBook

    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
                             validator={"ready_timeout_seconds": 0.5})
    metagraph = Metagraph(netuid=1, block=1, neurons=())
    async with hung_redis() as url:
        redis = connect(url)
        db = Database(settings.database_url)
        client = MinerClient(Keypair.create_from_uri("//Gateway"))
        app = create_gateway_app(
            settings, tasks={"arithmetic": ArithmeticTask()}, redis=redis, keys=keys,
            metagraph=StaticMetagraphSource(metagraph), miner_client=client,
            quota_book=QuotaBook(redis, keys, settings.validator.quotas),
            score_book=ScoreBook(redis, keys, settings.validator.scoring), db=db,
        )
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=3.0) as http:
                ready = await http.get("/ready")  # within the client's 3 s, not Redis's 5 s socket timeout
            assert ready.status_code == 503
            checks = {c["name"]: c for c in ready.json()["checks"]}
            assert checks["redis"]["ok"] is False and "no answer within" in checks["redis"]["detail"]
            assert checks["database"]["ok"] is True
        finally:
            await client.aclose()
            await db.aclose()
            await redis.aclose()
