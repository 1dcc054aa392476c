"""Properties of miner sampling for synthetic rounds and organic routing (pure, no servers)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.validator.managing.sampling import (
    OrganicCandidate,
    QualityBar,
    SyntheticCandidate,
    rank_organic,
    sample_synthetic,
)

synthetic_pools = st.lists(
    st.builds(
        SyntheticCandidate,
        identity=st.text(alphabet="abcdef0123456789", min_size=1, max_size=6),
        synthetic_left=st.integers(min_value=-2, max_value=50),
        challenged=st.integers(min_value=0, max_value=10),
    ),
    max_size=60,
    unique_by=lambda c: c.identity,
)


@settings(max_examples=400, deadline=None)
@given(pool=synthetic_pools, k=st.integers(min_value=-1, max_value=80), seed=st.integers(0, 2**32))
def test_synthetic_sample_is_distinct_eligible_fresh_first_then_least_used_quota(pool, k, seed):
    chosen = sample_synthetic(pool, k, random.Random(seed))
    eligible = {c.identity: c for c in pool if c.synthetic_left > 0}
    assert len(chosen) == len(set(chosen)) == min(max(k, 0), len(eligible))
    assert set(chosen) <= set(eligible)
    left = [c for i, c in eligible.items() if i not in chosen]
    if chosen and left:
        # Nobody challenged already is chosen while a miner not yet challenged this epoch waits.
        if any(c.challenged == 0 for c in left):
            assert all(eligible[i].challenged == 0 for i in chosen)
        # Among the others: nobody chosen had used a larger share of its quota than any left out could after
        # one more challenge.
        seen = [eligible[i] for i in chosen if eligible[i].challenged > 0]
        if seen:
            used = max(c.challenged / (c.challenged + c.synthetic_left) for c in seen)
            assert all(used <= (c.challenged + 1) / (c.challenged + c.synthetic_left) for c in left)


def test_rounds_challenge_every_miner_once_then_in_proportion_to_its_quota():
    """Simulated epoch: 50 miners with unequal quotas, rounds of 8. Every miner is challenged once before
    any is challenged twice; by the end of the epoch each has used about the same share of its quota, so a
    miner with k times the quota (the capacity) is challenged about k times as often."""
    rng = random.Random(11)
    quota = {f"m{i}": 10 + (i * 7) % 40 for i in range(50)}
    challenged = Counter({m: 0 for m in quota})
    for round_no in range(100):
        pool = [SyntheticCandidate(m, quota[m] - challenged[m], challenged[m]) for m in quota]
        for m in sample_synthetic(pool, 8, rng):
            challenged[m] += 1
        if round_no == math.ceil(50 / 8) - 1:
            assert all(challenged[m] >= 1 for m in quota)
            assert max(challenged.values()) <= 2
    assert all(challenged[m] <= quota[m] for m in quota)
    used = [challenged[m] / quota[m] for m in quota]
    assert max(used) - min(used) <= 0.12
    # One miner split in two (each half the quota) gets what the whole one gets, give or take one call each.
    assert abs(challenged["m1"] + challenged["m2"] - challenged["m6"] * (quota["m1"] + quota["m2"]) / quota["m6"]) <= 3


def test_fresh_miners_with_more_remaining_quota_are_drawn_more_often():
    rng = random.Random(5)
    pool = [SyntheticCandidate("big", 90, 0), SyntheticCandidate("small", 10, 0)]
    hits = Counter(sample_synthetic(pool, 1, rng)[0] for _ in range(5000))
    assert 0.85 <= hits["big"] / 5000 <= 0.95


organic_pools = st.lists(
    st.builds(
        OrganicCandidate,
        identity=st.text(alphabet="abcdef0123456789", min_size=1, max_size=6),
        score=st.floats(min_value=0, max_value=1),
        total_left=st.integers(min_value=-1, max_value=20),
        quality=st.floats(min_value=0, max_value=1),
        evidence=st.integers(min_value=0, max_value=10),
    ),
    max_size=60,
    unique_by=lambda c: c.identity,
)
OPEN = QualityBar(min_quality=0.0, relative=0.0, min_evidence=0)
bars = st.builds(
    QualityBar,
    min_quality=st.floats(min_value=0, max_value=1),
    relative=st.floats(min_value=0, max_value=1),
    min_evidence=st.integers(min_value=0, max_value=5),
)


@settings(max_examples=400, deadline=None)
@given(
    pool=organic_pools,
    bar=st.one_of(st.just(OPEN), bars),
    contenders=st.integers(min_value=1, max_value=10),
    seed=st.one_of(st.none(), st.integers(0, 99)),
)
def test_organic_ranking_puts_the_best_contenders_first_then_the_rest_by_score(pool, bar, contenders, seed):
    rng = random.Random(seed) if seed is not None else None
    ranked = rank_organic(pool, bar=bar, contenders=contenders, rng=rng)
    by_id = {c.identity: c for c in pool}
    judged = [c for c in pool if c.total_left > 0 and c.evidence >= bar.min_evidence and c.quality >= bar.min_quality]
    best = max((c.quality for c in judged), default=0.0)
    eligible = [c for c in judged if c.quality >= bar.relative * best]
    assert sorted(ranked) == sorted(c.identity for c in eligible)
    head, tail = ranked[:contenders], ranked[contenders:]
    # The head holds the best scores; nobody in the tail beats anyone in the head.
    if head and tail:
        assert min(by_id[i].score for i in head) >= max(by_id[i].score for i in tail)
    # The tail by score; without a random source, the head by score x quota left.
    assert [by_id[i].score for i in tail] == sorted((by_id[i].score for i in tail), reverse=True)
    if rng is None:
        weights = [max(by_id[i].score, 1e-6) * by_id[i].total_left for i in head]
        assert weights == sorted(weights, reverse=True)


def test_contenders_come_first_in_proportion_to_score_and_quota_left():
    pool = [
        OrganicCandidate("big", 0.9, total_left=30, quality=1.0, evidence=9),  # weight 27
        OrganicCandidate("good", 0.9, total_left=10, quality=1.0, evidence=9),  # weight 9
        OrganicCandidate("fast-but-small", 0.9, total_left=5, quality=1.0, evidence=9),  # weight 4.5
        OrganicCandidate("weak", 0.2, total_left=50, quality=1.0, evidence=9),  # not a contender
    ]
    rng = random.Random(3)
    firsts = Counter(rank_organic(pool, bar=OPEN, contenders=3, rng=rng)[0] for _ in range(6000))
    assert set(firsts) == {"big", "good", "fast-but-small"}
    assert firsts["big"] / 6000 == pytest.approx(27 / 40.5, abs=0.03)
    assert firsts["good"] / 6000 == pytest.approx(9 / 40.5, abs=0.03)
    # Failover follows the same draw: every order holds the three contenders, then the rest by score.
    assert all(r[3:] == ["weak"] for r in (rank_organic(pool, bar=OPEN, contenders=3, rng=rng) for _ in range(50)))


def test_users_are_never_sent_to_wrong_unknown_or_much_worse_miners():
    bar = QualityBar(min_quality=0.5, relative=0.8, min_evidence=3)
    pool = [
        OrganicCandidate("good", 0.9, total_left=5, quality=0.95, evidence=20),
        OrganicCandidate("fine", 0.8, total_left=5, quality=0.80, evidence=20),
        OrganicCandidate("mediocre", 0.7, total_left=5, quality=0.60, evidence=20),  # < 0.8 * 0.95
        OrganicCandidate("wrong", 0.3, total_left=5, quality=0.0, evidence=50),
        OrganicCandidate("new", 0.0, total_left=5, quality=1.0, evidence=2),  # not yet judged
    ]
    assert rank_organic(pool, bar=bar, contenders=3) == ["good", "fine"]
    # When the best miners' quota is spent, the next are judged against each other, not against them.
    spent = [c if c.identity not in ("good", "fine") else OrganicCandidate(c.identity, c.score, 0, 1.0, 20)
             for c in pool]
    assert rank_organic(spent, bar=bar, contenders=3) == ["mediocre"]
    # Fewer good miners than contenders: the wrong one still gets nothing (top-N alone would send it users).
    assert "wrong" not in rank_organic(pool, bar=bar, contenders=10)
