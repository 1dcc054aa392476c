"""Gateway parts on their own: limits (real Redis, injected clock), routing decisions (real quota book,
scripted miner answers), the score cache, the organic feed, the OpenAPI schema."""

from __future__ import annotations

from collections import Counter

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from test_gateway_helpers import CountingTask, sqlite_url

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol.rate_math import BORROWED
from inference_subnet.protocol.task import Task
from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.sql import Database
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask
from inference_subnet.validator.client import CallResult
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.gateway.limits import KeyLimiter
from inference_subnet.validator.gateway.organic import OrganicFeed, OrganicItem, scorable
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.gateway.routing import Attempt, NoMinerAvailable, Router, ScoreCache, servable
from inference_subnet.validator.managing import QuotaBook, ScoreBook
from inference_subnet.validator.managing.breaker import Breaker
from inference_subnet.validator.managing.sampling import QualityBar
from inference_subnet.validator.managing.score_math import ORGANIC_QUALITY_SAMPLES, Standing

from clocks import Clock

SETTINGS = load_settings()
TASK = ArithmeticTask()
REQUEST = ArithmeticRequest(op="add", a=2, b=3)


# -- limits ----------------------------------------------------------------------------------------------


async def test_burst_then_paced_with_exact_retry_after(redis: aioredis.Redis, keys: Keys) -> None:
    # 60 a minute: one request a second once the burst of 3 is spent.
    limiter = KeyLimiter(redis, keys, lease_seconds=30, burst=3)
    admissions = [await limiter.acquire(7, rate_per_minute=60, max_concurrent=100) for _ in range(4)]
    assert [a.allowed for a in admissions] == [True, True, True, False]
    assert all(a.ticket for a in admissions[:3])
    refused = admissions[-1]
    assert (refused.reason, refused.retry_after) == ("rate", 1)  # the next interval, not the next minute
    assert (await limiter.acquire(8, rate_per_minute=60, max_concurrent=100)).allowed  # another key
    await asyncio.sleep(1.05)  # one interval later exactly one more fits, not a fresh burst
    paced = [await limiter.acquire(7, rate_per_minute=60, max_concurrent=100) for _ in range(2)]
    assert [a.allowed for a in paced] == [True, False]


async def test_slow_rate_says_when_to_come_back(redis: aioredis.Redis, keys: Keys) -> None:
    # 2 a minute: the burst is capped at the rate (2, not the gateway's 10), then one every 30 s.
    limiter = KeyLimiter(redis, keys, lease_seconds=30, burst=10)
    assert [(await limiter.acquire(9, rate_per_minute=2, max_concurrent=100)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    refused = await limiter.acquire(9, rate_per_minute=2, max_concurrent=100)
    assert refused.reason == "rate" and 29 <= refused.retry_after <= 30


async def test_concurrency_leases_release_and_expire(redis: aioredis.Redis, keys: Keys) -> None:
    limiter = KeyLimiter(redis, keys, lease_seconds=1.0, burst=100)
    first = await limiter.acquire(1, rate_per_minute=6000, max_concurrent=2)
    second = await limiter.acquire(1, rate_per_minute=6000, max_concurrent=2)
    third = await limiter.acquire(1, rate_per_minute=6000, max_concurrent=2)
    assert first.allowed and second.allowed
    assert (third.allowed, third.reason, third.retry_after) == (False, "concurrency", 1)
    assert await limiter.in_flight(1) == 2
    assert first.ticket is not None
    await limiter.release(1, first.ticket)
    assert (await limiter.acquire(1, rate_per_minute=6000, max_concurrent=2)).allowed
    # A gateway that died never releases; its leases expire instead of locking the key out for good.
    await asyncio.sleep(1.1)
    assert await limiter.in_flight(1) == 0
    assert (await limiter.acquire(1, rate_per_minute=6000, max_concurrent=2)).allowed


async def test_refused_requests_do_not_spend_the_rate_budget(redis: aioredis.Redis, keys: Keys) -> None:
    limiter = KeyLimiter(redis, keys, lease_seconds=30, burst=2)
    held = await limiter.acquire(3, rate_per_minute=2, max_concurrent=1)
    for _ in range(5):
        assert (await limiter.acquire(3, rate_per_minute=2, max_concurrent=1)).reason == "concurrency"
    assert held.ticket is not None
    await limiter.release(3, held.ticket)
    assert (await limiter.acquire(3, rate_per_minute=2, max_concurrent=1)).allowed


# -- routing ---------------------------------------------------------------------------------------------


def _metagraph(n: int, *, validator: str = "5Validator") -> Metagraph:
    neurons = [
        Neuron(uid=0, hotkey=validator, coldkey="c", stake=100.0, validator_permit=True, registration_block=1)
    ]
    for uid in range(1, n + 1):
        neurons.append(
            Neuron(
                uid=uid,
                hotkey=f"5Miner{uid}",
                coldkey="c",
                stake=0.0,
                validator_permit=False,
                registration_block=10 + uid,
                axon=AxonInfo(ip="10.0.0.1", port=9000 + uid),
            )
        )
    neurons.append(
        Neuron(
            uid=n + 1, hotkey="5NoAxon", coldkey="c", stake=0.0, validator_permit=False, registration_block=5
        )
    )
    return Metagraph(netuid=1, block=10, neurons=tuple(neurons))


@dataclass
class ScriptedClient:
    """Miner answers by uid: an outcome name, or ``ok`` for a valid answer (no network)."""

    script: dict[int, str]
    calls: list[int] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    async def call(
        self, task: Task, neuron: Neuron, request: BaseModel, *, timeout: float | None = None
    ) -> Any:
        self.calls.append(neuron.uid)
        self.timeouts.append(timeout or 0.0)
        outcome = self.script.get(neuron.uid, "ok")
        ok = outcome == "ok"
        return CallResult(
            ok=ok,
            status=200 if ok else (429 if outcome == "rate_limited" else None),
            response=ArithmeticResponse(result=5) if ok else None,
            latency=0.01,
            error=None if ok else outcome,
            hotkey=neuron.hotkey,
            uid=neuron.uid,
            outcome="ok" if ok else "http_error",
            identity=neuron.identity,
        )

    def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[BaseModel]:
        raise NotImplementedError


class FixedScores:
    """Scores as given; every miner judged (``evidence``) and of the given recent quality."""

    def __init__(
        self,
        scores: dict[str, float],
        quality: dict[str, float] | None = None,
        evidence: dict[str, int] | None = None,
    ):
        self._scores = scores
        self._quality = quality or {}
        self._evidence = evidence or {}

    async def scores(self, identities: Sequence[str], task: str) -> dict[str, Standing]:
        return {
            i: Standing(self._scores.get(i, 0.0), self._quality.get(i, 1.0), self._evidence.get(i, 10))
            for i in identities
        }


async def _quota(
    redis: aioredis.Redis, keys: Keys, metagraph: Metagraph, uids: Sequence[int], capacity: int,
    *, paced: bool = False,
) -> QuotaBook:
    """This validator's real book; unless ``paced``, with a burst of the whole epoch and no borrowing, so a
    share counts as a plain per-epoch quota (the tests of the pace and of borrowing ask for ``paced``)."""
    settings = SETTINGS.validator.quotas
    if not paced:
        settings = settings.model_copy(update={"burst_seconds": settings.epoch_seconds, "borrow_ceiling": 0.0})
    book = QuotaBook(redis, keys, settings)
    await book.set_stakes(metagraph, "5Validator")
    for uid in uids:
        await book.set_capacity(metagraph.by_uid[uid].identity, {TASK.name: capacity})
    return book


OPEN_BAR = QualityBar(min_quality=0.0, relative=0.0, min_evidence=0)


def _router(
    metagraph: Metagraph,
    client: ScriptedClient,
    quota: QuotaBook,
    scores: dict[str, float] | FixedScores,
    **kw: Any,
) -> Router:
    defaults: dict[str, Any] = {
        "max_attempts": 3,
        "total_deadline": 5.0,
        "first_byte_timeout": 1.0,
        "contenders": 3,
        "bar": OPEN_BAR,
        "breaker": Breaker(failures=1000, cooldown=1.0),
    }
    return Router(
        metagraph=StaticMetagraphSource(metagraph),
        client=client,
        quotas=quota,
        scores=scores if isinstance(scores, FixedScores) else FixedScores(scores),
        exclude_hotkeys=["5Validator"],
        rng=random.Random(1),
        **{**defaults, **kw},
    )


def test_servable_skips_unserved_axons_and_self() -> None:
    graph = _metagraph(2)
    assert [n.uid for n in servable(graph, ["5Validator"])] == [1, 2]


async def test_router_tries_the_best_first_and_fails_over_in_order(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(5)
    quota = await _quota(redis, keys, graph, [1, 2, 3, 4, 5], 100)
    scores = {graph.by_uid[u].identity: s for u, s in {1: 0.2, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.1}.items()}
    client = ScriptedClient({2: "timeout", 3: "invalid"})
    served = await _router(graph, client, quota, scores).call(TASK, REQUEST)
    assert served.neuron.uid == 4 and client.calls == [2, 3, 4]
    assert [a.outcome for a in served.attempts] == ["http_error", "http_error", "ok"]
    assert all(t <= TASK.timeout for t in client.timeouts)


async def test_router_sends_users_only_to_miners_it_has_judged_good(redis: aioredis.Redis, keys: Keys) -> None:
    """A wrong miner with a high score from speed and uptime, and a new miner without evidence, get no
    organic request while a judged good one has quota; with only them left, users get a 503 that says why."""
    graph = _metagraph(3)
    quota = await _quota(redis, keys, graph, [1, 2, 3], 100)
    ident = {u: graph.by_uid[u].identity for u in (1, 2, 3)}
    scores = FixedScores(
        {ident[1]: 0.9, ident[2]: 0.95, ident[3]: 0.99}, quality={ident[2]: 0.1}, evidence={ident[3]: 1}
    )
    bar = QualityBar(min_quality=0.5, relative=0.8, min_evidence=3)
    client = ScriptedClient({})
    router = _router(graph, client, quota, scores, bar=bar)
    served = [(await router.call(TASK, REQUEST)).neuron.uid for _ in range(20)]
    assert served == [1] * 20 and set(client.calls) == {1}
    other = Keys(subnet=keys.subnet + "b", netuid=keys.netuid, role=keys.role)
    cut = await _quota(redis, other, graph, [2, 3], 100)  # the good miner has no quota here
    with pytest.raises(NoMinerAvailable) as caught:
        await _router(graph, ScriptedClient({}), cut, scores, bar=bar).call(TASK, REQUEST)
    assert "quality bar" in caught.value.reason and caught.value.attempts == ()


async def test_breaker_benches_a_failing_miner_then_lets_it_back(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(2)
    quota = await _quota(redis, keys, graph, [1, 2], 1000)
    scores = {graph.by_uid[1].identity: 0.99, graph.by_uid[2].identity: 0.5}
    clock = Clock(0.0)
    breaker = Breaker(failures=3, cooldown=30.0, clock=clock)
    client = ScriptedClient({1: "timeout"})
    router = _router(graph, client, quota, scores, breaker=breaker, contenders=1)
    for _ in range(10):
        assert (await router.call(TASK, REQUEST)).neuron.uid == 2
    assert client.calls.count(1) == 3  # three failovers, then uid 1 is benched and no user waits on it
    clock.now = 31.0
    client.script = {}
    assert (await router.call(TASK, REQUEST)).neuron.uid == 1  # back after the bench, and forgiven
    assert not breaker.benched(graph.by_uid[1].identity)


async def _spend_pace(quota: QuotaBook, identity: str) -> None:
    """Use this validator's guaranteed pace on a miner up, so what it sends next are borrow attempts."""
    while await quota.grant(identity, TASK.name, "organic") != BORROWED:
        pass


async def test_miner_back_pressure_does_not_bench(redis: aioredis.Redis, keys: Keys) -> None:
    """A 429 to a borrow attempt (past the guaranteed pace) is honest back-pressure: tried past, no bench."""
    graph = _metagraph(2)
    quota = await _quota(redis, keys, graph, [1, 2], 1000, paced=True)
    for uid in (1, 2):
        await _spend_pace(quota, graph.by_uid[uid].identity)
    scores = {graph.by_uid[1].identity: 0.99, graph.by_uid[2].identity: 0.5}
    breaker = Breaker(failures=2, cooldown=30.0)
    router = _router(graph, ScriptedClient({1: "rate_limited"}), quota, scores, breaker=breaker, contenders=1)
    for _ in range(5):
        served = await router.call(TASK, REQUEST)
        assert served.neuron.uid == 2 and served.attempts[0].back_pressure
    assert not breaker.benched(graph.by_uid[1].identity)


async def test_a_429_within_the_guaranteed_share_is_a_failure(redis: aioredis.Redis, keys: Keys) -> None:
    """The miner owes this validator its guaranteed pace: refusing it benches the miner like any failure,
    and the refusal is evidence for scoring."""
    graph = _metagraph(2)
    quota = await _quota(redis, keys, graph, [1, 2], 1000, paced=True)
    scores = {graph.by_uid[1].identity: 0.99, graph.by_uid[2].identity: 0.5}
    breaker = Breaker(failures=2, cooldown=30.0)
    router = _router(graph, ScriptedClient({1: "rate_limited"}), quota, scores, breaker=breaker, contenders=1)
    served = [await router.call(TASK, REQUEST) for _ in range(2)]
    assert all(s.attempts[0].status == 429 and not s.attempts[0].back_pressure for s in served)
    assert breaker.benched(graph.by_uid[1].identity)
    assert [a.uid for a in scorable(served[0].attempts)] == [1, 2]


async def test_router_gives_up_after_max_attempts_with_a_reason(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(5)
    quota = await _quota(redis, keys, graph, [1, 2, 3, 4, 5], 100)
    client = ScriptedClient({u: "error" for u in range(1, 6)})
    with pytest.raises(NoMinerAvailable) as caught:
        await _router(graph, client, quota, {}, max_attempts=2).call(TASK, REQUEST)
    assert len(client.calls) == 2 and len(caught.value.attempts) == 2
    assert "2 miner(s) failed" in caught.value.reason


async def test_router_only_uses_miners_with_organic_quota(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(3)
    quota = await _quota(redis, keys, graph, [1, 2], 1)  # miner 3 has no capacity recorded at all
    share = (await quota.status([graph.by_uid[1].identity], TASK.name))[graph.by_uid[1].identity].share
    client = ScriptedClient({})
    router = _router(graph, client, quota, {})
    served = [(await router.call(TASK, REQUEST)).neuron.uid for _ in range(2 * share)]
    assert sorted(served) == sorted([1, 2] * share) and 3 not in client.calls  # spread, never miner 3
    with pytest.raises(NoMinerAvailable) as caught:
        await router.call(TASK, REQUEST)
    assert "has organic capacity left" in caught.value.reason and caught.value.attempts == ()


async def test_capacity_refusals_are_tried_past_but_not_scored(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(2)
    quota = await _quota(redis, keys, graph, [1, 2], 100, paced=True)
    for uid in (1, 2):  # past the guaranteed pace on both: borrow attempts, which the miner may refuse
        await _spend_pace(quota, graph.by_uid[uid].identity)
    scores = {graph.by_uid[1].identity: 0.9}
    served = await _router(graph, ScriptedClient({1: "rate_limited"}), quota, scores).call(TASK, REQUEST)
    assert served.neuron.uid == 2 and served.attempts[0].status == 429 and served.attempts[0].borrowed

    score_settings = SETTINGS.validator.scoring.model_copy(update={"organic_sample_rate": 1.0})
    book = ScoreBook(redis, keys, score_settings)
    volumes = VolumeBook(redis, keys, epoch_seconds=SETTINGS.validator.quotas.epoch_seconds)
    feed = OrganicFeed(
        redis, keys, admit=book.admit, reuse=True, reuse_cap=10, rng=random.Random(0), volumes=volumes
    )
    await feed.process(OrganicItem(TASK, REQUEST, served.attempts))
    # The answer the user got is the serving miner's verified volume; the 429 is nobody's.
    ids = [graph.by_uid[1].identity, graph.by_uid[2].identity]
    assert (await volumes.volumes(ids, [TASK.name]))[TASK.name] == {ids[0]: 0, ids[1]: 1}
    ((_, fields),) = await redis.xrange(keys.scoring_stream())
    job = json.loads(fields[b"job"])
    assert [r["uid"] for r in job["responses"]] == [2] and job["kind"] == "organic"
    assert json.loads(job["responses"][0]["response"]) == {"result": 5}
    assert await redis.llen(keys.organic_samples(TASK.name)) == 1


async def test_organic_feed_honours_sampling_and_privacy(redis: aioredis.Redis, keys: Keys) -> None:
    never = SETTINGS.validator.scoring.model_copy(update={"organic_sample_rate": 0.0})
    book = ScoreBook(redis, keys, never)
    feed = OrganicFeed(redis, keys, admit=book.admit, reuse=False, reuse_cap=10)
    ok = Attempt(
        uid=1,
        hotkey="h",
        identity="h@1",
        outcome="ok",
        latency=0.1,
        status=200,
        response=ArithmeticResponse(result=5),
    )
    feed.start()
    assert feed.submit(TASK, REQUEST, [ok])
    await feed.aclose()
    assert feed.stats.jobs == 0 and feed.stats.recorded == 0 and feed.stats.errors == 0
    assert await redis.xlen(keys.scoring_stream()) == 0
    assert await redis.llen(keys.organic_samples(TASK.name)) == 0
    assert not feed.submit(TASK, REQUEST, [ok])  # closed


async def test_organic_answers_of_a_miner_short_of_organic_evidence_are_all_scored(
    redis: aioredis.Redis, keys: Keys
) -> None:
    """With organic sampling off, the answer of a miner with fewer than ORGANIC_QUALITY_SAMPLES organic samples
    is scored anyway (it is how a miner that recognises challenges is caught); one with enough is not."""
    never = SETTINGS.validator.scoring.model_copy(update={"organic_sample_rate": 0.0})
    book = ScoreBook(redis, keys, never)
    known = {"new@1": Standing(0.9, 0.9, 10, organic=ORGANIC_QUALITY_SAMPLES - 1),
             "old@1": Standing(0.9, 0.9, 10, organic=ORGANIC_QUALITY_SAMPLES)}
    feed = OrganicFeed(redis, keys, admit=book.admit, standings=lambda task: known, reuse=False, reuse_cap=10)
    for identity in known:
        answer = Attempt(uid=1, hotkey=identity[:3], identity=identity, outcome="ok", latency=0.1, status=200,
                         response=ArithmeticResponse(result=5))
        await feed.process(OrganicItem(TASK, REQUEST, [answer]))
    ((_, fields),) = await redis.xrange(keys.scoring_stream())
    assert [r["identity"] for r in json.loads(fields[b"job"])["responses"]] == ["new@1"]
    assert known["new@1"].needs_organic_evidence and not known["old@1"].needs_organic_evidence


async def test_score_cache_rereads_after_ttl_or_for_new_miners() -> None:
    reads: list[tuple[tuple[str, ...], str]] = []

    async def read(ids: Sequence[str], task: str) -> dict[str, float]:
        reads.append((tuple(ids), task))
        return {i: 0.5 for i in ids}

    clock = Clock(0.0)
    cache = ScoreCache(read, ttl=5.0, clock=clock)
    assert await cache.scores(["a", "b"], "t") == {"a": 0.5, "b": 0.5}
    await cache.scores(["b"], "t")
    assert len(reads) == 1
    await cache.scores(["a", "c"], "t")  # a miner the cache has not seen
    assert len(reads) == 2
    clock.now = 6.0
    await cache.scores(["a"], "t")
    assert len(reads) == 3


# -- the app's schema ------------------------------------------------------------------------------------


async def test_openapi_has_every_task_model_and_the_bearer_scheme(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    db = Database(sqlite_url(tmp_path))
    app = create_gateway_app(
        SETTINGS,
        tasks={"arithmetic": TASK, "counting": CountingTask()},
        redis=redis,
        keys=keys,
        metagraph=StaticMetagraphSource(_metagraph(1)),
        miner_client=ScriptedClient({}),
        quota_book=QuotaBook(redis, keys, SETTINGS.validator.quotas),
        score_book=ScoreBook(redis, keys, SETTINGS.validator.scoring),
        db=db,
    )
    schema = app.openapi()
    paths = schema["paths"]
    assert {
        "/v1/tasks/arithmetic",
        "/v1/tasks/counting",
        "/v1/tasks/{task}",
        "/v1/tasks",
        "/health",
        "/ready",
    } <= set(paths)
    arithmetic = paths["/v1/tasks/arithmetic"]["post"]
    assert arithmetic["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ArithmeticRequest"
    )
    assert arithmetic["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ArithmeticResponse"
    )
    assert {"401", "413", "422", "429", "503"} <= set(arithmetic["responses"])
    assert "Retry-After" in arithmetic["responses"]["429"]["headers"]
    assert arithmetic["security"] == [{"HTTPBearer": []}]
    counting = paths["/v1/tasks/counting"]["post"]
    assert "application/x-ndjson" in counting["responses"]["200"]["content"]
    components = schema["components"]["schemas"]
    assert {"ArithmeticRequest", "ArithmeticResponse", "CountRequest", "CountChunk", "ErrorBody"} <= set(
        components
    )
    assert components["ArithmeticRequest"]["properties"]["op"]["enum"] == ["add", "multiply"]
    await db.aclose()


async def test_usage_snapshot_counts_own_use_and_refreshes_for_others(
    redis: aioredis.Redis, keys: Keys
) -> None:
    graph = _metagraph(2)
    quota = await _quota(redis, keys, graph, [1, 2], 100)
    clock = Clock(0.0)
    client = ScriptedClient({})
    router = _router(graph, client, quota, {}, usage_ttl=10.0, clock=clock)
    # Equal scores and quota: the draw spreads its own requests over both.
    served = Counter([(await router.call(TASK, REQUEST)).neuron.uid for _ in range(40)])
    assert served[1] >= 10 and served[2] >= 10
    # Another gateway replica spends most of miner 1's quota: unseen until the snapshot expires...
    identity = graph.by_uid[1].identity
    status = (await quota.status([identity], TASK.name))[identity]
    for _ in range(status.total_left - 2):
        assert await quota.consume(identity, TASK.name, "organic")
    clock.now = 11.0  # ...then miner 2, with far more left, is drawn first nearly always
    after = Counter([(await router.call(TASK, REQUEST)).neuron.uid for _ in range(40)])
    assert after[1] <= 2 and after[2] >= 38


async def test_a_new_metagraph_snapshot_is_routed_at_once(redis: aioredis.Redis, keys: Keys) -> None:
    graph = _metagraph(1)
    quota = await _quota(redis, keys, graph, [1], 100)
    source = StaticMetagraphSource(graph)
    router = Router(
        metagraph=source,
        client=ScriptedClient({}),
        quotas=quota,
        scores=FixedScores({}),
        max_attempts=3,
        total_deadline=5.0,
        first_byte_timeout=1.0,
        bar=OPEN_BAR,
        breaker=Breaker(failures=1000, cooldown=1.0),
        usage_ttl=3600.0,
        exclude_hotkeys=["5Validator"],
    )
    assert (await router.call(TASK, REQUEST)).neuron.uid == 1
    bigger = _metagraph(2)
    await quota.set_capacity(bigger.by_uid[2].identity, {TASK.name: 100})
    while await quota.consume(bigger.by_uid[1].identity, TASK.name, "organic"):
        pass  # another replica spends miner 1's quota: the young usage read still thinks it has plenty
    source.replace(bigger)  # a new snapshot, however young the usage read is
    assert (await router.call(TASK, REQUEST)).neuron.uid == 2


def test_gateway_socket_disables_nagle_for_accepted_connections() -> None:
    """Without TCP_NODELAY a response written in two parts waits for the client's delayed ACK (~40 ms)."""
    import socket

    from inference_subnet.cli.gateway import _listen

    with _listen("127.0.0.1", 0) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
