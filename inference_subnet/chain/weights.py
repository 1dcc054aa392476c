"""Scores to the u16 weight vector the chain accepts. Pure math, no I/O.

The chain stores weights as u16 and refuses a set whose largest share (after it max-upscales the values)
exceeds the subnet's ``MaxWeightsLimit``, or that has fewer entries than ``MinAllowedWeights``. A
validator that gets this wrong loses its weights silently every tempo, so the conversion here follows
the bittensor SDK's own steps (clip to the limit redistributing the excess, max-upscale to 65535, round,
drop zeros) and then checks the result with the chain's own fixed-point rule: where the SDK's rounding
would land a hair above the limit, the smallest entries are nudged up so the set is accepted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from itertools import accumulate

from inference_subnet.chain.types import InvalidWeights, WeightVecTooShort

__all__ = [
    "U16_MAX",
    "clip_to_max_weight",
    "convert_weights",
    "limit_to_u16",
    "quantize_u16",
    "weights_digest",
    "within_max_weight_limit",
]

U16_MAX = 65_535
_CLIP_EPSILON = 1e-7
"""Margin the SDK subtracts from the clip cutoff; kept so both land on the same floats."""
_FRAC_BITS = 32
"""The runtime checks the limit in I32F32 fixed point."""


def limit_to_u16(max_weight_limit: float) -> int:
    """The chain's u16 form of a share in [0, 1] (``MaxWeightsLimit``)."""
    if not 0.0 < max_weight_limit <= 1.0:
        raise ValueError(f"max_weight_limit must be in (0, 1], got {max_weight_limit!r}")
    return round(max_weight_limit * U16_MAX)


def clip_to_max_weight(weights: Sequence[float], limit: float) -> list[float]:
    """Shares summing to 1 with none above ``limit``; the excess of the largest goes to the others.

    Every listed entry takes part, zeros included: when the listed uids cannot satisfy the limit
    otherwise, zero entries receive weight (as the SDK does). With too few entries for the limit
    (``len * limit <= 1``) the uniform vector is returned; :func:`convert_weights` then refuses it.
    """
    n = len(weights)
    total = float(sum(weights))
    if n == 0 or total <= 0:
        raise InvalidWeights("all weights are zero: nothing to set")
    if n * limit <= 1:
        return [1.0 / n] * n
    shares = sorted(w / total for w in weights)
    if shares[-1] <= limit:
        return [w / total for w in weights]
    running = list(accumulate(shares))
    # An entry stays unclipped if, with every larger entry cut down to it, it is still below the limit.
    kept = sum(
        1 for i, share in enumerate(shares)
        if share / ((n - i - 1) * share + running[i] + _CLIP_EPSILON) < limit
    )
    cutoff = (limit * running[kept - 1] - _CLIP_EPSILON) / (1 - limit * (n - kept)) * total
    clipped = [min(float(w), cutoff) for w in weights]
    clipped_total = sum(clipped)
    return [w / clipped_total for w in clipped]


def quantize_u16(uids: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[int]]:
    """Max-upscale to 65535, round half to even, drop entries that round to zero."""
    top = max(weights, default=0.0)
    if top <= 0:
        return [], []
    out_uids: list[int] = []
    out_values: list[int] = []
    for uid, weight in zip(uids, weights):
        value = round(weight / top * U16_MAX)
        if value:
            out_uids.append(int(uid))
            out_values.append(value)
    return out_uids, out_values


def within_max_weight_limit(values: Sequence[int], limit_u16: int) -> bool:
    """The runtime's ``check_vec_max_limited`` after its max-upscale, in exact integer arithmetic.

    The runtime divides in I32F32 (truncating): ``max * 2^32 // sum <= limit * 2^32 // 65535``.
    """
    if limit_u16 >= U16_MAX or not values:
        return True
    upscaled = _max_upscale(values)
    total = sum(upscaled)
    if total == 0:
        return True
    return (max(upscaled) << _FRAC_BITS) // total <= (limit_u16 << _FRAC_BITS) // U16_MAX


def convert_weights(
    uids: Sequence[int],
    weights: Sequence[float],
    *,
    n_neurons: int,
    max_weight_limit: float,
    min_allowed_weights: int = 0,
    self_uid: int | None = None,
) -> tuple[list[int], list[int]]:
    """Validator scores to the ``(uids, u16 values)`` pair a weight extrinsic carries.

    Negative and NaN scores count as zero. ``self_uid`` is the caller's own uid: a lone weight on
    itself is exempt from the limit and the minimum count, as on chain. Raises :class:`InvalidWeights`
    for unknown or duplicate uids, all-zero scores or a limit the listed uids cannot satisfy, and
    :class:`WeightVecTooShort` when fewer than ``min(min_allowed_weights, n_neurons)`` entries remain.
    """
    if len(uids) != len(weights):
        raise InvalidWeights(
            f"{len(uids)} uids but {len(weights)} weights", chain_error="WeightVecNotEqualSize"
        )
    uid_list = [int(u) for u in uids]
    unknown = sorted({u for u in uid_list if not 0 <= u < n_neurons})
    if unknown:
        raise InvalidWeights(
            f"uids not on the subnet (it has {n_neurons}): {unknown[:10]}",
            chain_error="UidVecContainInvalidOne",
        )
    if len(set(uid_list)) != len(uid_list):
        raise InvalidWeights("duplicate uids in the weight vector", chain_error="DuplicateUids")
    scores = [_clean(w) for w in weights]
    if not any(scores):
        raise InvalidWeights("all weights are zero (or negative/NaN): nothing to set")
    if math.isinf(sum(scores)):  # huge scores: relative values are all that matter, avoid overflow
        top = max(scores)
        scores = [w / top for w in scores]

    limit_u16 = limit_to_u16(max_weight_limit)
    nonzero = [u for u, w in zip(uid_list, scores) if w > 0]
    is_self = self_uid is not None and nonzero == [self_uid]
    if is_self:
        return [self_uid], [U16_MAX]

    shares = clip_to_max_weight(scores, max_weight_limit) if limit_u16 < U16_MAX else scores
    out_uids, values = quantize_u16(uid_list, shares)
    if not within_max_weight_limit(values, limit_u16):
        values = _nudge_under_limit(values, _exact(uid_list, shares, out_uids), limit_u16)
        if values is None:
            raise InvalidWeights(
                f"{len(out_uids)} nonzero weights cannot keep every share under the max weight limit "
                f"{max_weight_limit:.4f}: weight at least {math.ceil(1 / max_weight_limit)} uids",
                chain_error="MaxWeightExceeded",
            )
    required = min(min_allowed_weights, n_neurons)
    if len(out_uids) < required:
        raise WeightVecTooShort(
            f"{len(out_uids)} nonzero weights after quantisation; the subnet requires {required}",
            chain_error="WeightVecLengthIsLow",
        )
    return out_uids, values


def weights_digest(uids: Sequence[int], values: Sequence[int]) -> str:
    """A short stable fingerprint of a weight vector, for attempt records and logs."""
    h = hashlib.blake2b(digest_size=16)
    for uid, value in zip(uids, values):
        h.update(int(uid).to_bytes(2, "little"))
        h.update(int(value).to_bytes(2, "little"))
    return h.hexdigest()


def _clean(weight: float) -> float:
    value = float(weight)
    if math.isnan(value) or value <= 0:
        return 0.0
    if math.isinf(value):
        raise InvalidWeights("an infinite weight cannot be normalised")
    return value


def _max_upscale(values: Sequence[int]) -> list[int]:
    """The runtime scales values so the largest is 65535 before it checks the limit."""
    top = max(values)
    if top == U16_MAX or top == 0:
        return list(values)
    return [_round_half_away(v * U16_MAX, top) for v in values]


def _round_half_away(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


def _exact(uids: list[int], shares: Sequence[float], kept: list[int]) -> list[float]:
    top = max(shares)
    by_uid = dict(zip(uids, shares))
    return [by_uid[u] / top * U16_MAX for u in kept]


def _nudge_under_limit(values: list[int], exact: list[float], limit_u16: int) -> list[int] | None:
    """Raise the entries rounding pulled furthest down until the largest share meets the limit.

    Values are max-upscaled (the largest is 65535), so the share of the largest only falls as the sum
    grows: add the smallest total that satisfies the runtime's check, one unit per entry, preferring
    entries that rounding cost the most. ``None`` when every entry is already at the top (the limit
    asks for more uids than were given).
    """
    limit_fixed = (limit_u16 << _FRAC_BITS) // U16_MAX
    needed = (U16_MAX << _FRAC_BITS) // (limit_fixed + 1) + 1 - sum(values)
    order = sorted(
        (i for i, v in enumerate(values) if v < U16_MAX), key=lambda i: (values[i] - exact[i], i)
    )
    if not order:
        return None
    out = list(values)
    while needed > 0:
        progressed = False
        for i in order:
            if needed <= 0:
                break
            if out[i] < U16_MAX:
                out[i] += 1
                needed -= 1
                progressed = True
        if not progressed:
            return None
    return out if within_max_weight_limit(out, limit_u16) else None
