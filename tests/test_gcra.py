"""Per-key rate pacing (GCRA): the reference arithmetic's guarantees, and the Redis script holding them for
several gateway replicas at once."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, connect
from inference_subnet.validator.gateway.gcra import Pace, decide, headroom
from inference_subnet.validator.gateway.limits import KeyLimiter

arrivals = st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=80).map(sorted)
paces = st.builds(Pace.per_minute, st.integers(1, 600), st.integers(1, 20))


def _run(times: list[float], pace: Pace) -> list[tuple[float, bool, float]]:
    tat: float | None = None
    out = []
    for now in times:
        decision = decide(tat, now, pace)
        tat = decision.tat
        out.append((now, decision.allowed, decision.retry_after))
    return out


@hsettings(max_examples=300, deadline=None)
@given(times=arrivals, pace=paces, window=st.floats(0.01, 30))
def test_no_window_admits_more_than_burst_plus_its_share(times: list[float], pace: Pace, window: float) -> None:
    admitted = [now for now, allowed, _ in _run(times, pace) if allowed]
    for start in admitted:
        inside = [t for t in admitted if start <= t <= start + window]
        assert len(inside) <= pace.burst + window / pace.interval + 1e-6


@hsettings(max_examples=300, deadline=None)
@given(times=arrivals, pace=paces)
def test_retry_after_is_exact(times: list[float], pace: Pace) -> None:
    """A refused client that waits exactly ``retry_after`` is admitted; one that comes back a little sooner is
    not. Refusals spend nothing, so retrying early costs the client nothing either."""
    tat: float | None = None
    for now in times:
        decision = decide(tat, now, pace)
        if not decision.allowed:
            assert decision.tat == tat or tat is None or decision.tat == max(tat, now)
            assert decide(decision.tat, now + decision.retry_after, pace).allowed
            if decision.retry_after > 1e-6:
                assert not decide(decision.tat, now + decision.retry_after * 0.99 - 1e-9, pace).allowed
        tat = decision.tat


@given(pace=paces)
def test_a_fresh_key_gets_its_burst_then_its_rate(pace: Pace) -> None:
    burst = _run([0.0] * (pace.burst + 1), pace)
    assert [allowed for _, allowed, _ in burst] == [True] * pace.burst + [False]
    assert burst[-1][2] == pytest.approx(pace.interval)
    # Sending exactly at the rate is never refused, however long it goes on.
    steady = _run([i * pace.interval for i in range(50)], pace)
    assert all(allowed for _, allowed, _ in steady)


@hsettings(max_examples=300, deadline=None)
@given(times=arrivals, pace=paces)
def test_headroom_is_what_would_be_admitted_at_once(times: list[float], pace: Pace) -> None:
    """``remaining`` (the x-ratelimit-remaining-requests header) is exactly how many requests sent right now
    would be admitted, and ``reset`` is when the whole burst is back."""
    tat: float | None = None
    for now in times:
        tat = decide(tat, now, pace).tat
        room = headroom(tat, now, pace)
        admitted, probe = 0, tat
        while (next_one := decide(probe, now, pace)).allowed and admitted <= pace.burst:
            admitted, probe = admitted + 1, next_one.tat
        assert room.remaining == admitted
        assert headroom(tat, now + room.reset, pace).remaining == pace.burst
        assert room.reset == pytest.approx(max(0.0, tat - now))


def test_burst_never_exceeds_the_rate() -> None:
    assert Pace.per_minute(3, 10) == Pace(20.0, 3)
    assert Pace.per_minute(600, 10) == Pace(0.1, 10)
    assert Pace.per_minute(60_000, 10) == Pace(0.001, 1000)  # one second of a fast key's rate
    assert Pace.per_minute(61, 1) == Pace(60 / 61, 2)
    with pytest.raises(ValueError):
        Pace.per_minute(0, 10)


async def test_replicas_share_one_pace(redis: RedisClient, redis_url: str, keys: Keys) -> None:
    """Two gateway replicas (separate connections) hammering one key for ~2 s get, together, the burst plus
    one request per interval: no more (the bound GCRA guarantees), and not much less."""
    other = connect(redis_url)
    try:
        replicas = [KeyLimiter(redis, keys, lease_seconds=30, burst=4), KeyLimiter(other, keys, lease_seconds=30, burst=4)]
        interval = 60 / 240  # 240 a minute
        admitted = refused = 0
        started = time.monotonic()
        for i in range(4000):
            if time.monotonic() - started > 2.0:
                break
            admission = await replicas[i % 2].acquire(5, rate_per_minute=240, max_concurrent=10_000)
            admitted += admission.allowed
            refused += not admission.allowed
        window = time.monotonic() - started
        assert admitted <= 4 + window / interval + 1
        assert admitted >= 4 + (window - 0.5) / interval - 1
        assert refused > admitted  # the hammering really was refused, not merely slow
    finally:
        await other.aclose()
