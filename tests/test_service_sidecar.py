"""The metagraph sidecar with the in-memory chain and real Redis: sync per block, pub/sub, pruning, HTTP."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from bittensor_wallet import Keypair

from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import ChainError, Metagraph
from inference_subnet.settings import ScoringSettings
from inference_subnet.store.redis import connect
from inference_subnet.validator.managing.score_math import Sample
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.service import ServiceHost
from inference_subnet.validator.sidecar import MetagraphSync, RedisMetagraphSource, identities_digest
from conftest import free_port


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


@pytest.fixture
def chain() -> MemoryChainClient:
    chain = MemoryChainClient()
    chain.create_subnet(1, tempo=10, weights_rate_limit=0)
    chain.register(1, kp("Validator"), kp("Owner"), stake=1000, validator_permit=True)
    for i in range(3):
        chain.register(1, kp(f"Miner{i}"), kp("Owner"))
    return chain


async def test_sync_writes_snapshot_publishes_and_source_reads(chain, redis, keys) -> None:
    sync = MetagraphSync(chain, redis, keys, netuid=1, interval=30)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.metagraph_updates())
    try:
        metagraph = await sync.sync_once()
        stored = Metagraph.from_json(await redis.get(keys.metagraph()))
        assert stored == metagraph and len(stored.neurons) == 4
        message = None
        for _ in range(3):  # the subscribe confirmation comes first
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            if message:
                break
        assert message is not None and message["data"] == str(metagraph.block).encode()
    finally:
        await pubsub.aclose()
    source = RedisMetagraphSource(redis, keys, refresh_seconds=0)
    assert await source.current() == metagraph
    assert source.age_seconds < 5
    assert (await sync.checks())[0].ok


async def test_follows_new_blocks_and_prunes_replaced_miners(chain, redis, keys) -> None:
    book = ScoreBook(redis, keys, ScoringSettings())
    first = await chain.metagraph(1)
    old = first.by_uid[3]
    sample = Sample(score=1.0, kind="synthetic", latency=0.1, ok=True, ts=0.0)
    await book.record(old.identity, "arithmetic", sample, "job-1")
    await book.record(first.by_uid[1].identity, "arithmetic", sample, "job-1")
    prunes: list[int] = []

    async def prune(metagraph: Metagraph) -> None:
        prunes.append(metagraph.block)
        await book.prune(metagraph)

    sync = MetagraphSync(chain, redis, keys, netuid=1, interval=30, on_change=prune)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.metagraph_updates())
    runner = asyncio.create_task(sync.run())
    try:
        await published(pubsub, first.block)
        chain.advance(2)  # a block event, not the 30 s interval, must trigger the next read
        await published(pubsub, first.block + 2)
        assert len(prunes) == 1  # the first sync prunes; identical identities do not prune again
        # uid 3 goes to a new hotkey: the old identity's scores are pruned, the new one starts at zero
        chain.register(1, kp("Newcomer"), kp("Owner"), uid=3)
        await published(pubsub, await chain.block())
        seen = await RedisMetagraphSource(redis, keys).current()
        assert seen.by_uid[3].hotkey == kp("Newcomer").ss58_address
        assert len(prunes) == 2
        assert await book.history(old.identity, "arithmetic") == []
        assert await book.history(seen.by_uid[3].identity, "arithmetic") == []
        assert len(await book.history(first.by_uid[1].identity, "arithmetic")) == 1
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await pubsub.aclose()


async def published(pubsub, block: int, timeout: float = 10.0) -> None:
    """Wait for the sidecar's announcement of ``block`` (or a later one)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (left := end - loop.time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message and int(message["data"]) >= block:
            return
    raise AssertionError(f"the sidecar never announced block {block}")


async def test_chain_failure_keeps_the_last_snapshot(chain, redis, keys) -> None:
    sync = MetagraphSync(chain, redis, keys, netuid=1)
    good = await sync.sync_once()
    bad = MetagraphSync(chain, redis, keys, netuid=99)  # unknown subnet: the chain read fails
    with pytest.raises(ChainError):
        await bad.sync_once()
    assert Metagraph.from_json(await redis.get(keys.metagraph())) == good
    assert not (await bad.checks())[0].ok


async def test_source_survives_redis_outage_and_reports_missing(redis, keys, chain) -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ChainError, match="no metagraph"):
            await RedisMetagraphSource(dead, keys).current()
        with pytest.raises(ChainError, match="not written"):
            await RedisMetagraphSource(redis, keys).current()
        await MetagraphSync(chain, redis, keys, netuid=1).sync_once()
        source = RedisMetagraphSource(redis, keys, refresh_seconds=0)
        known = await source.current()
        source.redis = dead  # Redis goes away: the last good snapshot is kept
        assert await source.current() == known
    finally:
        await dead.aclose()


async def test_http_metagraph(chain, redis, keys) -> None:
    sync = MetagraphSync(chain, redis, keys, netuid=1)
    app = ServiceHost([sync], redis=redis, keys=keys).app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        missing = await client.get("/metagraph")
        assert missing.status_code == 503 and missing.json()["error"] == "no_metagraph"
        metagraph = await sync.sync_once()
        found = await client.get("/metagraph")
        assert found.status_code == 200
        assert Metagraph.from_dict(found.json()) == metagraph


def test_identities_digest_changes_only_with_identities(chain) -> None:
    first = asyncio.run(chain.metagraph(1))
    chain.advance(5)
    later = asyncio.run(chain.metagraph(1))
    assert first.block != later.block and identities_digest(first) == identities_digest(later)
    chain.register(1, kp("Other"), kp("Owner"), uid=2)
    assert identities_digest(asyncio.run(chain.metagraph(1))) != identities_digest(later)
