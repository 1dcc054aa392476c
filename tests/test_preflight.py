"""Preflight: the runtime's weight rules, in its order, without a chain."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_subnet.chain.capabilities import Capabilities
from inference_subnet.chain.preflight import Preflight, choose_path, preflight
from inference_subnet.chain.types import (
    ChainError,
    Hyperparameters,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    WeightVecTooShort,
)

SPEC_293 = Capabilities.of(
    f"SubtensorModule.{c}" for c in ("set_weights", "commit_weights", "reveal_weights", "commit_crv3_weights")
)
CURRENT = Capabilities.of(
    f"SubtensorModule.{c}" for c in (
        "set_weights", "set_mechanism_weights", "commit_weights", "reveal_weights", "commit_mechanism_weights",
        "commit_timelocked_weights", "commit_timelocked_mechanism_weights",
    )
)
MECHANISM_ONLY = Capabilities.of(
    ["SubtensorModule.set_mechanism_weights", "SubtensorModule.commit_timelocked_mechanism_weights"]
)
HYPER = Hyperparameters(
    netuid=3, tempo=360, weights_rate_limit=100, max_weights_limit=1.0, min_allowed_weights=2,
    commit_reveal_enabled=False, commit_reveal_period=1, weights_version=0, immunity_period=4096,
    serving_rate_limit=50, activity_cutoff=5000,
)


def check(**overrides) -> Preflight:
    args = {"hyper": HYPER, "block": 1000, "caller_uid": 0, "caller_permit": True, "last_update": 0, "uids": [1, 2, 3],
                "n_neurons": 10, "capabilities": CURRENT}
    args.update(overrides)
    return preflight(**args)


def test_clean_set_is_ok() -> None:
    result = check()
    assert result.ok and result.path == "set_weights"
    assert result.problem is None and not result.too_soon and result.ready_at_block is None
    result.raise_for_problem()
    assert result.error() is None


@pytest.mark.parametrize(
    ("commit_reveal", "caps", "mechid", "expected"),
    [
        (False, SPEC_293, 0, "set_weights"),
        (False, CURRENT, 0, "set_weights"),
        (False, CURRENT, 2, "set_mechanism_weights"),
        (False, SPEC_293, 2, None),
        (False, MECHANISM_ONLY, 0, "set_mechanism_weights"),
        (True, CURRENT, 0, "commit_timelocked_weights"),
        (True, CURRENT, 1, "commit_timelocked_mechanism_weights"),
        (True, MECHANISM_ONLY, 0, "commit_timelocked_mechanism_weights"),
        (True, SPEC_293, 0, "commit_weights"),  # crv3 is never revealed without drand: hash commit instead
        (True, SPEC_293, 1, None),
        (True, Capabilities.of(), 0, None),
    ],
)
def test_path_from_hyperparameters_and_runtime(commit_reveal: bool, caps: Capabilities, mechid: int,
                                               expected: str | None) -> None:
    hyper = dataclasses.replace(HYPER, commit_reveal_enabled=commit_reveal)
    assert choose_path(hyper, caps, mechid) == expected
    result = check(hyper=hyper, capabilities=caps, mechid=mechid)
    assert result.path == expected
    assert (result.problem is None) == (expected is not None)


def test_not_registered() -> None:
    result = check(caller_uid=None)
    assert isinstance(result.problem, NotRegistered)
    assert result.problem.chain_error == "HotKeyNotRegisteredInSubNet"
    assert not result.ok
    with pytest.raises(NotRegistered):
        result.raise_for_problem()


def test_no_permit_unless_self_weight() -> None:
    result = check(caller_permit=False)
    assert isinstance(result.problem, NoValidatorPermit)
    assert result.problem.chain_error == "NeuronNoValidatorPermit"
    assert check(caller_permit=False, uids=[0]).problem is None  # a lone weight on itself


def test_no_permit_is_reported_on_commit_paths_too() -> None:
    """A timelocked commit without a permit is accepted, then dropped at reveal: refuse it up front."""
    hyper = dataclasses.replace(HYPER, commit_reveal_enabled=True)
    result = check(hyper=hyper, caller_permit=False)
    assert result.path == "commit_timelocked_weights"
    assert isinstance(result.problem, NoValidatorPermit)


@pytest.mark.parametrize(
    ("uids", "n_neurons", "error", "name"),
    [
        ([1, 2, 12], 10, InvalidWeights, "UidVecContainInvalidOne"),
        ([1, 1, 2], 10, InvalidWeights, "DuplicateUids"),
        (list(range(11)), 10, InvalidWeights, "UidsLengthExceedUidsInSubNet"),
        ([1], 10, WeightVecTooShort, "WeightVecLengthIsLow"),
        ([], 10, WeightVecTooShort, "WeightVecLengthIsLow"),
    ],
)
def test_weight_vector_problems(uids: list[int], n_neurons: int, error: type[ChainError], name: str) -> None:
    result = check(uids=uids, n_neurons=n_neurons)
    assert isinstance(result.problem, error)
    assert result.problem.chain_error == name
    with pytest.raises(error):
        result.raise_for_problem()


def test_min_weights_capped_by_subnet_size() -> None:
    assert check(uids=[1], n_neurons=1, caller_uid=0).problem is not None  # uid 1 is not on a 1-uid subnet
    assert check(uids=[0], n_neurons=1, caller_uid=0).problem is None


def test_version_key() -> None:
    hyper = dataclasses.replace(HYPER, weights_version=7)
    assert check(hyper=hyper).problem is None  # default: the subnet's own version
    assert check(hyper=hyper, version_key=7).problem is None
    assert check(hyper=hyper, version_key=8).problem is None
    result = check(hyper=hyper, version_key=6)
    assert isinstance(result.problem, InvalidWeights)
    assert result.problem.chain_error == "IncorrectWeightVersionKey"


def test_too_soon_is_an_outcome_with_the_block() -> None:
    result = check(block=1050, last_update=1000)
    assert result.too_soon and result.problem is None and not result.ok
    assert result.ready_at_block == 1099  # the set then executes in block 1100 = LastUpdate + limit
    result.raise_for_problem()  # not an error
    error = result.error()
    assert isinstance(error, RateLimited) and error.ready_at_block == 1099
    assert error.chain_error == "SettingWeightsTooFast"
    assert check(block=1099, last_update=1000).ok
    assert check(block=1050, last_update=0).ok  # never set before
    commit = check(block=1050, last_update=1000, hyper=dataclasses.replace(HYPER, commit_reveal_enabled=True))
    assert commit.too_soon and commit.error().chain_error == "CommittingWeightsTooFast"


def test_problem_wins_over_too_soon() -> None:
    result = check(block=1050, last_update=1000, caller_permit=False)
    assert result.too_soon
    assert isinstance(result.error(), NoValidatorPermit)


@given(
    last=st.integers(min_value=0, max_value=10_000),
    gap=st.integers(min_value=0, max_value=500),
    limit=st.integers(min_value=0, max_value=400),
)
def test_rate_limit_rule(last: int, gap: int, limit: int) -> None:
    hyper = dataclasses.replace(HYPER, weights_rate_limit=limit)
    head = last + gap
    result = check(hyper=hyper, block=head, last_update=last)
    executes_in = head + 1
    assert result.too_soon == (last > 0 and executes_in - last < limit)
    if result.too_soon:
        assert result.ready_at_block > head
        assert not check(hyper=hyper, block=result.ready_at_block, last_update=last).too_soon
        assert check(hyper=hyper, block=result.ready_at_block - 1, last_update=last).too_soon
    else:
        assert result.ready_at_block is None


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        check().too_soon = True  # type: ignore[misc]
