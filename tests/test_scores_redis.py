"""ScoreBook against a real Redis (embedded Valkey, or REDIS_URL)."""

from __future__ import annotations

import asyncio
import random

import pytest

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.store.redis import connect
from inference_subnet.validator.managing.quotas import QuotaBook
from inference_subnet.validator.managing.score_math import Sample
from inference_subnet.validator.managing.scores import ScoreBook

from clocks import Clock


def good(kind: str = "synthetic", ts: float = 0.0) -> Sample:
    return Sample(score=1.0, kind=kind, latency=0.0, ok=True, ts=ts)  # type: ignore[arg-type]


def metagraph(miners: list[tuple[int, str, int]]) -> Metagraph:
    return Metagraph(
        netuid=1,
        block=500,
        neurons=tuple(
            Neuron(
                uid=uid, hotkey=hk, coldkey="ck", stake=1.0, validator_permit=False, registration_block=reg
            )
            for uid, hk, reg in miners
        ),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(2_000_000.0)


@pytest.fixture
def settings() -> ScoringSettings:
    return ScoringSettings(
        history_size=5,
        max_scored_per_period=20,
        dropout_period_seconds=600,
        organic_sample_rate=1.0,
        prior="fixed",
        prior_score=0.0,
        prior_strength=2.0,
        ramp_samples=0,
        applied_ttl_seconds=3600,
    )


@pytest.fixture
def book(redis, keys, settings, clock) -> ScoreBook:
    return ScoreBook(redis, keys, settings, clock=clock)


async def test_record_is_idempotent_by_job_id(book, redis, keys, settings):
    assert await book.record("m@1", "arithmetic", good(ts=1), "job-1")
    assert not await book.record("m@1", "arithmetic", good(ts=2), "job-1")
    assert await book.record("m@1", "arithmetic", Sample.failure("synthetic", 2.0, 3), "job-2")
    history = await book.history("m@1", "arithmetic")
    assert [s.ts for s in history] == [3, 1]  # newest first; the duplicate never landed
    ttl_ms = await redis.pttl(keys.job_applied("m@1", "job-1"))
    assert 0 < ttl_ms <= settings.applied_ttl_seconds * 1000


async def test_concurrent_redeliveries_of_one_job_apply_once(book):
    results = await asyncio.gather(*[book.record("m@1", "arithmetic", good(), "job-x") for _ in range(64)])
    assert sum(results) == 1
    assert len(await book.history("m@1", "arithmetic")) == 1


async def test_history_is_bounded(book, settings):
    for i in range(12):
        await book.record("m@1", "arithmetic", good(ts=i), f"job-{i}")
    history = await book.history("m@1", "arithmetic")
    assert [s.ts for s in history] == [11, 10, 9, 8, 7]
    with pytest.raises(ValueError, match="job_id"):
        await book.record("m@1", "arithmetic", good(), "")


async def test_admit_caps_scored_samples_under_concurrency_and_counts_the_dropped(
    redis_url, keys, settings, clock
):
    """64 workers on their own connections admit 64 responses of one miner: exactly the cap of 20 is
    scored, the 44 others are counted as dropped."""
    clients = [connect(redis_url) for _ in range(64)]
    try:
        books = [ScoreBook(c, keys, settings, clock=clock) for c in clients]
        start = asyncio.Event()

        async def worker(b: ScoreBook, seed: int) -> bool:
            await start.wait()
            return await b.admit("m@1", "arithmetic", "synthetic", random.Random(seed))

        tasks = [asyncio.create_task(worker(b, i)) for i, b in enumerate(books)]
        start.set()
        admitted = sum(await asyncio.gather(*tasks))
        scored, dropped = await books[0].dropout_counts("m@1", "arithmetic")
    finally:
        for c in clients:
            await c.aclose()
    assert admitted == scored == 20
    assert dropped == 44


async def test_dropout_counters_expire_and_the_next_period_thins_at_random(
    book, redis, keys, clock, settings
):
    rng = random.Random(42)
    results = [await book.admit("m@1", "arithmetic", "synthetic", rng) for _ in range(80)]
    assert sum(results) == 20 and results[:20] == [True] * 20  # no history: nothing thinned below the cap
    period = book.period()
    ttl_ms = await redis.pttl(keys.scored_count("m@1", "arithmetic", period))
    end = (period + 1) * settings.dropout_period_seconds
    assert (end - clock.now) * 1000 < ttl_ms <= (end - clock.now + settings.dropout_period_seconds) * 1000
    assert await redis.pttl(keys.dropped_count("m@1", "arithmetic", period)) > 0
    # Next period: 80 responses were seen last period, so each is scored with chance 20/80, spread out.
    clock.now += settings.dropout_period_seconds
    results = [await book.admit("m@1", "arithmetic", "synthetic", rng) for _ in range(80)]
    assert 8 <= sum(results) <= 20
    assert any(results[40:])  # not just the first ones
    scored, dropped = await book.dropout_counts("m@1", "arithmetic")
    assert scored + dropped == 80 and scored == sum(results)


async def test_organic_responses_are_sampled_at_the_configured_rate(redis, keys, settings, clock):
    never = ScoreBook(redis, keys, settings.model_copy(update={"organic_sample_rate": 0.0}), clock=clock)
    rng = random.Random(1)
    assert not any([await never.admit("m@1", "arithmetic", "organic", rng) for _ in range(50)])
    assert await never.dropout_counts("m@1", "arithmetic") == (0, 0)  # not sampled is not "dropped"
    some = ScoreBook(
        redis,
        keys,
        settings.model_copy(update={"organic_sample_rate": 0.25, "max_scored_per_period": 1000}),
        clock=clock,
    )
    hits = sum([await some.admit("o@1", "arithmetic", "organic", rng) for _ in range(800)])
    assert 140 <= hits <= 260


async def test_aggregates_average_tasks_equally_with_the_prior_for_missing_evidence(book):
    for i in range(8):
        await book.record("a@1", "arithmetic", good(), f"a{i}")
        await book.record("a@1", "other", good("organic"), f"ao{i}")
        await book.record("b@1", "arithmetic", Sample.failure("synthetic", 2.0, 0), f"b{i}")
    await book.record("c@1", "arithmetic", good(), "c0")
    scores = await book.aggregates(["a@1", "b@1", "c@1", "new@9"], {"arithmetic": 2.0, "other": 2.0})
    # history_size 5: five perfect samples and a prior of two zero pseudo-samples per task.
    assert scores["a@1"] == pytest.approx(5 / 7)
    assert scores["b@1"] == 0.0
    assert scores["c@1"] == pytest.approx((1 / 3 + 0.0) / 2)  # one sample in one task, none in the other
    assert scores["new@9"] == 0.0
    assert scores["a@1"] > scores["c@1"] > scores["b@1"]
    assert await book.aggregates([], ["arithmetic"]) == {}


async def test_the_population_prior_shrinks_towards_what_miners_are_worth_and_new_uids_ramp_in(
    redis, keys, settings
):
    book = ScoreBook(redis, keys, settings.model_copy(update={"prior": "population", "ramp_samples": 3}))
    for i in range(5):
        await book.record("a@1", "arithmetic", good(), f"a{i}")
        await book.record("b@1", "arithmetic", Sample.failure("synthetic", 2.0, 0), f"b{i}")
    for i in range(3):
        await book.record("c@1", "arithmetic", good(), f"c{i}")
    await book.record("d@1", "arithmetic", good(), "d0")
    scores = await book.aggregates(["a@1", "b@1", "c@1", "d@1", "new@9"], {"arithmetic": 2.0})
    prior = (1.0 + 0.0 + 1.0 + 1.0) / 4  # every miner with samples counts once
    assert scores["a@1"] == pytest.approx((5 + 2 * prior) / 7)
    assert scores["b@1"] == pytest.approx(2 * prior / 7)
    # Three perfect samples: shrunk towards the prior, not towards 0 (a fixed prior of 0 would give 3/5).
    assert scores["c@1"] == pytest.approx((3 + 2 * prior) / 5)
    # One sample: a third of the way in; none: nothing, however good the population is.
    assert scores["d@1"] == pytest.approx((1 + 2 * prior) / 3 / 3)
    assert scores["new@9"] == 0.0
    # Organic routing's view of the same miners reads the same prior from them.
    standings = await book.standings(["a@1", "b@1", "c@1", "d@1", "new@9"], "arithmetic", 2.0)
    assert standings["c@1"].score == pytest.approx(scores["c@1"]) and standings["new@9"].score == 0.0


async def test_task_names_alone_use_the_installed_tasks_timeout(book):
    await book.record(
        "a@1", "arithmetic", Sample(score=1.0, kind="synthetic", latency=1.0, ok=True, ts=0), "j"
    )
    by_name = await book.aggregates(["a@1"], ["arithmetic"])
    explicit = await book.aggregates(["a@1"], {"arithmetic": 2.0})  # ArithmeticTask.timeout
    assert by_name == explicit
    assert book.latency_reference("not-installed") == book.default_latency_reference


async def test_unreadable_samples_are_skipped_not_fatal(book, redis, keys):
    await book.record("a@1", "arithmetic", good(), "j1")
    await redis.lpush(keys.score_history("a@1", "arithmetic"), b"{not json")
    assert len(await book.history("a@1", "arithmetic")) == 1


async def test_prune_on_metagraph_change_a_new_hotkey_on_a_uid_starts_from_zero(book, redis, keys, clock):
    quotas = QuotaBook(redis, keys, QuotaSettings(), clock=clock)
    for i in range(5):
        await book.record("old@10", "arithmetic", good(), f"o{i}")
        await book.record("stay@11", "arithmetic", good(), f"s{i}")
    await quotas.set_capacity("old@10", {"arithmetic": 100})
    before = await book.aggregates(["old@10"], ["arithmetic"])
    assert before["old@10"] > 0.5

    # uid 0 is taken over by a new hotkey; uid 1 keeps its miner.
    pruned = await book.prune(metagraph([(0, "new", 600), (1, "stay", 11)]))
    assert pruned == ["old@10"]
    assert not await redis.exists(
        keys.score_history("old@10", "arithmetic"), keys.capacity("old@10"), keys.quota_share("old@10")
    )
    assert await redis.smembers(keys.miners_index()) == {b"stay@11"}
    after = await book.aggregates(["new@600", "stay@11"], ["arithmetic"])
    assert after["new@600"] == book.settings.prior_score
    assert after["stay@11"] == pytest.approx(before["old@10"])
    assert await book.prune(metagraph([(0, "new", 600), (1, "stay", 11)])) == []


async def test_batched_admission_keeps_the_cap_per_miner(book, redis, keys, settings):
    miners = [f"m{i}@1" for i in range(16)]
    rng = random.Random(9)

    async def batches() -> list[bool]:
        out: list[bool] = []
        for _ in range(5):
            out += await book.admit_many(miners, "arithmetic", "synthetic", rng)
        return out

    results = await asyncio.gather(*[batches() for _ in range(8)])  # 40 responses per miner, cap 20
    for j, m in enumerate(miners):
        admitted = sum(r[k] for r in results for k in range(j, len(r), len(miners)))
        assert admitted == 20
        assert await book.dropout_counts(m, "arithmetic") == (20, 20)
    assert await book.admit_many([], "arithmetic", "organic", rng) == []
    never = ScoreBook(redis, keys, settings.model_copy(update={"organic_sample_rate": 0.0}))
    assert await never.admit_many(miners, "arithmetic", "organic", rng) == [False] * len(miners)


async def test_standings_judge_recent_quality_and_count_synthetic_evidence(redis, keys, settings, clock):
    settings = settings.model_copy(update={"history_size": 100, "quality_window": 5})
    book = ScoreBook(redis, keys, settings, clock=clock)
    window = settings.quality_window
    # A miner that was right for a long time and has just turned wrong: its recent quality says so at once,
    # while its score (all of its history) is still high.
    for j in range(window * 2):
        assert await book.record("turned@1", "arithmetic", good(ts=j), f"old-{j}")
    for j in range(window):
        wrong = Sample(score=0.0, kind="organic", latency=0.1, ok=True, ts=1000 + j)
        assert await book.record("turned@1", "arithmetic", wrong, f"new-{j}")
    assert await book.record("fresh@1", "arithmetic", good(ts=5), "fresh-1")
    standings = await book.standings(["turned@1", "fresh@1", "none@1"], "arithmetic")
    turned, fresh, none = standings["turned@1"], standings["fresh@1"], standings["none@1"]
    assert turned.quality == 0.0 and turned.score > 0.4 and turned.evidence == window * 2
    assert fresh.quality == 1.0 and fresh.evidence == 1
    assert (none.quality, none.evidence, none.score) == (0.0, 0, settings.prior_score)
