"""Miner-side quotas: the share math (pure), its agreement with the validator's planning, and the atomic
Redis consumption under concurrency."""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.miner.quota import MinerQuota, eligible_stakes, epoch_of, seconds_left
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisOptions, connect
from inference_subnet.protocol.quota_math import split_capacity, stake_fractions

KEYS = Keys(subnet="guard", netuid=1, role="miner:m")

stakes_st = st.dictionaries(
    st.text("abcdefghij", min_size=1, max_size=4),
    st.floats(min_value=0, max_value=1e7, allow_nan=False),
    min_size=1,
    max_size=40,
)
min_share_st = st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2, 0.5])


def stake_shares(stakes: dict[str, float], min_share: float) -> dict[str, float]:
    return stake_fractions(stakes, min_share=min_share)


def test_proportional_without_floor() -> None:
    assert stake_shares({"a": 3.0, "b": 1.0}, 0.0) == {"a": 0.75, "b": 0.25}
    assert "stranger" not in stake_shares({"a": 3.0, "b": 1.0}, 0.01)


def test_floor_is_paid_by_the_others() -> None:
    shares = stake_shares({"whale": 999_000.0, "minnow": 1.0, "dust": 0.0}, 0.05)
    assert shares["minnow"] == shares["dust"] == 0.05
    assert shares["whale"] == pytest.approx(0.9)


def test_infeasible_floor_and_zero_stake_split_evenly() -> None:
    assert stake_shares({"a": 100.0, "b": 1.0, "c": 1.0}, 0.5) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert stake_shares({"a": 0.0, "b": 0.0}, 0.0) == {"a": 0.5, "b": 0.5}
    assert stake_shares({}, 0.1) == {}


@settings(max_examples=300, deadline=None)
@given(stakes=stakes_st, min_share=min_share_st)
def test_share_properties(stakes: dict[str, float], min_share: float) -> None:
    shares = stake_shares(stakes, min_share)
    n = len(stakes)
    assert set(shares) == set(stakes)
    assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    floor = min(min_share, 1.0 / n)
    assert all(s >= floor - 1e-12 for s in shares.values())
    # more stake never means a smaller share
    ordered = sorted(stakes, key=lambda k: stakes[k])
    for low, high in itertools.pairwise(ordered):
        assert shares[low] <= shares[high] + 1e-12
    # order of the mapping does not matter
    assert stake_shares(dict(reversed(list(stakes.items()))), min_share) == shares


@settings(max_examples=300, deadline=None)
@given(stakes=stakes_st, min_share=min_share_st, capacity=st.integers(min_value=0, max_value=100_000))
def test_the_guard_allows_exactly_what_validators_plan(stakes, min_share, capacity) -> None:
    """The validator apportions whole requests (``protocol.quota_math.split_capacity``); the
    miner's guard allows every validator exactly that many: never one it was not entitled to (the guard used
    to round each share up, up to 14.5% over a small miner's capacity), never one less."""
    neurons = tuple(
        Neuron(uid=i, hotkey=h, coldkey="c", stake=stake, validator_permit=True, registration_block=1)
        for i, (h, stake) in enumerate(sorted(stakes.items()))
    )
    graph = Metagraph(netuid=1, block=1, neurons=neurons)
    guard = MinerQuota(aioredis.Redis(), KEYS, capacities={"t": capacity}, epoch_seconds=60.0, min_share=min_share)
    planned = split_capacity(capacity, stakes, min_share=min_share)
    allowed = {h: guard.limit(graph, h, "t") for h in stakes}
    assert allowed == planned
    assert sum(allowed.values()) == capacity
    assert guard.limit(graph, "stranger", "t") == 0


def test_epochs() -> None:
    assert epoch_of(8639.9, 4320.0) == 1
    assert seconds_left(4320.0 + 20.0, 4320.0) == pytest.approx(4300.0)


def _neuron(uid: int, stake: float, permit: bool) -> Neuron:
    return Neuron(uid=uid, hotkey=f"hk{uid}", coldkey="ck", stake=stake, validator_permit=permit,
                  registration_block=1)


METAGRAPH = Metagraph(netuid=1, block=1, neurons=(
    _neuron(0, 900.0, True), _neuron(1, 100.0, True), _neuron(2, 5000.0, False), _neuron(3, 0.5, True),
))


def test_capacity_is_split_among_permit_holders_as_validators_plan_it() -> None:
    assert eligible_stakes(METAGRAPH) == {"hk0": 900.0, "hk1": 100.0, "hk3": 0.5}
    assert eligible_stakes(METAGRAPH, require_validator_permit=False) == {
        "hk0": 900.0, "hk1": 100.0, "hk2": 5000.0, "hk3": 0.5,
    }


async def test_concurrent_consumption_is_exact(redis_url, keys) -> None:
    """200 concurrent requests against hk0's share of 100: exactly that many pass, whatever the interleaving."""
    # 200 connections opened at once: on a busy machine some take longer than the 2 s connect deadline of
    # the framework's clients, which is not what this test is about.
    redis = connect(redis_url, RedisOptions(socket_connect_timeout=30.0))
    try:
        await _consume_concurrently(redis, keys)
    finally:
        await redis.aclose()


async def _consume_concurrently(redis, keys) -> None:
    # A burst of the whole epoch and no borrowing: the share counts as a plain per-epoch quota.
    quota = MinerQuota(redis, keys, capacities={"arithmetic": 100}, epoch_seconds=4320.0, min_share=0.01,
                       burst_seconds=4320.0)
    limit = quota.limit(METAGRAPH, "hk0", "arithmetic")
    assert limit == split_capacity(100, eligible_stakes(METAGRAPH), min_share=0.01)["hk0"] == 89
    now = 4320.0 * 1000 + 10
    decisions = await asyncio.gather(*(quota.consume(METAGRAPH, "hk0", "arithmetic", now=now) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == limit
    assert sorted(d.used for d in decisions if d.allowed) == list(range(1, limit + 1))
    assert all(d.retry_after == pytest.approx(4310.0, abs=0.001) for d in decisions if not d.allowed)
    assert {d.reason for d in decisions if not d.allowed} == {"beyond_share"}
    key = keys.caller_quota_used("hk0", "arithmetic", 1000)
    assert int(await redis.hget(key, "g")) == limit
    assert 4310 <= await redis.ttl(key) <= 4310 + 61
    # the next epoch starts afresh; other validators and tasks are separate counters
    assert (await quota.consume(METAGRAPH, "hk0", "arithmetic", now=now + 4320.0)).allowed
    other = await quota.consume(METAGRAPH, "hk1", "arithmetic", now=now)  # its own share, the miner's total
    assert other.allowed and other.used == limit + 1
    assert int(await redis.hget(keys.caller_quota_used("hk1", "arithmetic", 1000), "g")) == 1


async def test_unknown_task_or_caller_has_no_quota(redis, keys) -> None:
    quota = MinerQuota(redis, keys, capacities={"arithmetic": 100}, epoch_seconds=60.0, min_share=0.01)
    assert not (await quota.consume(METAGRAPH, "hk0", "other-task")).allowed
    assert not (await quota.consume(METAGRAPH, "stranger", "arithmetic")).allowed


@pytest.mark.parametrize("coalesced", [False, True])
async def test_a_batch_decides_as_one_request_at_a_time(redis, keys, coalesced) -> None:
    """consume_many sends the very script calls consume sends, in order: the same decisions; and
    decide_many takes the charges of several guards (miners) at once, each on its own counters."""
    from inference_subnet.store.coalescing import Coalescer

    def guard(role: str) -> MinerQuota:
        return MinerQuota(redis, Keys(subnet=keys.subnet, netuid=1, role=role), capacities={"arithmetic": 20},
                          epoch_seconds=60.0, min_share=0.01, burst_seconds=10.0, borrow_ceiling=0.5,
                          coalescer=Coalescer(redis) if coalesced else None)

    now = 60.0 * 1000
    requests = [(h, "arithmetic", now + 0.1 * n) for n, h in enumerate(["hk0", "hk1", "hk3", "hk0"] * 10)]
    single = guard("miner:single")
    expected = [await single.consume(METAGRAPH, h, t, now=at) for h, t, at in requests]
    assert {d.allowed for d in expected} == {True, False}
    assert await guard("miner:batch").consume_many(METAGRAPH, requests) == expected
    a, b = guard("miner:a"), guard("miner:b")
    decided = await a.decide_many([g.charge(METAGRAPH, h, t, now=at) for h, t, at in requests for g in (a, b)])
    assert decided[0::2] == expected and decided[1::2] == expected
    assert await a.consume_many(METAGRAPH, []) == []


# -- the nonce check and the charge in one round trip (what a miner enforcing quotas sends) ----------------


async def counter_value(redis, charge) -> int:
    return int(await redis.hget(charge.keys[1], "total") or 0)


@pytest.mark.parametrize("coalesced", [False, True])
async def test_a_fresh_nonce_is_charged_and_a_replay_is_refused_without_charge(redis, keys, coalesced) -> None:
    from inference_subnet.miner.nonces import RedisNonceStore
    from inference_subnet.store.coalescing import Coalescer

    store = RedisNonceStore(redis, keys, coalescer=Coalescer(redis) if coalesced else None)
    quota = MinerQuota(redis, keys, capacities={"arithmetic": 100}, epoch_seconds=60.0, min_share=0.01)
    charge = quota.charge(METAGRAPH, "hk0", "arithmetic")
    nonce = time.time_ns()
    if isinstance(redis, RedisCluster):
        await _the_cluster_leaves_the_charge_to_the_caller(store, charge, nonce)
        return
    # the bucket's first check opens its floor and leaves the charge to the caller
    assert await store.check_and_count("hk0", nonce, charge.keys, charge.args) == (True, None)
    assert await counter_value(redis, charge) == 0
    same_bucket = next(n for n in itertools.count(nonce + 1)
                       if keys.nonce_floor("hk0", n) == keys.nonce_floor("hk0", nonce))
    assert await store.check_and_count("hk0", same_bucket, charge.keys, charge.args) == (
        True, (1, b"", 1, 0))
    for replayed in (nonce, same_bucket):
        assert await store.check_and_count("hk0", replayed, charge.keys, charge.args) == (
            False, None)
    assert await counter_value(redis, charge) == 1
    # one nanosecond older than the bucket's floor: refused, not charged (compared digit by digit, past
    # what a Lua number holds exactly)
    floor = int(await redis.get(keys.nonce_floor("hk0", nonce)))
    older = next(n for n in range(floor - 1, floor - 100_000, -1)
                 if keys.nonce_floor("hk0", n) == keys.nonce_floor("hk0", nonce))
    assert await store.check_and_count("hk0", older, charge.keys, charge.args) == (False, None)
    assert not await store.check_and_store("hk0", older)
    assert await counter_value(redis, charge) == 1


async def test_the_combined_charge_stops_at_the_limit(redis, keys) -> None:
    from inference_subnet.miner.nonces import RedisNonceStore

    store = RedisNonceStore(redis, keys)
    quota = MinerQuota(redis, keys, capacities={"arithmetic": 100}, epoch_seconds=60.0, min_share=0.01)
    charge = quota.charge(METAGRAPH, "hk0", "arithmetic")
    await redis.hset(charge.keys[1], "total", 99)  # one request short of the miner's capacity
    start = time.time_ns()
    if isinstance(redis, RedisCluster):
        await _the_cluster_leaves_the_charge_to_the_caller(store, charge, start)
        return
    await store.check_and_store("hk0", start)  # opens a floor somewhere; then find nonces in open buckets
    results = []
    n = start + 1
    while len(results) < 3 and n < start + 100_000:  # bounded: open buckets are common
        fresh, counted = await store.check_and_count("hk0", n, charge.keys, charge.args)
        assert fresh
        if counted is not None:
            results.append(counted)
        n += 1
    assert [r[:3] for r in results] == [(1, b"", 100), (0, b"capacity", 100), (0, b"capacity", 100)]


async def _the_cluster_leaves_the_charge_to_the_caller(store, charge, nonce: int) -> None:
    """The nonce's keys and the quota counter live in different slots of a cluster: the combined script
    cannot run there, so every fresh nonce comes back uncharged and a replay is still refused."""
    for n in range(nonce, nonce + 20):
        assert await store.check_and_count("hk0", n, charge.keys, charge.args) == (True, None)
    assert await store.check_and_count("hk0", nonce, charge.keys, charge.args) == (False, None)
