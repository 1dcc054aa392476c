"""Weight conversion: equal to the bittensor SDK's own functions, and always acceptable to the runtime."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from bittensor.intents.weights import clip_to_max_weight as sdk_clip
from bittensor.intents.weights import normalize as sdk_normalize
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from inference_subnet.chain.types import InvalidWeights, WeightVecTooShort
from inference_subnet.chain.weights import (
    U16_MAX,
    clip_to_max_weight,
    convert_weights,
    limit_to_u16,
    quantize_u16,
    weights_digest,
    within_max_weight_limit,
)

LIMITS_U16 = [65535, 60000, 32768, 10000, 6553, 3000, 2000, 1000, 655, 455]
scores = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=256
)


def sdk_convert(weights: list[float], limit_u16: int) -> tuple[list[int], list[int]]:
    """What the SDK's ``SetWeights`` submits for these scores (its ``_conform`` steps, no self weight)."""
    floats = sdk_clip(weights, limit_u16 / U16_MAX) if limit_u16 < U16_MAX else weights
    return sdk_normalize(list(range(len(weights))), floats)


# -- equality with the SDK ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(weights=scores, limit_u16=st.sampled_from(LIMITS_U16))
def test_equal_to_sdk_whenever_the_sdk_result_is_valid_on_chain(weights: list[float], limit_u16: int) -> None:
    assume(sum(weights) > 0)
    limit = limit_u16 / U16_MAX
    sdk_uids, sdk_values = sdk_convert(weights, limit_u16)
    if not within_max_weight_limit(sdk_values, limit_u16):
        return  # the runtime would refuse the SDK's vector: covered by the repair tests below
    ours = convert_weights(range(len(weights)), weights, n_neurons=len(weights), max_weight_limit=limit)
    assert ours == (sdk_uids, sdk_values)


def test_equal_to_sdk_on_many_mainnet_shaped_vectors() -> None:
    """256 uids of skewed scores at mainnet-like limits: the same bytes the SDK would submit."""
    rng = random.Random(7)
    compared = 0
    for _ in range(300):
        n = rng.choice([16, 64, 128, 256])
        weights = [rng.random() ** rng.choice([1, 4, 12]) for _ in range(n)]
        limit_u16 = rng.choice(LIMITS_U16)
        if n * limit_u16 / U16_MAX <= 1:
            continue
        sdk = sdk_convert(weights, limit_u16)
        if not within_max_weight_limit(sdk[1], limit_u16):
            continue
        assert convert_weights(range(n), weights, n_neurons=n, max_weight_limit=limit_u16 / U16_MAX) == sdk
        compared += 1
    assert compared > 200


def test_clip_matches_sdk_floats() -> None:
    rng = random.Random(3)
    for _ in range(200):
        weights = [rng.random() for _ in range(rng.randint(1, 100))]
        limit = rng.choice(LIMITS_U16) / U16_MAX
        assert clip_to_max_weight(weights, limit) == sdk_clip(weights, limit)


def test_published_style_values() -> None:
    """Worked by hand: max-upscale to 65535, round half to even, keep order."""
    assert convert_weights([0, 1, 2], [0.1, 0.2, 0.7], n_neurons=3, max_weight_limit=1.0) == (
        [0, 1, 2], [9362, 18724, 65535])  # 0.1/0.7*65535 = 9362.14, 0.2/0.7*65535 = 18724.29
    assert convert_weights([5, 2], [1.0, 1.0], n_neurons=6, max_weight_limit=1.0) == ([5, 2], [65535, 65535])
    # limit 0.5 over [1, 0, 0]: the only share under the cap is to spread over the listed uids
    assert convert_weights([0, 1, 2], [1.0, 0.0, 0.0], n_neurons=3, max_weight_limit=0.5) == (
        [0, 1, 2], [65535, 65535, 65535])
    assert quantize_u16([0, 1, 2], [0.0, 1e-6, 1.0]) == ([2], [65535])  # rounds to zero and is dropped


# -- what the runtime accepts ------------------------------------------------------------------------


def test_runtime_limit_check_boundary() -> None:
    # two equal weights are 0.5 each: 32768/65535 is a hair above 0.5, 32767/65535 a hair below
    assert within_max_weight_limit([65535, 65535], 32768)
    assert not within_max_weight_limit([65535, 65535], 32767)
    assert within_max_weight_limit([65535], 65535)  # the runtime skips the check at u16::MAX
    assert not within_max_weight_limit([65535, 1], 60000)
    assert within_max_weight_limit([100, 100, 100], 21846)  # max-upscaled first, then 1/3 <= 21846/65535


def test_sdk_rounding_can_exceed_the_limit_and_ours_is_repaired() -> None:
    """Some SDK vectors land just above the limit after rounding; ours moves a few units and passes."""
    rng = random.Random(2)
    repaired = 0
    for _ in range(4000):
        n = rng.randint(2, 256)
        limit_u16 = rng.choice([32768, 6553, 655, 2000, 1000, 3000, 10000])
        if n * limit_u16 / U16_MAX <= 1:
            continue
        weights = [rng.random() ** rng.choice([1, 3, 8]) for _ in range(n)]
        sdk_uids, sdk_values = sdk_convert(weights, limit_u16)
        if within_max_weight_limit(sdk_values, limit_u16):
            continue
        uids, values = convert_weights(range(n), weights, n_neurons=n, max_weight_limit=limit_u16 / U16_MAX)
        assert within_max_weight_limit(values, limit_u16)
        assert uids == sdk_uids
        assert all(0 <= v - s <= 2 for v, s in zip(values, sdk_values))
        repaired += 1
    assert repaired >= 10


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    weights=st.lists(
        st.floats(min_value=-1e6, max_value=1e300, allow_subnormal=False) | st.just(math.nan),
        min_size=1, max_size=256,
    ),
    limit_u16=st.sampled_from(LIMITS_U16),
    data=st.data(),
)
def test_properties(weights: list[float], limit_u16: int, data: st.DataObject) -> None:
    n = len(weights)
    uids = data.draw(st.permutations(range(n + 10)))[:n]
    limit = limit_u16 / U16_MAX
    cleaned = [w if w > 0 else 0.0 for w in weights]  # NaN > 0 is False
    try:
        out_uids, values = convert_weights(uids, weights, n_neurons=n + 10, max_weight_limit=limit)
    except InvalidWeights as exc:
        assert sum(cleaned) == 0 or exc.chain_error == "MaxWeightExceeded"
        if exc.chain_error == "MaxWeightExceeded":
            assert n * limit < 1 + 1e-9 or n < math.ceil(1 / limit)
        return
    assert out_uids and len(out_uids) == len(values)
    assert all(1 <= v <= U16_MAX for v in values)  # bounds, zeros dropped
    assert max(values) == U16_MAX  # max-upscaled
    assert within_max_weight_limit(values, limit_u16)  # the runtime accepts it
    positions = [uids.index(u) for u in out_uids]
    assert positions == sorted(positions)  # input order kept
    if limit_u16 == U16_MAX:
        assert set(out_uids) <= {u for u, w in zip(uids, cleaned) if w > 0}  # no clipping: only positives
    # determinism, and scale invariance (a power of two leaves every float ratio exact)
    assert convert_weights(uids, weights, n_neurons=n + 10, max_weight_limit=limit) == (out_uids, values)
    scaled = [w * 4.0 for w in cleaned]
    assert convert_weights(uids, scaled, n_neurons=n + 10, max_weight_limit=limit) == (out_uids, values)


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=2, max_size=64))
def test_shares_respect_limit_and_sum(weights: list[float]) -> None:
    limit = 0.3
    shares = clip_to_max_weight(weights, limit)
    assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
    if len(weights) * limit > 1:
        assert max(shares) <= limit + 1e-9
        # clipping keeps the order of the scores (no inversions)
        pairs = sorted(zip(weights, shares))
        assert all(a[1] <= b[1] + 1e-12 for a, b in itertools.pairwise(pairs))


# -- errors ------------------------------------------------------------------------------------------


def test_errors_are_typed_with_the_runtime_names() -> None:
    with pytest.raises(InvalidWeights) as exc:
        convert_weights([0, 1], [1.0], n_neurons=2, max_weight_limit=1.0)
    assert exc.value.chain_error == "WeightVecNotEqualSize"
    with pytest.raises(InvalidWeights) as exc:
        convert_weights([0, 9], [1.0, 1.0], n_neurons=5, max_weight_limit=1.0)
    assert exc.value.chain_error == "UidVecContainInvalidOne"
    with pytest.raises(InvalidWeights) as exc:
        convert_weights([1, 1], [1.0, 1.0], n_neurons=5, max_weight_limit=1.0)
    assert exc.value.chain_error == "DuplicateUids"
    with pytest.raises(InvalidWeights):
        convert_weights([0, 1], [0.0, -3.0], n_neurons=5, max_weight_limit=1.0)
    with pytest.raises(InvalidWeights):
        convert_weights([0, 1], [math.inf, 1.0], n_neurons=5, max_weight_limit=1.0)
    with pytest.raises(WeightVecTooShort) as exc:
        convert_weights([0, 1, 2], [1.0, 1e-9, 0.0], n_neurons=10, max_weight_limit=1.0, min_allowed_weights=2)
    assert exc.value.chain_error == "WeightVecLengthIsLow"
    with pytest.raises(InvalidWeights) as exc:  # four uids cannot each stay under 0.2
        convert_weights([0, 1, 2, 3], [4.0, 3.0, 2.0, 1.0], n_neurons=4, max_weight_limit=0.2)
    assert exc.value.chain_error == "MaxWeightExceeded"
    with pytest.raises(ValueError):
        limit_to_u16(0.0)


def test_huge_scores_do_not_overflow() -> None:
    assert convert_weights([0, 1, 2], [1e308, 1e308, 5e307], n_neurons=3, max_weight_limit=1.0) == (
        [0, 1, 2], [65535, 65535, 32768])


def test_nan_and_negative_count_as_zero() -> None:
    assert convert_weights([0, 1, 2], [math.nan, -1.0, 2.0], n_neurons=3, max_weight_limit=1.0) == ([2], [65535])


def test_min_allowed_is_capped_by_subnet_size() -> None:
    """The runtime asks for ``min(MinAllowedWeights, subnet size)`` entries."""
    assert convert_weights([0, 1], [1.0, 1.0], n_neurons=2, max_weight_limit=1.0, min_allowed_weights=8) == (
        [0, 1], [65535, 65535])


def test_self_weight_is_exempt_like_on_chain() -> None:
    assert convert_weights([3, 4], [1.0, 0.0], n_neurons=5, max_weight_limit=0.1, min_allowed_weights=4,
                           self_uid=3) == ([3], [65535])
    with pytest.raises(WeightVecTooShort):
        convert_weights([4], [1.0], n_neurons=5, max_weight_limit=1.0, min_allowed_weights=4, self_uid=3)


def test_digest_is_stable_and_sensitive() -> None:
    assert weights_digest([0, 1], [1, 2]) == weights_digest([0, 1], [1, 2])
    assert weights_digest([0, 1], [1, 2]) != weights_digest([0, 1], [2, 1])
    assert len(weights_digest([], [])) == 32
