"""Properties of the stake-based split of a miner's capacity (pure, no servers)."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.protocol.quota_math import (
    apportion,
    clamp_capacity,
    epoch_end,
    epoch_index,
    permitted_stakes,
    seconds_left,
    split_capacity,
    stake_fractions,
    synthetic_limit,
)

hotkeys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
stake_values = st.one_of(
    st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    st.sampled_from([0.0, -5.0, float("nan"), float("inf"), 1e-12]),
)
stake_maps = st.dictionaries(hotkeys, stake_values, min_size=0, max_size=70)
capacities = st.integers(min_value=-5, max_value=200_000)
min_shares = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(capacity=capacities, stakes=stake_maps, min_share=min_shares)
def test_shares_never_exceed_capacity_and_are_never_negative(capacity, stakes, min_share):
    shares = split_capacity(capacity, stakes, min_share=min_share)
    assert set(shares) == set(stakes)
    assert all(isinstance(v, int) and v >= 0 for v in shares.values())
    assert sum(shares.values()) <= max(capacity, 0)
    if stakes and capacity > 0:
        # Largest remainder hands out every unit: nothing of the miner's capacity is wasted.
        assert sum(shares.values()) == capacity


@settings(max_examples=300, deadline=None)
@given(stakes=stake_maps.filter(bool), min_share=min_shares)
def test_fractions_sum_to_one_and_respect_the_floor(stakes, min_share):
    fractions = stake_fractions(stakes, min_share=min_share)
    assert math.isclose(sum(fractions.values()), 1.0, rel_tol=1e-9, abs_tol=1e-9)
    floor = min(min_share, 1.0 / len(stakes))
    assert all(f >= floor * (1 - 1e-12) for f in fractions.values())


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=100_000), stakes=stake_maps.filter(bool), min_share=min_shares
)
def test_every_validator_gets_at_least_its_floor_in_whole_requests(capacity, stakes, min_share):
    shares = split_capacity(capacity, stakes, min_share=min_share)
    floor = min(min_share, 1.0 / len(stakes))
    assert all(v >= math.floor(capacity * floor * (1 - 1e-9)) for v in shares.values())


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=0, max_value=100_000),
    stakes=st.dictionaries(hotkeys, st.floats(min_value=0, max_value=1e6), min_size=2, max_size=40),
    min_share=min_shares,
)
def test_more_stake_never_means_a_smaller_fraction(capacity, stakes, min_share):
    fractions = stake_fractions(stakes, min_share=min_share)
    ordered = sorted(stakes, key=lambda k: stakes[k])
    for low, high in itertools.pairwise(ordered):
        if stakes[high] > stakes[low]:
            assert fractions[high] >= fractions[low] - 1e-12


@settings(max_examples=200, deadline=None)
@given(capacity=capacities, stakes=stake_maps, min_share=min_shares, seed=st.integers(0, 2**32))
def test_split_does_not_depend_on_the_order_of_the_stakes(capacity, stakes, min_share, seed):
    items = list(stakes.items())
    random.Random(seed).shuffle(items)
    assert split_capacity(capacity, dict(items), min_share=min_share) == split_capacity(
        capacity, stakes, min_share=min_share
    )


def test_split_is_proportional_when_nobody_is_under_the_floor():
    shares = split_capacity(1000, {"a": 600.0, "b": 300.0, "c": 100.0}, min_share=0.05)
    assert shares == {"a": 600, "b": 300, "c": 100}


def test_small_validators_are_lifted_to_the_floor_and_paid_for_by_the_others():
    shares = split_capacity(1000, {"whale": 1e6, "shrimp": 1.0, "zero": 0.0}, min_share=0.1)
    assert shares["shrimp"] == 100 and shares["zero"] == 100
    assert shares["whale"] == 800


def test_infeasible_floor_splits_evenly():
    shares = split_capacity(90, {"a": 1e6, "b": 1.0, "c": 0.0}, min_share=0.5)
    assert shares == {"a": 30, "b": 30, "c": 30}


def test_leftover_units_go_by_largest_remainder_deterministically():
    assert split_capacity(10, {"a": 1.0, "b": 1.0, "c": 1.0}, min_share=0.0) == {"a": 4, "b": 3, "c": 3}
    assert apportion(0, {"a": 1.0}) == {"a": 0}
    assert apportion(5, {}) == {}


def test_no_stake_anywhere_is_an_even_split():
    assert split_capacity(9, {"a": 0.0, "b": 0.0, "c": float("nan")}, min_share=0.0) == {
        "a": 3,
        "b": 3,
        "c": 3,
    }


@settings(max_examples=300, deadline=None)
@given(share=st.integers(min_value=-3, max_value=10**6), fraction=st.floats(min_value=-0.5, max_value=1.5))
def test_synthetic_limit_is_a_part_of_the_share(share, fraction):
    limit = synthetic_limit(share, fraction)
    assert 0 <= limit <= max(share, 0)
    if share > 0 and 0 <= fraction <= 1:
        assert limit <= share * fraction + 1e-6


def test_synthetic_limit_uses_the_decimal_value_of_the_setting():
    assert synthetic_limit(100, 0.29) == 29  # float 0.29 * 100 is 28.999...
    assert synthetic_limit(10, 0.3) == 3
    assert synthetic_limit(10, 1.0) == 10
    assert synthetic_limit(10, 0.0) == 0


def test_capacity_is_clamped_to_the_operator_bounds():
    assert clamp_capacity(10**9, min_capacity=1, max_capacity=100) == 100
    assert clamp_capacity(-4, min_capacity=1, max_capacity=100) == 1
    assert clamp_capacity(50, min_capacity=1, max_capacity=100) == 50


@given(now=st.floats(min_value=0, max_value=4e9), length=st.floats(min_value=1, max_value=1e5))
def test_epoch_index_brackets_the_time(now, length):
    epoch = epoch_index(now, length)
    assert epoch * length <= now + 1e-6 * length
    assert now < epoch_end(epoch, length) + 1e-6 * length
    assert 0 <= seconds_left(now, length) <= length * (1 + 1e-9)


def test_only_permit_holders_have_stakes_that_count():
    neurons = tuple(
        Neuron(
            uid=i,
            hotkey=f"hk{i}",
            coldkey="ck",
            stake=float(10 * i),
            validator_permit=i % 2 == 0,
            registration_block=1,
        )
        for i in range(5)
    )
    assert permitted_stakes(Metagraph(netuid=1, block=1, neurons=neurons)) == {
        "hk0": 0.0,
        "hk2": 20.0,
        "hk4": 40.0,
    }
