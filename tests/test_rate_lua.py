"""The Lua scripts of the guaranteed pace and borrowing agree with the pure arithmetic, on real Redis.

``miner_admit.lua`` (the miner's decision) against :func:`rate_math.miner_decide`, and ``consume_quota.lua``
(the validator's book) against :func:`rate_math.book_decide`: the same request sequence, decision for
decision, and the same counters afterwards."""

from __future__ import annotations

import random

import pytest
from redis.crc import key_slot

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.miner.quota import MinerQuota
from inference_subnet.protocol.quota_math import split_capacity
from inference_subnet.protocol.rate_math import (
    BORROWED,
    GUARANTEED,
    REFUSED,
    BookState,
    MinerState,
    book_decide,
    miner_decide,
)
from inference_subnet.settings import QuotaSettings
from inference_subnet.store.keys import Keys
from inference_subnet.validator.managing.quotas import QuotaBook

EPOCH = 600.0
START = 1_704_096_000.0 - 1_704_096_000.0 % EPOCH


def _metagraph(stakes: dict[str, float], miner: str = "m") -> Metagraph:
    neurons = [Neuron(uid=i, hotkey=h, coldkey="ck", stake=s, validator_permit=True, registration_block=1)
               for i, (h, s) in enumerate(sorted(stakes.items()))]
    neurons.append(Neuron(uid=len(neurons), hotkey=miner, coldkey="ck", stake=0.0, validator_permit=False,
                          registration_block=7))
    return Metagraph(netuid=1, block=1, neurons=tuple(neurons))


STAKES = {"whale": 700.0, "mid": 250.0, "a": 20.0, "b": 20.0, "c": 10.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_the_miner_script_decides_as_the_pure_math(redis, keys, seed) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([40, 300, 1000])
    metagraph = _metagraph(STAKES)
    quota = MinerQuota(redis, keys, capacities={"t": capacity}, epoch_seconds=EPOCH, min_share=0.0,
                       min_requests=3, burst_seconds=20.0, borrow_ceiling=0.4)
    states = {h: MinerState() for h in STAKES}
    total, miner_tat = 0, None
    seen = {GUARANTEED: 0, BORROWED: 0, REFUSED: 0}
    for now in sorted(START + rng.random() * EPOCH for _ in range(3 * capacity)):
        hotkey = rng.choice(sorted(STAKES))
        lim = quota.limits(metagraph, hotkey, "t", now)
        c = states[hotkey]
        mode, reason, after = miner_decide(MinerState(c.guaranteed, c.borrowed, c.tat, total, miner_tat), lim, now)
        decision = await quota.consume(metagraph, hotkey, "t", now=now)
        assert (decision.mode if decision.allowed else REFUSED, decision.reason) == (mode, reason)
        assert decision.used == after.total
        states[hotkey], total, miner_tat = after, after.total, after.miner_tat
        seen[mode] += 1
    assert seen[GUARANTEED] and seen[BORROWED] and seen[REFUSED]  # every branch was exercised
    assert total <= capacity
    epoch = int(START // EPOCH)
    assert int(await redis.hget(keys.miner_quota_total("t", epoch), "total")) == total
    for hotkey, state in states.items():
        g, b, tat = await redis.hmget(keys.caller_quota_used(hotkey, "t", epoch), ["g", "b", "tat"])
        assert (int(g or 0), int(b or 0)) == (state.guaranteed, state.borrowed)
        assert (float(tat) if tat is not None else None) == state.tat  # to the last bit


@pytest.mark.parametrize("seed", [0, 1])
async def test_the_validator_script_grants_as_the_pure_math(redis, keys, seed) -> None:
    rng = random.Random(seed)
    settings = QuotaSettings(epoch_seconds=EPOCH, min_requests=3, burst_seconds=20.0, borrow_ceiling=0.2)
    now_box = [START]
    book = QuotaBook(redis, keys, settings, clock=lambda: now_box[0])
    await book.set_stakes(_metagraph(STAKES, "m"), "mid")
    capacity = 300
    shares = await book.set_capacity("m@7", {"t": capacity})
    status = (await book.status(["m@7"], "t"))["m@7"]
    pace = _pace(shares["t"], settings)
    state = BookState()
    for now in sorted(START + rng.random() * EPOCH for _ in range(400)):
        kind = rng.choice(["organic", "organic", "synthetic"])
        now_box[0] = now
        want, state = book_decide(state, share=status.share, synthetic_limit=status.synthetic_limit, pace=pace,
                                  ceiling=status.borrow_limit, synthetic=kind == "synthetic", now=now)
        assert await book.grant("m@7", "t", kind) == want  # type: ignore[arg-type]
    after = (await book.status(["m@7"], "t"))["m@7"]
    assert after.book_state() == state


def _pace(share: int, settings: QuotaSettings):
    from inference_subnet.protocol.rate_math import pace_of

    return pace_of(share, settings.epoch_seconds, settings.burst_seconds)


def test_one_miners_counters_share_a_slot_and_miners_do_not() -> None:
    """The miner's script touches the caller's and its own counters together: one hash tag (Redis Cluster);
    two miners on one Redis are apart."""
    a = Keys(subnet="s", netuid=1, role="miner:hkA")
    b = Keys(subnet="s", netuid=1, role="miner:hkB")
    slots = {key_slot(a.caller_quota_used(v, "t", 3).encode()) for v in ("v1", "v2", "v3")}
    slots.add(key_slot(a.miner_quota_total("t", 3).encode()))
    assert len(slots) == 1
    assert "{mq:miner:hkA}" in a.miner_quota_total("t", 3)
    assert "{mq:miner:hkB}" in b.caller_quota_used("v1", "t", 3)


async def test_a_paced_validator_is_never_refused_while_others_borrow(redis, keys) -> None:
    """On real Redis: greedy validators take every request the miner lends; the one that paces itself at its
    guaranteed rate is admitted every time, and the miner's total stays within its capacity."""
    metagraph = _metagraph(STAKES)
    capacity = 200
    quota = MinerQuota(redis, keys, capacities={"t": capacity}, epoch_seconds=EPOCH, min_share=0.0,
                       min_requests=2, burst_seconds=10.0, borrow_ceiling=1.0)
    share = quota.limit(metagraph, "mid", "t")
    assert share == split_capacity(capacity, STAKES, min_share=0.0, min_requests=2)["mid"]
    events = [(START + (k + 0.5) * EPOCH / share, "mid") for k in range(share)]
    events += [(START + k * 0.25, h) for k in range(int(EPOCH / 0.25)) for h in ("whale",)]
    events += [(START + k * 0.5 + 0.1, h) for k in range(int(EPOCH / 0.5)) for h in ("a", "b")]
    events.sort()
    admitted = 0
    for now, hotkey in events:
        d = await quota.consume(metagraph, hotkey, "t", now=now)
        admitted += d.allowed
        if hotkey == "mid":
            assert d.allowed and d.mode == GUARANTEED
    assert admitted <= capacity
    assert admitted >= capacity - 20  # and little is left idle: the others borrowed what was not used
