"""The guaranteed pace and borrowing rule (``protocol/rate_math.py``), pure: no servers."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.protocol.quota_math import split_capacity
from inference_subnet.protocol.rate_math import (
    BORROWED,
    GUARANTEED,
    REFUSED,
    BookState,
    MinerLimits,
    MinerState,
    Pace,
    book_decide,
    borrow_ceiling,
    gcra,
    miner_decide,
    pace_of,
    reserve_burst,
)

EPOCH = 4320.0
START = 1_704_096_000.0  # an epoch boundary, on a clock as large as a real one


def limits_for(shares: dict[str, int], capacity: int, ceiling: float, burst_seconds: float) -> dict[str, MinerLimits]:
    miner_pace = pace_of(capacity, EPOCH, burst_seconds)
    total = reserve_burst(shares, EPOCH, burst_seconds)
    return {
        v: MinerLimits(share=s, pace=pace_of(s, EPOCH, burst_seconds), ceiling=borrow_ceiling(capacity, ceiling),
                       capacity=capacity, miner_pace=miner_pace, burst_total=total, epoch_seconds=EPOCH,
                       epoch_end=START + EPOCH)
        for v, s in shares.items()
    }


class Miner:
    """The miner-side state of one task in one epoch, driven by the pure decision."""

    def __init__(self, limits: dict[str, MinerLimits]) -> None:
        self.limits = limits
        self.callers = {v: MinerState() for v in limits}
        self.total = 0
        self.miner_tat: float | None = None

    def ask(self, caller: str, now: float) -> tuple[int, str | None]:
        c = self.callers[caller]
        state = MinerState(c.guaranteed, c.borrowed, c.tat, self.total, self.miner_tat)
        mode, reason, after = miner_decide(state, self.limits[caller], now)
        self.callers[caller] = after
        self.total, self.miner_tat = after.total, after.miner_tat
        return mode, reason


def test_a_pace_is_its_share_per_epoch_with_a_burst_of_at_least_one() -> None:
    assert pace_of(100, EPOCH, 60.0) == Pace(43.2, 1)
    assert pace_of(1000, EPOCH, 60.0) == Pace(4.32, 13)
    assert pace_of(0, EPOCH, 60.0).burst == 0
    assert gcra(None, START, pace_of(0, EPOCH, 60.0)) is None


def test_gcra_admits_its_burst_then_one_per_interval_and_forfeits_idle_time() -> None:
    pace = Pace(10.0, 3)
    tat = None
    admitted = []
    for k in range(6):  # six at once: the burst passes
        new = gcra(tat, START, pace)
        admitted.append(new is not None)
        tat = new if new is not None else tat
    assert admitted == [True, True, True, False, False, False]
    assert gcra(tat, START + 10.0, pace) is not None  # one interval later, one more
    # an hour idle is not saved up: again only the burst at once
    tat, count = gcra(tat, START + 10.0, pace), 0
    while (new := gcra(tat, START + 3600.0, pace)) is not None:
        tat, count = new, count + 1
    assert count == 3


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(50, 3000), st.floats(10.0, 300.0), st.floats(0.0, 1.0))
def test_the_epoch_total_never_exceeds_capacity_and_paced_shares_always_pass(seed, capacity, burst, ceiling):
    """Any number of greedy validators asking at random times, one validator pacing itself at exactly its
    guaranteed rate: the paced one is never refused, and the miner never admits more than it declared."""
    rng = random.Random(seed)
    stakes = {f"v{i}": rng.choice([1.0, 10.0, 100.0, 1000.0]) for i in range(rng.randint(1, 12))}
    shares = split_capacity(capacity, stakes, min_share=0.0, min_requests=rng.randint(0, 8))
    assert sum(shares.values()) == capacity
    miner = Miner(limits_for(shares, capacity, ceiling, burst))
    paced = next(v for v in sorted(shares) if shares[v] > 0)
    interval = EPOCH / shares[paced]
    events = [(START + (k + 0.5) * interval, paced) for k in range(shares[paced])]
    greedy = [v for v in shares if v != paced]
    events += [(START + rng.random() * EPOCH, rng.choice(greedy)) for _ in range(3 * capacity if greedy else 0)]
    events.sort()
    modes = {GUARANTEED: 0, BORROWED: 0, REFUSED: 0}
    for now, caller in events:
        mode, reason = miner.ask(caller, now)
        modes[mode] += 1
        if caller == paced:
            assert mode == GUARANTEED, (now - START, reason)
        assert miner.total <= capacity
    assert miner.total == modes[GUARANTEED] + modes[BORROWED] <= capacity
    for v, c in miner.callers.items():
        assert c.guaranteed <= shares[v]
        assert c.borrowed <= borrow_ceiling(capacity, ceiling)


def test_idle_pace_is_lent_and_a_busy_miner_refuses_with_the_reason() -> None:
    shares = {"big": 900, "small": 100}
    lim = limits_for(shares, 1000, 0.5, 60.0)
    miner = Miner(lim)
    # halfway through the epoch nobody has asked: the small validator may borrow beyond its pace
    now = START + EPOCH / 2
    modes = [miner.ask("small", now + k * 0.5)[0] for k in range(40)]
    assert modes[0] == GUARANTEED and BORROWED in modes
    assert miner.callers["small"].borrowed <= lim["small"].miner_pace.burst + 40 * 0.5 / lim["small"].miner_pace.interval
    # the same requests right at the start of the epoch: the reserve for everyone's pace lends nothing
    fresh = Miner(lim)
    early = [fresh.ask("small", START + k * 0.5) for k in range(40)]
    assert [m for m, _ in early].count(BORROWED) == 0
    assert {r for m, r in early if m == REFUSED} == {"beyond_share"}


def test_the_validator_grants_guaranteed_then_borrow_attempts_up_to_its_ceiling() -> None:
    pace = Pace(10.0, 2)
    state = BookState()
    modes = []
    for _ in range(6):
        mode, state = book_decide(state, share=5, synthetic_limit=1, pace=pace, ceiling=3, synthetic=False, now=START)
        modes.append(mode)
    assert modes == [GUARANTEED, GUARANTEED, BORROWED, BORROWED, BORROWED, REFUSED]
    # synthetic traffic is never borrowed, and stays within its own limit
    mode, after = book_decide(BookState(), share=5, synthetic_limit=1, pace=pace, ceiling=3, synthetic=True, now=START)
    assert mode == GUARANTEED and after.synthetic == 1
    mode, _ = book_decide(after, share=5, synthetic_limit=1, pace=pace, ceiling=3, synthetic=True, now=START + 100)
    assert mode == REFUSED


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32))
def test_both_sides_agree_on_guaranteed(seed) -> None:
    """What a validator's book grants as guaranteed, the miner admits as guaranteed (same shares, same
    clock), whatever other validators do."""
    rng = random.Random(seed)
    capacity = rng.randint(20, 2000)
    stakes = {f"v{i}": rng.random() * 100 for i in range(rng.randint(1, 8))}
    shares = split_capacity(capacity, stakes, min_share=0.0, min_requests=3)
    lim = limits_for(shares, capacity, 0.3, 60.0)
    miner = Miner(lim)
    books = {v: BookState() for v in shares}
    for now in sorted(START + rng.random() * EPOCH for _ in range(4 * capacity)):
        v = rng.choice(sorted(shares))
        mode, books[v] = book_decide(books[v], share=shares[v], synthetic_limit=0, pace=lim[v].pace,
                                     ceiling=lim[v].ceiling, synthetic=False, now=now)
        if mode == REFUSED:
            continue
        got, _ = miner.ask(v, now)
        if mode == GUARANTEED:
            assert got == GUARANTEED
        assert miner.total <= capacity
    assert math.isfinite(miner.miner_tat or 0.0)
