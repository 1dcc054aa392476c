"""Properties of hybrid aggregation and dropout decisions (pure, no servers)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.validator.managing.score_math import (
    Sample,
    aggregate,
    dropout_decision,
    dropout_probability,
    latency_score,
    sample_organic,
    sample_value,
    standing,
)

samples_st = st.builds(
    Sample,
    score=st.floats(min_value=0, max_value=1),
    kind=st.sampled_from(["synthetic", "organic"]),
    latency=st.floats(min_value=0, max_value=100),
    ok=st.booleans(),
    ts=st.floats(min_value=0, max_value=2e9),
)
weights_st = st.floats(min_value=0, max_value=10)


def perfect(kind="synthetic", latency=0.0):
    return Sample(score=1.0, kind=kind, latency=latency, ok=True, ts=0.0)


@settings(max_examples=400, deadline=None)
@given(
    samples=st.lists(samples_st, max_size=60),
    wq=weights_st,
    wl=weights_st,
    wr=weights_st.filter(lambda w: w > 0),
    organic_weight=st.floats(min_value=0, max_value=1),
    prior=st.floats(min_value=0, max_value=1),
    strength=st.floats(min_value=0, max_value=50),
    reference=st.floats(min_value=0.01, max_value=60),
)
def test_aggregate_is_in_unit_interval(samples, wq, wl, wr, organic_weight, prior, strength, reference):
    value = aggregate(
        samples,
        quality_weight=wq,
        latency_weight=wl,
        reliability_weight=wr,
        organic_weight=organic_weight,
        prior_score=prior,
        prior_strength=strength,
        latency_reference=reference,
    )
    assert 0.0 <= value <= 1.0
    # The result lies between the prior and the best the samples can show.
    if samples and strength > 0:
        assert min(prior, 0.0) - 1e-9 <= value <= max(prior, 1.0) + 1e-9


@given(prior=st.floats(min_value=0, max_value=1), strength=st.floats(min_value=0, max_value=10))
def test_no_samples_is_the_prior(prior, strength):
    assert aggregate([], prior_score=prior, prior_strength=strength) == prior


def test_few_samples_are_shrunk_towards_the_prior_not_divided_by_a_window():
    one = aggregate([perfect()], prior_score=0.0, prior_strength=2.0)
    three = aggregate([perfect()] * 3, prior_score=0.0, prior_strength=2.0)
    many = aggregate([perfect()] * 100, prior_score=0.0, prior_strength=2.0)
    assert one == pytest.approx(1 / 3)
    assert three == pytest.approx(3 / 5)
    assert one < three < many < 1.0
    assert many == pytest.approx(100 / 102)
    # With no prior, three perfect samples are simply perfect: no fixed window of 10 divides them.
    assert aggregate([perfect()] * 3, prior_strength=0.0) == 1.0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=200), prior=st.floats(0, 1), strength=st.floats(0.1, 20))
def test_more_evidence_moves_further_from_the_prior(n, prior, strength):
    good = [perfect()]
    a = aggregate(good * n, prior_score=prior, prior_strength=strength)
    b = aggregate(good * (n + 1), prior_score=prior, prior_strength=strength)
    assert prior - 1e-12 <= a <= b + 1e-12 <= 1.0 + 1e-12


@settings(max_examples=200, deadline=None)
@given(sample=samples_st, reference=st.floats(min_value=0.01, max_value=60))
def test_failures_are_worth_zero(sample, reference):
    failed = Sample.failure(sample.kind, sample.latency, sample.ts)
    assert (
        sample_value(
            failed,
            quality_weight=0.7,
            latency_weight=0.2,
            reliability_weight=0.1,
            latency_reference=reference,
        )
        == 0.0
    )
    bad = Sample(score=1.0, kind=sample.kind, latency=0.0, ok=False, ts=0.0)
    assert (
        sample_value(
            bad, quality_weight=0.7, latency_weight=0.2, reliability_weight=0.1, latency_reference=reference
        )
        == 0.0
    )


def test_quality_latency_and_reliability_are_weighted():
    fast_right = Sample(score=1.0, kind="synthetic", latency=0.0, ok=True, ts=0)
    slow_right = Sample(score=1.0, kind="synthetic", latency=10.0, ok=True, ts=0)
    fast_wrong = Sample(score=0.0, kind="synthetic", latency=0.0, ok=True, ts=0)
    kw = {"quality_weight": 0.7, "latency_weight": 0.2, "reliability_weight": 0.1, "latency_reference": 10.0}
    assert sample_value(fast_right, **kw) == pytest.approx(1.0)
    assert sample_value(slow_right, **kw) == pytest.approx(0.8)
    assert sample_value(fast_wrong, **kw) == 0.0  # speed and success count only as far as the answer does
    assert sample_value(fast_wrong, **kw, gate_by_quality=False) == pytest.approx(0.3)
    half_right = Sample(score=0.5, kind="synthetic", latency=5.0, ok=True, ts=0)
    assert sample_value(half_right, **kw) == pytest.approx(0.7 * 0.5 + (0.2 * 0.5 + 0.1) * 0.5)
    assert sample_value(half_right, **kw, gate_by_quality=False) == pytest.approx(0.7 * 0.5 + 0.2 * 0.5 + 0.1)
    with pytest.raises(ValueError):
        sample_value(
            fast_right, quality_weight=0, latency_weight=0, reliability_weight=0, latency_reference=1
        )


@settings(max_examples=300, deadline=None)
@given(sample=samples_st, reference=st.floats(min_value=0.01, max_value=60))
def test_gating_never_pays_more_than_the_answer_is_worth(sample, reference):
    """Gated, a sample is worth no more than its quality and never more than ungated; a perfect answer is
    worth the same either way."""
    kw = {"quality_weight": 0.7, "latency_weight": 0.2, "reliability_weight": 0.1, "latency_reference": reference}
    gated, ungated = sample_value(sample, **kw), sample_value(sample, **kw, gate_by_quality=False)
    assert gated <= sample.score + 1e-12 and gated <= ungated + 1e-12
    if sample.ok and sample.score == 1.0:
        assert gated == pytest.approx(ungated)


def test_organic_and_synthetic_evidence_are_blended_when_both_exist():
    synthetic = [Sample(score=1.0, kind="synthetic", latency=0, ok=True, ts=0)] * 10
    organic = [Sample.failure("organic", 1.0, 0)] * 2
    kw = {"prior_strength": 0.0}
    assert aggregate(synthetic + organic, organic_weight=0.5, **kw) == pytest.approx(0.5)
    assert aggregate(synthetic + organic, organic_weight=0.25, **kw) == pytest.approx(0.75)
    # One kind alone stands for itself, whatever the weight.
    assert aggregate(synthetic, organic_weight=1.0, **kw) == pytest.approx(1.0)
    assert aggregate(organic, organic_weight=0.0, **kw) == pytest.approx(0.0)


def test_latency_score_falls_linearly_to_zero_at_the_reference():
    assert latency_score(0.0, 2.0) == 1.0
    assert latency_score(1.0, 2.0) == 0.5
    assert latency_score(5.0, 2.0) == 0.0
    assert latency_score(1.0, 0.0) == 0.0


def test_samples_round_trip_and_reject_nonsense():
    s = Sample(score=0.25, kind="organic", latency=0.5, ok=True, ts=1700000000.5)
    assert Sample.from_json(s.to_json()) == s
    for bad in ({"score": 1.5}, {"score": float("nan")}, {"latency": -1.0}, {"kind": "other"}):
        args = {"score": 0.5, "kind": "synthetic", "latency": 0.1, "ok": True, "ts": 0.0} | bad
        with pytest.raises(ValueError):
            Sample(**args)


@settings(max_examples=300, deadline=None)
@given(
    cap=st.integers(min_value=0, max_value=50),
    arrivals=st.integers(min_value=0, max_value=500),
    expected=st.one_of(st.none(), st.integers(min_value=0, max_value=1000)),
    seed=st.integers(0, 2**32),
)
def test_dropout_bound_always_holds(cap, arrivals, expected, seed):
    rng = random.Random(seed)
    scored = 0
    for _ in range(arrivals):
        if dropout_decision(scored, cap, rng, expected_total=expected):
            scored += 1
    assert scored <= cap
    if expected is None or expected <= cap:
        assert scored == min(cap, arrivals)  # under the cap with no thinning nothing is dropped


def test_dropout_thins_at_random_across_the_period():
    """With 4x the cap expected, about a quarter of responses are scored, spread over the period rather
    than the first ``cap`` of it."""
    rng = random.Random(7)
    scored_at = []
    for i in range(400):
        if dropout_decision(len(scored_at), 100, rng, expected_total=400):
            scored_at.append(i)
    assert 80 <= len(scored_at) <= 100
    assert scored_at[-1] > 300 and scored_at[0] < 20
    assert dropout_probability(400, 100) == 0.25
    assert dropout_probability(None, 100) == 1.0
    assert dropout_probability(50, 0) == 0.0


def test_organic_sampling_rate():
    rng = random.Random(3)
    hits = sum(sample_organic(0.15, rng) for _ in range(20_000))
    assert math.isclose(hits / 20_000, 0.15, abs_tol=0.01)
    assert not any(sample_organic(0.0, rng) for _ in range(1000))
    assert all(sample_organic(1.0, rng) for _ in range(1000))


def _answer(score: float, kind: str) -> Sample:
    return Sample(score=score, kind=kind, latency=0.5, ok=True, ts=0.0)  # type: ignore[arg-type]


def test_what_users_got_bars_a_miner_that_serves_challenges_well() -> None:
    """A detector: good answers to the challenges it recognises, bad ones to users. Mixed in, its three
    scored organic answers barely move the mean; on their own they bar it."""
    history = [_answer(0.1, "organic") for _ in range(3)] + [_answer(0.95, "synthetic") for _ in range(17)]
    assert standing(history, 0.8, window=20).quality == pytest.approx(0.1)
    assert standing(history[1:], 0.8, window=20).quality == pytest.approx((0.2 + 17 * 0.95) / 19)  # two: not yet


def test_good_organic_answers_do_not_lift_bad_synthetic_ones() -> None:
    history = [_answer(1.0, "organic") for _ in range(5)] + [_answer(0.2, "synthetic") for _ in range(15)]
    assert standing(history, 0.5, window=20).quality == pytest.approx((5 + 15 * 0.2) / 20)
    assert standing(history, 0.5, window=20).evidence == 15
