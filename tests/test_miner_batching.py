"""Auto-pipelining of the miner's Redis commands, on a real Redis: shared pipelines, per-command results
and errors, a lost connection reported to every caller, and the stores that use it."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from bittensor_wallet import Keypair
from conftest import free_port
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.batching import CommandBatcher
from inference_subnet.miner.nonces import RedisNonceStore
from inference_subnet.miner.quota import _CONSUME, MinerQuota
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol import btauth
from inference_subnet.settings import load_settings
from inference_subnet.store.redis import RedisOptions, connect
from inference_subnet.tasks.arithmetic import ArithmeticTask, make_handler


async def test_concurrent_commands_share_pipelines(redis, keys) -> None:
    batcher = CommandBatcher(redis)
    key = keys.prefix + ":batch:counter"
    results = await asyncio.gather(*(batcher.execute("INCR", key) for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    assert batcher.commands == 100 and batcher.batches < 10


async def test_lone_command_goes_out_alone(redis, keys) -> None:
    batcher = CommandBatcher(redis)
    assert await batcher.execute("SET", keys.prefix + ":batch:x", b"1", "NX", "PX", 5000) is True
    assert await batcher.execute("SET", keys.prefix + ":batch:x", b"1", "NX", "PX", 5000) is None
    assert (batcher.batches, batcher.commands) == (2, 2)


async def test_one_commands_error_is_its_own(redis, keys) -> None:
    batcher = CommandBatcher(redis)
    text = keys.prefix + ":batch:text"
    await redis.set(text, b"not a number")
    ok, bad, ok2 = await asyncio.gather(
        batcher.execute("INCR", keys.prefix + ":batch:n"),
        batcher.execute("INCR", text),
        batcher.execute("INCR", keys.prefix + ":batch:n"),
        return_exceptions=True,
    )
    assert isinstance(bad, ResponseError)
    assert sorted([ok, ok2]) == [1, 2]


async def test_lost_connection_reaches_every_caller(keys) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(socket_connect_timeout=0.5))
    try:
        batcher = CommandBatcher(client)
        results = await asyncio.gather(*(batcher.execute("GET", "x") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await client.aclose()


async def test_nonce_store_with_and_without_batching_agree(redis, keys) -> None:
    plain = RedisNonceStore(redis, keys)
    batched = RedisNonceStore(redis, keys, batcher=CommandBatcher(redis))
    now = time.time_ns()
    firsts = await asyncio.gather(*(batched.check_and_store("hk", now + i) for i in range(50)))
    assert firsts == [True] * 50
    replays = await asyncio.gather(*(plain.check_and_store("hk", now + i) for i in range(50)))
    assert replays == [False] * 50
    # the same nonce twice in one pipeline: exactly one wins
    assert sorted(await asyncio.gather(batched.check_and_store("hk", now - 1),
                                       batched.check_and_store("hk", now - 1))) == [False, True]


METAGRAPH = Metagraph(netuid=1, block=1, neurons=(
    Neuron(uid=0, hotkey="hk0", coldkey="c", stake=10.0, validator_permit=True, registration_block=1),
))


async def test_quota_reloads_a_script_the_server_does_not_know(redis, keys) -> None:
    batcher = CommandBatcher(redis)
    quota = MinerQuota(redis, keys, capacities={"t": 3}, epoch_seconds=60.0, min_share=0.0, batcher=batcher)
    # a variant of the script this server has never seen: EVALSHA answers NOSCRIPT, the quota loads it
    quota._script = redis.register_script(_CONSUME + f"\n-- {uuid.uuid4().hex}\n")
    decisions = [await quota.consume(METAGRAPH, "hk0", "t") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    concurrent = await asyncio.gather(*(quota.consume(METAGRAPH, "hk0", "t", now=time.time() + 60) for _ in range(6)))
    assert sum(d.allowed for d in concurrent) == 3


async def test_miner_answers_503_when_redis_is_down(keys) -> None:
    miner, validator = Keypair.create_from_uri("//DownMiner"), Keypair.create_from_uri("//DownValidator")
    metagraph = Metagraph(netuid=1, block=1, neurons=(
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey="c", stake=10.0, validator_permit=True,
               registration_block=1),
    ))
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(socket_connect_timeout=0.5))
    task = ArithmeticTask()
    app = create_miner_app([task], {"arithmetic": make_handler({})}, load_settings(None), keypair=miner,
                           metagraph=StaticMetagraphSource(metagraph), redis=dead, keys=keys)
    body = b'{"op":"add","a":1,"b":2}'
    headers = btauth.sign(validator, method="POST", path=task.route, body=body, receiver_ss58=miner.ss58_address)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client:
            r = await client.post(task.route, content=body, headers=headers)
    finally:
        await dead.aclose()
    assert (r.status_code, r.json()["error"]) == (503, "store_unavailable")
