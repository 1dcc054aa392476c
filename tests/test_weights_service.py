"""The weight setter: pure score -> weight mapping (property tests) and the service on the in-memory chain."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.chain.memory import MemoryChainClient
from inference_subnet.chain.types import AxonInfo, ChainTimeout, Metagraph, Neuron, WeightAttempt
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.validator import metrics
from inference_subnet.validator.managing.quotas import Entitlement, QuotaBook
from inference_subnet.validator.managing.score_math import Sample
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.weights import (
    WeightSetter,
    interval_blocks,
    paid_by_volume,
    scores_to_weights,
    volume_shares,
    volume_weighted,
    vouched_volumes,
)

NETUID = 1


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


# -- the pure mapping --------------------------------------------------------------------------------------


def neuron(uid: int, hotkey: str, block: int = 1) -> Neuron:
    return Neuron(uid=uid, hotkey=hotkey, coldkey="c", stake=0.0, validator_permit=False,
                  registration_block=block, axon=AxonInfo("1.2.3.4", 8000))


finite = st.one_of(st.floats(min_value=-10, max_value=10), st.sampled_from([math.nan, math.inf, -math.inf, 0.0]))


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(finite, min_size=0, max_size=40),
    strangers=st.dictionaries(st.text(min_size=1, max_size=8), finite, max_size=5),
    shuffle=st.randoms(use_true_random=False),
)
def test_scores_to_weights_properties(scores: list[float], strangers: dict[str, float], shuffle: Any) -> None:
    neurons = [neuron(uid, f"hk{uid}") for uid in range(len(scores))]
    shuffle.shuffle(neurons)
    metagraph = Metagraph(netuid=NETUID, block=10, neurons=tuple(neurons))
    aggregates = {f"hk{uid}@1": s for uid, s in enumerate(scores)} | {f"x{k}@1": v for k, v in strangers.items()}
    uids, weights = scores_to_weights(aggregates, metagraph)
    assert uids == list(range(len(scores)))  # every uid, ascending, whatever the metagraph order
    assert all(w >= 0 and math.isfinite(w) for w in weights)
    clean = [s if math.isfinite(s) and s > 0 else 0.0 for s in scores]
    if sum(clean) > 0:
        assert math.isclose(sum(weights), 1.0, rel_tol=1e-9)
        # order is kept: a better score never gets a smaller weight
        for a in range(len(scores)):
            for b in range(len(scores)):
                if clean[a] > clean[b]:
                    assert weights[a] >= weights[b]
    else:
        assert weights == [0.0] * len(scores)



# -- volume-aware weights (pure) ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    score=st.floats(min_value=0.01, max_value=1.0),
    volume=st.integers(min_value=1, max_value=10_000),
    k=st.integers(min_value=2, max_value=32),
    others=st.lists(st.tuples(st.floats(min_value=0, max_value=1), st.integers(0, 5000)), max_size=10),
    power=st.sampled_from([1.0, 2.0, 3.0]),
)
def test_a_machine_split_over_k_uids_earns_no_more_than_behind_one(score, volume, k, others, power) -> None:
    """The same answers (same quality, same total volume) earn the same whether one uid serves them or k uids
    each serve their part: the k uids' weights sum to the one uid's."""
    rest_scores = {f"o{i}": s for i, (s, _) in enumerate(others)}
    rest_volumes = {f"o{i}": float(v) for i, (_, v) in enumerate(others)}
    one = volume_weighted({"m": score, **rest_scores}, {"m": float(volume), **rest_volumes}, power=power)
    parts = [volume // k + (1 if j < volume % k else 0) for j in range(k)]
    split = volume_weighted(
        {**{f"s{j}": score for j in range(k)}, **rest_scores},
        {**{f"s{j}": float(parts[j]) for j in range(k)}, **rest_volumes},
        power=power,
    )
    share_one = one["m"] / math.fsum(one.values())
    share_split = math.fsum(split[f"s{j}"] for j in range(k)) / math.fsum(split.values())
    assert share_split <= share_one * (1 + 1e-9) + 1e-12


def test_lazy_volume_earns_nothing_and_poor_volume_little() -> None:
    scores = {"honest": 0.8, "lazy": 0.08, "mediocre": 0.4}
    volumes = {"honest": 100.0, "lazy": 5000.0, "mediocre": 100.0}
    raw = volume_weighted(scores, volumes, power=2.0, min_score=0.2)
    assert raw["lazy"] == 0.0
    assert raw["honest"] == pytest.approx(0.64 * 100) and raw["mediocre"] == pytest.approx(0.16 * 100)
    # Without the floor the power alone keeps 50 times the volume of wrong answers below one honest uid.
    assert volume_weighted(scores, volumes, power=2.0)["lazy"] < raw["honest"]


def test_no_volume_at_all_still_gives_weights_by_quality() -> None:
    """A validator that has counted no answer yet (no organic traffic, no synthetic answer so far) still sets
    weights, ordered by score; one with volume pays nothing to a miner it has no volume of."""
    metagraph = Metagraph(netuid=1, block=1, neurons=(neuron(0, "a"), neuron(1, "b"), neuron(2, "c")))
    scores = {"a@1": 0.9, "b@1": 0.5, "c@1": 0.0}
    _, weights = scores_to_weights(volume_weighted(scores, {}, power=2.0), metagraph)
    assert weights[0] > weights[1] > weights[2] == 0.0 and math.isclose(sum(weights), 1.0)
    _, weights = scores_to_weights(volume_weighted(scores, {"b@1": 3.0}, power=2.0), metagraph)
    assert weights == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        volume_weighted(scores, {}, power=0.0)


def test_volume_shares_count_every_task_the_same() -> None:
    shares = volume_shares({"big": {"a": 900.0, "b": 100.0}, "small": {"a": 1.0, "b": 9.0}, "none": {"a": 0.0}})
    assert shares == pytest.approx({"a": 0.5, "b": 0.5})
    assert volume_shares({}) == {} and volume_shares({"t": {"a": -1.0, "b": math.nan}}) == {}


def test_vouched_volume_is_the_capacity_behind_the_part_of_the_share_served() -> None:
    """A floor validator gets the same few requests from a big and a small miner: served alike, the big one
    is vouched for at its size. Serving half the share vouches for half the capacity, borrowing past the
    share for no more than all of it, and no share or no answer for nothing."""
    entitled = {
        "big": Entitlement(share=5, capacity=4000), "small": Entitlement(share=5, capacity=400),
        "half": Entitlement(share=10, capacity=1000), "over": Entitlement(share=10, capacity=1000),
        "unknown": Entitlement(share=0, capacity=0), "silent": Entitlement(share=5, capacity=800),
    }
    served = {"big": 10.0, "small": 10.0, "half": 10.0, "over": 70.0, "unknown": 8.0, "stranger": 9.0}
    vouched = vouched_volumes(served, entitled, epochs=2.0)
    assert vouched == {"big": 4000.0, "small": 400.0, "half": 500.0, "over": 1000.0, "unknown": 0.0,
                       "silent": 0.0}
    with pytest.raises(ValueError):
        vouched_volumes(served, entitled, epochs=0.0)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=20, max_value=10_000),
    fraction=st.floats(min_value=0.001, max_value=1.0),
    served=st.floats(min_value=0.0, max_value=1.0),
    k=st.integers(min_value=2, max_value=16),
)
def test_a_machine_split_over_k_uids_is_vouched_for_no_more_than_behind_one(capacity, fraction, served, k) -> None:
    """The same machine behind k uids declares its capacity in k parts; a validator holding the same fraction
    of each, served the same part of its shares, vouches for the k uids together no more than for one."""
    share = max(1, math.floor(capacity * fraction))
    one = vouched_volumes({"m": served * share}, {"m": Entitlement(share, capacity)}, epochs=1.0)["m"]
    parts = [capacity // k + (1 if j < capacity % k else 0) for j in range(k)]
    split = vouched_volumes(
        {f"s{j}": served * max(1, math.floor(c * fraction)) for j, c in enumerate(parts)},
        {f"s{j}": Entitlement(max(1, math.floor(c * fraction)), c) for j, c in enumerate(parts)},
        epochs=1.0,
    )
    assert math.fsum(split.values()) <= one * (1 + 1e-9) + 1e-9 or served * share < 1


def test_paid_by_volume_ranks_by_quality_whatever_the_validator_s_slice() -> None:
    """Two equally sized miners, one better: the better one is paid more, by the floor validator (five
    requests of each) as by a proportional one."""
    scores = {"good": 0.9, "fair": 0.6}
    for share in (5, 300):
        entitled = {"t": {m: Entitlement(share, 1000) for m in scores}}
        raw = paid_by_volume(scores, {"t": {m: 2.0 * share for m in scores}}, entitled, epochs=2.0, power=2.0,
                             min_score=0.2)
        assert raw == pytest.approx({"good": 0.81 / 2, "fair": 0.36 / 2})


def test_new_hotkey_on_a_uid_gets_zero_not_the_old_score() -> None:
    metagraph = Metagraph(netuid=NETUID, block=10, neurons=(neuron(0, "a"), neuron(1, "b", block=9)))
    uids, weights = scores_to_weights({"a@1": 0.5, "b@1": 0.9}, metagraph)  # b@1 left; b@9 is new
    assert uids == [0, 1] and weights == [1.0, 0.0]


# -- the service on the in-memory chain -------------------------------------------------------------------


class Chain:
    """The in-memory chain with a validator (uid 0) and three miners (uids 1-3)."""

    def __init__(self, **hyper: Any) -> None:
        self.client = MemoryChainClient()
        self.client.create_subnet(NETUID, **({"tempo": 10, "weights_rate_limit": 5} | hyper))
        self.validator = kp("Validator")
        self.client.register(NETUID, self.validator, kp("Owner"), stake=1000, validator_permit=True)
        for i in range(3):
            self.client.register(NETUID, kp(f"Miner{i}"), kp("Owner"))


class LiveSource:
    """Reads the chain's metagraph at each call (what the sidecar keeps in Redis)."""

    def __init__(self, chain: MemoryChainClient) -> None:
        self.chain = chain

    async def current(self) -> Metagraph:
        return await self.chain.metagraph(NETUID)

    @property
    def age_seconds(self) -> float:
        return 0.0


async def scored_book(redis, keys, chain: MemoryChainClient, quality: dict[int, float]) -> ScoreBook:
    book = ScoreBook(redis, keys, ScoringSettings(prior_strength=0))
    metagraph = await chain.metagraph(NETUID)
    for uid, q in quality.items():
        for j in range(4):
            sample = Sample(score=q, kind="synthetic", latency=0.1, ok=True, ts=0.0)
            await book.record(metagraph.by_uid[uid].identity, "arithmetic", sample, f"job{j}")
    return book


def setter(c: Chain, redis, keys, book: ScoreBook, client: Any = None, source: Any = None, **kw: Any) -> WeightSetter:
    options: dict[str, Any] = {"netuid": NETUID, "backoff": 0.01, "retries": 2}
    options.update(kw)
    return WeightSetter(client or c.client, redis, keys, c.validator, book, source or LiveSource(c.client),
                        {"arithmetic": 2.0}, **options)


async def attempts(redis, keys) -> list[dict[str, Any]]:
    return [json.loads(r) for r in await redis.lrange(keys.weight_attempts(), 0, -1)]


async def test_sets_weights_ranking_better_miners_higher(redis, keys) -> None:
    c = Chain()
    book = await scored_book(redis, keys, c.client, {1: 1.0, 2: 0.2})  # uid 3 never answered
    w = setter(c, redis, keys, book)
    attempt = await w.tick()
    assert attempt is not None and attempt.outcome == "success" and attempt.path == "set_weights"
    row = c.client.weights(NETUID)[0]
    assert row[1] > row.get(2, 0) > row.get(3, 0) == 0
    last = json.loads(await redis.get(keys.last_weights()))
    assert last["block"] == attempt.block and last["uids"] == [0, 1, 2, 3]
    assert [a["outcome"] for a in await attempts(redis, keys)] == ["success"]
    assert w.blocks_since_success() == (await c.client.block()) - attempt.block
    assert metrics.REGISTRY.get_sample_value("isn_last_weight_set_block") == attempt.block
    assert (await w.checks())[0].ok


async def test_weights_pay_verified_volume_times_quality(redis, keys) -> None:
    """Three miners equally good and of one size: the one that served this validator three times the answers
    gets three times the weight; one with no volume gets none while others have some."""
    c = Chain()
    book = await scored_book(redis, keys, c.client, {1: 0.9, 2: 0.9, 3: 0.9})
    metagraph = await c.client.metagraph(NETUID)
    quotas = QuotaBook(redis, keys, QuotaSettings(epoch_seconds=4320.0, min_requests=0))
    await quotas.set_stakes(metagraph, c.validator.ss58_address)
    for uid in (1, 2, 3):
        await quotas.set_capacity(metagraph.by_uid[uid].identity, {"arithmetic": 1000})
    volumes = VolumeBook(redis, keys, epoch_seconds=4320.0)
    await volumes.count({metagraph.by_uid[1].identity: 30}, "arithmetic", "organic")
    await volumes.count({metagraph.by_uid[2].identity: 10}, "arithmetic", "synthetic")
    w = setter(c, redis, keys, book, volumes=volumes, quotas=quotas, weight_power=2.0, volume_min_score=0.2)
    attempt = await w.tick()
    assert attempt is not None and attempt.outcome == "success"
    row = c.client.weights(NETUID)[0]
    assert row[1] == pytest.approx(3 * row[2], rel=0.01) and row.get(3, 0) == 0


async def test_waits_for_the_interval_and_the_rate_limit(redis, keys) -> None:
    c = Chain(tempo=3, weights_rate_limit=6)
    hyper = await c.client.hyperparameters(NETUID)
    assert interval_blocks(hyper, None) == 6  # the tempo is shorter than the rate limit
    assert interval_blocks(hyper, 20) == 20
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    w = setter(c, redis, keys, book)
    first = await w.tick()
    assert first is not None and first.outcome == "success"
    for _ in range(4):
        c.client.advance(1)
        assert await w.tick() is None  # within the interval: nothing sent to the chain
    c.client.advance(1)
    second = await w.tick()  # executes exactly one interval after the first
    assert second is not None and second.outcome == "success" and second.block == first.block + 6
    # a restarted setter picks the last success up from Redis and does not set again at once
    again = setter(c, redis, keys, book)
    assert await again.tick() is None and again.last_success_block == second.block


async def test_too_soon_is_recorded_with_the_block_to_come_back(redis, keys) -> None:
    c = Chain(weights_rate_limit=50)
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    assert (await setter(c, redis, keys, book).set_now()).outcome == "success"
    # a stale snapshot (no last_update) hides the rate limit, so the chain answers "too soon"
    live_neurons = (await c.client.metagraph(NETUID)).neurons
    stale = StaticMetagraphSource(Metagraph(netuid=NETUID, block=1, neurons=tuple(
        dataclasses.replace(n, last_update=0) for n in live_neurons)))
    fresh = setter(c, redis, keys, book, source=stale)
    attempt = await fresh.set_now()
    assert attempt is not None and attempt.outcome == "too_soon" and attempt.ready_at_block
    assert fresh.next_try_block == attempt.ready_at_block
    assert [a["outcome"] for a in await attempts(redis, keys)] == ["too_soon", "success"]
    # with the live metagraph the setter knows the rate limit and sends nothing
    live = setter(c, redis, keys, book)
    assert await live.set_now() is None and live.next_try_block == attempt.ready_at_block


async def test_transport_errors_are_retried(redis, keys) -> None:
    c = Chain()
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    flaky = FailingFirst(c.client, failures=2)
    attempt = await setter(c, redis, keys, book, client=flaky, retries=2).set_now()
    assert attempt is not None and attempt.outcome == "success"
    assert [a["outcome"] for a in await attempts(redis, keys)] == ["success", "error", "error"]
    assert "ChainTimeout" in (await attempts(redis, keys))[1]["error"]


async def test_retries_exhausted_schedules_a_later_try(redis, keys) -> None:
    c = Chain()
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    w = setter(c, redis, keys, book, client=FailingFirst(c.client, failures=10), retries=1)
    attempt = await w.tick()
    assert attempt is not None and attempt.outcome == "error"
    assert len(await attempts(redis, keys)) == 2
    assert w.next_try_block == (await c.client.block()) + 1
    assert await w.tick() is None  # not before the scheduled block


async def test_refusals_are_not_retried(redis, keys) -> None:
    c = Chain()
    c.client.set_validator_permit(NETUID, c.validator, False)
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    w = setter(c, redis, keys, book, retries=3)
    attempt = await w.tick()
    assert attempt is not None and attempt.outcome == "rejected" and "Permit" in (attempt.error or "")
    assert len(await attempts(redis, keys)) == 1
    assert w.next_try_block == attempt.block + 10  # the next interval (tempo 10)


async def test_nothing_to_set_without_scores(redis, keys) -> None:
    c = Chain()
    w = setter(c, redis, keys, ScoreBook(redis, keys, ScoringSettings()))
    assert await w.tick() is None
    assert await attempts(redis, keys) == [] and c.client.weights(NETUID) == {}


async def test_ready_fails_when_weights_stop_being_set(redis, keys) -> None:
    c = Chain()
    book = await scored_book(redis, keys, c.client, {1: 1.0})
    w = setter(c, redis, keys, book, client=FailingFirst(c.client, failures=10**6), retries=0,
               max_blocks_without=15)
    await w.tick()
    assert (await w.checks())[0].ok
    c.client.advance(16)
    await w.tick()
    check = (await w.checks())[0]
    assert not check.ok and "16 blocks since start, no weight set yet (limit 15)" in check.detail
    assert metrics.REGISTRY.get_sample_value("isn_blocks_since_last_weight_set") == 16


async def test_commit_reveal_path(redis, keys) -> None:
    c = Chain(commit_reveal_enabled=True, commit_reveal_period=1)
    book = await scored_book(redis, keys, c.client, {1: 1.0, 2: 0.5})
    attempt = await setter(c, redis, keys, book).set_now()
    assert attempt is not None and attempt.outcome == "success"
    assert attempt.path == "commit_timelocked_weights"
    assert c.client.weights(NETUID) == {}  # committed, not yet revealed
    c.client.advance(25)  # past the reveal epoch
    row = c.client.weights(NETUID)[0]
    assert row[1] > row[2] > 0


class FailingFirst:
    """The in-memory chain whose first ``failures`` weight sets time out (a dropped websocket)."""

    def __init__(self, chain: MemoryChainClient, failures: int) -> None:
        self.chain = chain
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chain, name)

    async def set_weights(self, keypair: Keypair, netuid: int, uids: Sequence[int], weights: Sequence[float],
                          **kw: Any) -> WeightAttempt:
        if self.failures > 0:
            self.failures -= 1
            raise ChainTimeout("no answer within 12s")
        return await self.chain.set_weights(keypair, netuid, uids, weights, **kw)


@pytest.fixture(autouse=True)
def _fresh_gauges() -> None:
    metrics.blocks_since_weight_set.set(0)
