"""Synthetic requests: fresh ones mixed with recorded organic ones, on real Redis."""

from __future__ import annotations

import random

import httpx
import pytest

from inference_subnet.store.redis import connect
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticTask
from inference_subnet.validator.service import ServiceHost
from inference_subnet.validator.synthesizing import Synthesizer, SynthesizingService, record_organic
from conftest import free_port

TASKS = {"arithmetic": ArithmeticTask()}


def organic(i: int) -> ArithmeticRequest:
    # Outside the synthetic range (|a| <= 10**6), so a replay is recognisable.
    return ArithmeticRequest(op="add", a=10**9 + i, b=i)


async def test_fresh_only_without_recordings(redis, keys) -> None:
    synth = Synthesizer(redis, keys, TASKS, organic_ratio=1.0, rng=random.Random(1))
    made = [await synth.request("arithmetic") for _ in range(20)]
    assert {m.source for m in made} == {"fresh"}
    assert len({m.request.model_dump_json() for m in made}) > 15


async def test_ratio_mixes_recorded_organic_requests(redis, keys) -> None:
    synth = Synthesizer(redis, keys, TASKS, organic_ratio=0.3, organic_cap=50, rng=random.Random(7))
    for i in range(10):
        assert await synth.record_organic("arithmetic", organic(i))
    made = [await synth.request("arithmetic") for _ in range(1000)]
    replays = [m for m in made if m.source == "organic"]
    assert 240 <= len(replays) <= 360  # 30% of 1000, binomial sd ~14.5
    assert all(m.request.a >= 10**9 for m in replays)
    assert all(abs(m.request.a) <= 10**6 for m in made if m.source == "fresh")
    assert len({m.request.a for m in replays}) == 10  # every recording gets replayed


async def test_recording_is_capped_newest_first(redis, keys) -> None:
    for i in range(30):
        await record_organic(redis, keys, "arithmetic", organic(i), cap=5)
    stored = [ArithmeticRequest.model_validate_json(r) for r in await redis.lrange(keys.organic_samples("arithmetic"), 0, -1)]
    assert [r.b for r in stored] == [29, 28, 27, 26, 25]
    assert not await record_organic(redis, keys, "arithmetic", organic(0), cap=0)


async def test_invalid_recordings_are_never_sent(redis, keys) -> None:
    await redis.lpush(keys.organic_samples("arithmetic"), b'{"op": "divide", "a": 1, "b": 0}')
    synth = Synthesizer(redis, keys, TASKS, organic_ratio=1.0, rng=random.Random(3))
    made = await synth.request("arithmetic")
    assert made.source == "fresh"


async def test_redis_down_still_synthesizes(keys) -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        synth = Synthesizer(dead, keys, TASKS, organic_ratio=1.0, rng=random.Random(3))
        made = await synth.request("arithmetic")
        assert made.source == "fresh"
    finally:
        await dead.aclose()


async def test_unknown_task_and_wrong_model(redis, keys) -> None:
    synth = Synthesizer(redis, keys, TASKS)
    with pytest.raises(LookupError, match="arithmetic"):
        await synth.request("nope")
    assert not await synth.record_organic("arithmetic", ArithmeticTask.Response(result=1))


async def test_http_api(redis, keys) -> None:
    synth = Synthesizer(redis, keys, TASKS, organic_ratio=1.0, rng=random.Random(5))
    await synth.record_organic("arithmetic", organic(42))
    host = ServiceHost([SynthesizingService(synth)], redis=redis, keys=keys)
    app = host.app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ok = await client.get("/synthetic/arithmetic")
        assert ok.status_code == 200
        assert ok.json() == {"task": "arithmetic", "source": "organic",
                             "request": {"op": "add", "a": 10**9 + 42, "b": 42}}
        missing = await client.get("/synthetic/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "unknown_task" and "arithmetic" in missing.json()["reason"]
