"""The gateway's answer counts: the pure summary of per-minute hashes, and the counter against real Redis
(flushes add up across processes, a Redis outage keeps the counts for the next flush, memory stays bounded)."""

from __future__ import annotations

import redis.asyncio as aioredis

from inference_subnet.localnet.ports import free_port
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect
from inference_subnet.validator import beats
from inference_subnet.validator.gateway.traffic import (
    WINDOW_MINUTES,
    TrafficCounter,
    read_traffic,
    summarize,
)

from clocks import Clock

NOW = 1_000_000 * 60.0 + 30.0  # half a minute into minute 1_000_000
MINUTE = 1_000_000


def test_summary_splits_statuses_into_classes_per_minute_and_per_key() -> None:
    buckets = {
        MINUTE: {"s:200": 5, "s:429": 2, "k:7:200": 5, "k:7:429": 2, "s:503": 1, "k:9:503": 1},
        MINUTE - 2: {"s:401": 3, "k:-:401": 3, "s:422": 1, "k:9:422": 1},
        MINUTE - WINDOW_MINUTES: {"s:200": 100},  # just outside the window
        MINUTE - 1: {"s:abc": 4, "x:200": 4, "k:200": 4},  # malformed: skipped
    }
    out = summarize(buckets, MINUTE)
    assert len(out.minutes) == WINDOW_MINUTES and out.minutes[-1].minute_start == MINUTE * 60.0
    assert out.minutes[0].minute_start == (MINUTE - WINDOW_MINUTES + 1) * 60.0
    assert (out.minutes[-1].requests, out.minutes[-1].ok, out.minutes[-1].limited) == (8, 5, 2)
    assert out.minutes[-1].server_errors == 1 and out.minutes[-3].client_errors == 4
    assert out.minutes[-2].requests == 0
    assert out.totals.model_dump() == {"requests": 12, "ok": 5, "limited": 2, "client_errors": 4,
                                       "server_errors": 1}
    assert out.by_status == {"200": 5, "401": 3, "422": 1, "429": 2, "503": 1}
    assert [(k.key_id, k.requests) for k in out.keys] == [("7", 7), (None, 3), ("9", 2)]
    assert out.keys[2].client_errors == 1 and out.keys[2].server_errors == 1


async def test_counts_of_two_processes_add_up_and_survive_a_redis_outage(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock(NOW)
    first = TrafficCounter(redis, keys, instance="gw-a", clock=clock)
    second = TrafficCounter(redis, keys, instance="gw-b", clock=clock)
    for status in (200, 200, 429):
        first.record(status, "7")
    second.record(401, None)
    await first.flush()
    await second.flush()
    await first.flush()  # nothing new: adds nothing
    out = await read_traffic(redis, keys, NOW)
    assert out.by_status == {"200": 2, "401": 1, "429": 1}
    assert [(k.key_id, k.requests, k.limited) for k in out.keys] == [("7", 3, 1), (None, 1, 0)]
    assert 0 < await redis.ttl(keys.gateway_traffic(MINUTE)) <= 7200
    assert {b.instance for b in await beats.read(redis, keys) if b.service == "gateway"} == {"gw-a", "gw-b"}

    dead = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        offline = TrafficCounter(dead, keys, instance="gw-c", clock=clock)
        offline.record(503, "9")
        await offline.flush()  # Redis refused: the counts wait
        offline._redis = redis  # Redis is back (the same counter, a working connection)
        await offline.flush()
    finally:
        await dead.aclose()
    out = await read_traffic(redis, keys, NOW)
    assert out.by_status["503"] == 1 and out.totals.requests == 5

    await first.aclose()  # a clean stop leaves the beats
    assert {b.instance for b in await beats.read(redis, keys) if b.service == "gateway"} == {"gw-b", "gw-c"}


def test_unflushed_counts_never_outgrow_the_window(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock(NOW)
    counter = TrafficCounter(redis, keys, instance="gw", clock=clock)
    for minute in range(3 * WINDOW_MINUTES):  # hours with no flush (no flusher, or Redis down)
        clock.now = NOW + minute * 60
        counter.record(200, "7")
    assert {m for m, _ in counter._pending} == set(range(MINUTE + 2 * WINDOW_MINUTES, MINUTE + 3 * WINDOW_MINUTES))
