"""The organic circuit breaker as pure state: streaks, benches that double on relapse, forgiveness."""

from __future__ import annotations

from inference_subnet.validator.managing.breaker import Breaker

from clocks import Clock


def test_a_streak_benches_and_one_success_forgives() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=10.0, clock=clock)
    breaker.failure("m")
    breaker.failure("m")
    breaker.success("m")  # the streak is broken
    breaker.failure("m")
    breaker.failure("m")
    assert not breaker.benched("m")
    breaker.failure("m")
    assert breaker.benched("m") and breaker.usable(["m", "n"]) == ["n"]
    clock.now = 10.5
    assert not breaker.benched("m")


def test_relapses_double_the_bench_up_to_the_ceiling() -> None:
    clock = Clock()
    breaker = Breaker(failures=2, cooldown=10.0, max_cooldown=35.0, clock=clock)
    benches = []
    for _ in range(4):
        start = clock.now
        while not breaker.benched("m"):
            breaker.failure("m")
        while breaker.benched("m"):
            clock.now += 0.5
        benches.append(clock.now - start)
    assert benches == [10.0, 20.0, 35.0, 35.0]
    breaker.success("m")
    breaker.failure("m")
    assert not breaker.benched("m")  # forgiven: a fresh streak again


def test_tracked_miners_are_bounded() -> None:
    breaker = Breaker(failures=5, cooldown=1.0, max_tracked=100)
    for i in range(1000):
        breaker.failure(f"m{i}")
    assert len(breaker._records) == 100
