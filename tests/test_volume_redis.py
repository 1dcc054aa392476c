"""Served-volume counters (VolumeBook) against a real Redis (embedded Valkey, or REDIS_URL)."""

from __future__ import annotations

import asyncio

import pytest

from inference_subnet.validator.managing.volume import VolumeBook

from clocks import Clock

EPOCH = 4320.0


@pytest.fixture
def clock() -> Clock:
    return Clock(100 * EPOCH + 10.0)


@pytest.fixture
def book(redis, keys, clock) -> VolumeBook:
    return VolumeBook(redis, keys, epoch_seconds=EPOCH, clock=clock)


async def test_counts_both_kinds_per_miner_and_task_under_concurrency(book, redis, keys) -> None:
    await asyncio.gather(*(book.count({"a@1": 1, "b@1": 2}, "t", "organic") for _ in range(50)))
    await book.count({"a@1": 5, "c@1": 0}, "t", "synthetic")
    await book.count({"a@1": 7}, "other", "synthetic")
    got = await book.volumes(["a@1", "b@1", "c@1"], ["t", "other"])
    assert got == {"t": {"a@1": 55, "b@1": 100, "c@1": 0}, "other": {"a@1": 7, "b@1": 0, "c@1": 0}}
    fields = await redis.hgetall(keys.served_volume("a@1", "t", book.epoch()))
    assert {k.decode(): int(v) for k, v in fields.items()} == {"organic": 50, "synthetic": 5}
    assert not await redis.exists(keys.served_volume("c@1", "t", book.epoch()))
    with pytest.raises(ValueError):
        await book.count({"a@1": 1}, "t", "replayed")


async def test_counters_expire_after_the_next_epoch_and_the_window_is_two_epochs(book, redis, keys, clock) -> None:
    await book.count({"a@1": 3}, "t", "synthetic")
    ttl_ms = await redis.pttl(keys.served_volume("a@1", "t", book.epoch()))
    end = (book.epoch() + 1) * EPOCH
    assert (end - clock.now) * 1000 < ttl_ms <= (end - clock.now + EPOCH) * 1000
    clock.now += EPOCH
    await book.count({"a@1": 4}, "t", "organic")
    assert (await book.volumes(["a@1"], ["t"]))["t"]["a@1"] == 7
    clock.now += EPOCH
    assert (await book.volumes(["a@1"], ["t"]))["t"]["a@1"] == 4
    assert (await book.volumes(["a@1"], ["t"], epochs=1))["t"]["a@1"] == 0


async def test_keys_carry_the_miners_hash_tag(keys) -> None:
    assert "{m:a@1}" in keys.served_volume("a@1", "t", 3)


def test_the_window_spans_the_previous_epoch_and_what_passed_of_this_one(book, clock) -> None:
    assert book.span() == pytest.approx(1.0 + 10.0 / EPOCH)
    clock.now += EPOCH / 2
    assert book.span() == pytest.approx(1.5 + 10.0 / EPOCH)
    assert book.span(epochs=1) == pytest.approx(0.5 + 10.0 / EPOCH)
