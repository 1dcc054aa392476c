"""Auto-pipelining of Redis commands (``store/coalescing.py``) as the miner uses it, on a real Redis (plain or
cluster): shared round trips, per-command results and errors, a lost connection reported to every caller, a
cancelled caller leaving the others their replies, and the stores that use it."""

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
from inference_subnet.miner.nonces import RedisNonceStore
from inference_subnet.miner.quota import CONSUME_SCRIPT, MinerQuota
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol import btauth
from inference_subnet.settings import load_settings
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.redis import RedisOptions, connect
from inference_subnet.tasks.arithmetic import ArithmeticTask, make_handler


async def test_concurrent_commands_share_pipelines(redis, keys) -> None:
    coalescer = Coalescer(redis)
    key = keys.prefix + ":batch:counter"
    results = await asyncio.gather(*(coalescer.execute("INCR", key) for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    assert coalescer.commands == 100 and coalescer.round_trips < 10


async def test_lone_command_goes_out_alone(redis, keys) -> None:
    coalescer = Coalescer(redis)
    assert await coalescer.execute("SET", keys.prefix + ":batch:x", b"1", "NX", "PX", 5000) is True
    assert await coalescer.execute("SET", keys.prefix + ":batch:x", b"1", "NX", "PX", 5000) is None
    assert (coalescer.round_trips, coalescer.commands) == (2, 2)


async def test_one_commands_error_is_its_own(redis, keys) -> None:
    coalescer = Coalescer(redis)
    text = keys.prefix + ":batch:text"
    await redis.set(text, b"not a number")
    ok, bad, ok2 = await asyncio.gather(
        coalescer.execute("INCR", keys.prefix + ":batch:n"),
        coalescer.execute("INCR", text),
        coalescer.execute("INCR", keys.prefix + ":batch:n"),
        return_exceptions=True,
    )
    assert isinstance(bad, ResponseError)
    assert sorted([ok, ok2]) == [1, 2]


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis, keys) -> None:
    coalescer = Coalescer(redis)
    key = keys.prefix + ":batch:cancel"
    calls = [asyncio.create_task(coalescer.execute("INCR", key)) for _ in range(5)]
    await asyncio.sleep(0)  # every call is queued; none has its reply yet
    calls[2].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    others = [r for i, r in enumerate(results) if i != 2]
    assert len(set(others)) == 4 and set(others) <= {1, 2, 3, 4, 5}
    assert await redis.get(key) == b"5"  # the cancelled caller's command still ran
    assert (coalescer.round_trips, coalescer.commands) == (1, 5)


async def test_lost_connection_reaches_every_caller(keys) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(socket_connect_timeout=0.5))
    try:
        coalescer = Coalescer(client)
        calls = (coalescer.execute("GET", "x") for _ in range(5))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await client.aclose()


async def test_nonce_store_with_and_without_batching_agree(redis, keys) -> None:
    plain = RedisNonceStore(redis, keys)
    batched = RedisNonceStore(redis, keys, coalescer=Coalescer(redis))
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
    coalescer = Coalescer(redis)
    quota = MinerQuota(redis, keys, capacities={"t": 3}, epoch_seconds=60.0, min_share=0.0, burst_seconds=60.0,
                       coalescer=coalescer)
    # a variant of the script this server has never seen: EVALSHA answers NOSCRIPT, the quota loads it
    quota._script = redis.register_script(CONSUME_SCRIPT + f"\n-- {uuid.uuid4().hex}\n")
    decisions = [await quota.consume(METAGRAPH, "hk0", "t") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    concurrent = await asyncio.gather(*(quota.consume(METAGRAPH, "hk0", "t", now=time.time() + 60) for _ in range(6)))
    assert sum(d.allowed for d in concurrent) == 3


async def test_a_script_batch_is_one_unit_in_order_and_reloads_a_forgotten_script(redis, keys) -> None:
    coalescer = Coalescer(redis)
    # a script this server has never seen: the batch is answered NOSCRIPT, loaded, and sent again once
    script = redis.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = keys.prefix + ":batch:many"
    assert await coalescer.script_many(script, [([key], [n]) for n in (1, 2, 3)]) == [1, 3, 6]
    assert await coalescer.script_many(script, [([key], [4])]) == [10]
    assert await coalescer.script_many(script, []) == []
    assert (coalescer.round_trips, coalescer.commands) == (3, 7)
    try:
        await coalescer.script_many(script, [([key], [1]), ([key], ["x"]), ([key], [1])])
    except ResponseError:
        pass
    else:
        raise AssertionError("a call's error is raised")
    assert int(await redis.get(key)) == 12  # not a transaction: the calls around the failed one ran


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
