"""The subnet simulation: its pure metrics and model, and small runs against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError
from scipy.stats import kendalltau
from typer.testing import CliRunner

from inference_subnet.cli.main import app
from inference_subnet.settings import ScoringSettings, load_settings
from inference_subnet.simulate.behaviours import Answer, expected_value, relay, respond
from inference_subnet.simulate.engine import Simulation
from inference_subnet.simulate.metrics import (
    consensus_incentive,
    epochs_until_stable,
    jain_index,
    kendall_tau,
    ranking_tau,
)
from inference_subnet.simulate.plots import write_plots
from inference_subnet.simulate.population import SYBIL_OVERCOMMIT, TOTAL_STAKE, TWIN, Backend, generate
from inference_subnet.simulate.report import write_json
from inference_subnet.simulate.results import SimulationResult
from inference_subnet.simulate.scenario import Mix, Scenario, ScenarioError
from inference_subnet.simulate.traffic import daily_load, stochastic_round
from inference_subnet.store.coalescing import CoalescingRedis
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect
from inference_subnet.protocol.quota_math import split_capacity

SMALL = Scenario(validators=8, miners=24, epochs=4, seed=7, ticks=4, capacity=400)

# -- pure metrics -------------------------------------------------------------------------------------------


def test_jain_index_known_values() -> None:
    assert jain_index([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)  # one takes everything: 1/n
    assert jain_index([1.0, 2.0]) == pytest.approx(9 / 10)
    assert jain_index([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError):
        jain_index([])
    with pytest.raises(ValueError):
        jain_index([1.0, -1.0])


def test_kendall_tau_known_values_and_ties() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # 10 pairs, 2 discordant ((1,3) and (2,3), (1,4) and (2,4) swapped): (8 - 2) / 10
    assert kendall_tau([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # a constant ranking says nothing
    rng = random.Random(3)
    for _ in range(20):  # tau-b with ties, as scipy computes it
        a = [rng.randint(0, 5) for _ in range(30)]
        b = [x + rng.randint(-3, 3) for x in a]
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)


def test_ranking_tau_uses_common_items() -> None:
    assert ranking_tau({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.1, "b": 0.2, "c": 0.3, "d": 9.0}) == 1.0
    assert ranking_tau({"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 1.0}) == -1.0


def test_epochs_until_stable() -> None:
    assert epochs_until_stable([None, 0.5, 0.95, 0.97], 0.9) == 2
    assert epochs_until_stable([None, 0.95, 0.96], 0.9) == 1
    assert epochs_until_stable([None, 0.95, 0.5], 0.9) is None  # unsettled at the end
    assert epochs_until_stable([None, 0.95, 0.5, 0.92], 0.9) == 3  # a relapse restarts the count
    assert epochs_until_stable([None], 0.9) is None


def test_consensus_clips_what_a_stake_minority_gives() -> None:
    # Validator 0 holds 3/4 of the stake. Miner 2 is weighted only by the small validator: the consensus
    # weight of miner 2 is 0, so its incentive is 0; miner 0's 0.5 from the big one stands.
    incentive = consensus_incentive([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], [3.0, 1.0])
    assert incentive == pytest.approx([0.375 / 0.875, 0.5 / 0.875, 0.0])
    assert consensus_incentive([[0.0, 0.0], [0.0, 0.0]], [1.0, 1.0]) == [0.0, 0.0]
    with pytest.raises(ValueError):
        consensus_incentive([[1.0]], [1.0, 2.0])


def test_daily_curve_and_rounding() -> None:
    assert daily_load(15 * 3600) == pytest.approx(1.0)
    assert daily_load(3 * 3600) == pytest.approx(0.3)
    assert daily_load(15 * 3600 + 86_400) == pytest.approx(1.0)  # every day alike
    assert all(0.3 <= daily_load(h * 600.0) <= 1.0 for h in range(144))
    rng = random.Random(1)
    draws = [stochastic_round(2.25, rng) for _ in range(4000)]
    assert set(draws) == {2, 3}
    assert sum(draws) / len(draws) == pytest.approx(2.25, abs=0.05)


# -- the model ---------------------------------------------------------------------------------------------


def test_population_shape_is_mainnet_like_and_seeded() -> None:
    scenario = Scenario()
    population = generate(scenario)
    stakes = [v.stake for v in population.validators]
    twins = [m for m in population.miners if m.behaviour == TWIN]
    assert len(stakes) == 64 and len(population.miners) == 192 + len(twins)
    assert stakes == sorted(stakes, reverse=True)
    assert sum(stakes) == pytest.approx(TOTAL_STAKE)
    assert 0.15 < stakes[0] / TOTAL_STAKE < 0.4  # a few hold most of the stake...
    assert sum(s < 0.01 * TOTAL_STAKE for s in stakes) > 32  # ...and a long tail sits below 1%
    assert sum(v.demand_weight for v in population.validators) == pytest.approx(1.0)
    counts = {c: sum(m.behaviour == c for m in population.miners) for c in scenario.counts()}
    assert all(m.uid > max(o.uid for o in population.miners if o.behaviour != TWIN) for m in twins)
    assert (
        counts
        == scenario.counts()
        == {
            "honest": 92,
            "lazy": 15,
            "copycat": 15,
            "sybil": 24,
            "flaky": 15,
            "slow": 15,
            "detector": 8,
            "discriminator": 8,
        }
    )
    sybil_backends = {m.backend for m in population.miners if m.behaviour == "sybil"}
    assert len(sybil_backends) == 3  # groups of 8 uids share one machine...
    for name in sybil_backends:
        uids = [m for m in population.miners if m.backend == name]
        declared = sum(m.declared for m in uids)  # ...and together claim more than it has
        assert declared == pytest.approx(SYBIL_OVERCOMMIT * population.backends[name].capacity, rel=0.01)
        # Each group has a twin: the same machine on its own, behind one uid declaring the group's total.
        (twin,) = [m for m in twins if m.backend == f"t{name[1:]}"]
        assert twin.declared == declared
        assert population.backends[twin.backend] == dataclasses.replace(population.backends[name], name=twin.backend)
    assert len(twins) == len(sybil_backends)
    assert all(m.source is None for m in population.miners)  # copycats forward to gateways, no fixed source
    assert generate(scenario) == population
    assert generate(Scenario(seed=1)) != population
    assert len({m.uid for m in population.miners} | {v.uid for v in population.validators}) == 256 + len(twins)


def test_behaviours() -> None:
    population = generate(Scenario())
    by_kind = {m.behaviour: m for m in population.miners}
    backends = population.backends
    rng = random.Random(0)
    timeout = 10.0

    def answers(kind: str, n: int = 400, **context: Any) -> list:
        m = by_kind[kind]
        return [respond(m, backends[m.backend], rng, timeout=timeout, **context) for _ in range(n)]

    lazy = answers("lazy")
    assert all(a.ok and a.latency < 1.0 and a.score < 0.3 for a in lazy)  # fast and wrong
    flaky = answers("flaky")
    assert 0.2 < sum(not a.ok for a in flaky) / len(flaky) < 0.6
    slow = answers("slow")
    assert any(a.outcome == "timeout" for a in slow)
    assert all(a.latency > 3.0 for a in slow if a.ok)
    overloaded = respond(
        by_kind["sybil"], backends[by_kind["sybil"].backend], rng, timeout=timeout, overloaded=True
    )
    assert not overloaded.ok and overloaded.outcome == "overloaded"
    settings = ScoringSettings()
    lazy_value = expected_value(by_kind["lazy"], backends[by_kind["lazy"].backend], settings, timeout=timeout)
    honest = by_kind["honest"]
    honest_value = expected_value(honest, backends[honest.backend], settings, timeout=timeout)
    assert lazy_value < 0.2 < honest_value
    failed = respond(by_kind["slow"], backends[by_kind["slow"].backend], random.Random(5), timeout=0.001)
    assert failed.sample("synthetic", 1.0).ok is False


def _good(answers: list) -> float:
    return sum(a.ok and a.score > 0.4 for a in answers) / len(answers)


def test_detector_serves_only_the_fresh_challenges_it_recognises() -> None:
    population = generate(Scenario())
    m = next(x for x in population.miners if x.behaviour == "detector")
    backend = population.backends[m.backend]
    rng = random.Random(1)

    def share(**context: Any) -> float:
        return _good([respond(m, backend, rng, timeout=10.0, **context) for _ in range(2000)])

    assert 0.85 < share(kind="synthetic", fresh=True) < 0.95  # it recognises 9 in 10
    assert share(kind="synthetic", fresh=False) == 0.0  # a replayed organic request looks like a user's
    assert share(kind="organic") == 0.0
    assert share(kind="organic", large_caller=False) == 0.0


def test_discriminator_serves_by_the_callers_stake() -> None:
    population = generate(Scenario())
    m = next(x for x in population.miners if x.behaviour == "discriminator")
    backend = population.backends[m.backend]
    rng = random.Random(2)
    large = [respond(m, backend, rng, timeout=10.0, large_caller=True, kind=k) for k in ["organic"] * 500]
    floor = [respond(m, backend, rng, timeout=10.0, large_caller=False) for _ in range(500)]
    assert _good(large) > 0.9 and _good(floor) == 0.0


def test_a_copycat_relays_what_it_forwarded_later_and_never_better() -> None:
    relay_backend = Backend("r", capacity=10, quality=0.0, latency=0.5, jitter=0.3, fail_rate=0.0)
    rng = random.Random(3)
    got = Answer(True, 0.9, 1.0, "ok")
    out = [relay(got, relay_backend, rng, timeout=10.0) for _ in range(200)]
    assert all(a.ok and a.score == 0.9 and a.latency > 1.0 for a in out)
    assert not relay(None, relay_backend, rng, timeout=10.0).ok  # the gateway refused the forward
    assert not relay(Answer(False, 0.0, 0.2, "error"), relay_backend, rng, timeout=10.0).ok
    assert relay(Answer(True, 0.9, 9.9, "ok"), relay_backend, rng, timeout=10.0).outcome == "timeout"


def test_sybil_keys_can_be_distinct() -> None:
    shared = generate(Scenario()).metagraph(1, block=1)
    distinct = generate(Scenario(sybil_distinct_keys=True)).metagraph(1, block=1)
    population = generate(Scenario())
    sybils = {m.uid for m in population.miners if m.behaviour == "sybil"}

    def keys_of(metagraph: Any) -> tuple[set[str], set[str]]:
        neurons = [n for n in metagraph.neurons if n.uid in sybils]
        return {n.coldkey for n in neurons}, {n.axon.ip for n in neurons}

    cold, ips = keys_of(shared)
    assert len(cold) == len(ips) == len(sybils) // Scenario().sybil_group  # one per machine
    cold, ips = keys_of(distinct)
    assert len(cold) == len(ips) == len(sybils)
    assert [n.identity for n in shared.neurons] == [n.identity for n in distinct.neurons]


@pytest.mark.parametrize(
    ("scenario", "flag"),
    [
        (Scenario(validators=0), "--validators"),
        (Scenario(miners=1), "--miners"),
        (Scenario(epochs=1), "--epochs"),
        (Scenario(mix=Mix(lazy=1.5)), "--lazy"),
        (Scenario(mix=Mix(lazy=0.5, copycat=0.5)), "--"),
        (Scenario(miners=3, mix=Mix(lazy=0.25, copycat=0.25, sybil=0.0, flaky=0.0, slow=0.0)), "--miners"),
        (Scenario(sybil_group=1), "--sybil-group"),
        (Scenario(capacity=0), "--capacity"),
        (Scenario(load=-1.0), "--load"),
        (Scenario(ticks=0), "--ticks"),
        (Scenario(stable_tau=2.0), "--stable-tau"),
        (Scenario(start_hour=24.0), "--start-hour"),
        (Scenario(mix=Mix(detector=-0.1)), "--detector"),
        (Scenario(mix=Mix(discriminator=2.0)), "--discriminator"),
        (Scenario(copycat_route="sometimes"), "--copycat-route"),
        (Scenario(churn=1.5), "--churn"),
    ],
)
def test_bad_scenarios_name_their_flag(scenario: Scenario, flag: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario.check()
    assert str(info.value).startswith(flag)


# -- runs against Redis ------------------------------------------------------------------------------------


async def _run(redis_url: str, scenario: Scenario, **settings: Any) -> SimulationResult:
    client = connect(redis_url)
    try:
        return await Simulation(scenario, load_settings(**settings), client).run()
    finally:
        await client.aclose()


async def test_the_books_client_coalesces_without_changing_replies(redis_url: str, keys: Keys) -> None:
    """The books' client: concurrent pipelines share one round trip and keep their own replies and errors,
    a script is loaded before a pipeline calls it by SHA, and MULTI goes out unchanged, on its own."""
    inner = connect(redis_url)
    client = CoalescingRedis(inner, max_in_flight=1)
    counter, text = keys.prefix + ":co:n", keys.prefix + ":co:text"
    script = client.register_script(f"-- {keys.prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")

    async def caller() -> list[object]:
        pipe = client.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.incr(text)
        await script(keys=[counter], args=[10], client=pipe)
        return await pipe.execute(raise_on_error=False)

    try:
        await client.set(text, b"not a number")  # a lone command: one round trip of its own
        first = await caller()  # loads the script (unknown to the server) before sending its EVALSHA
        assert first[0::2] == [1, 11] and isinstance(first[1], ResponseError)
        replies = await asyncio.gather(*(caller() for _ in range(20)))
        assert all(isinstance(r[1], ResponseError) and r[2] == r[0] + 10 for r in replies)
        assert sorted(r[0] for r in replies) == list(range(12, 12 + 11 * 20, 11))
        assert (client.coalescer.round_trips, client.coalescer.commands) == (3, 1 + 3 + 60)
        tx = client.pipeline(transaction=True)
        tx.incr(counter).get(counter)
        assert await tx.execute() == [232, b"232"]
        assert client.coalescer.round_trips == 3
        with pytest.raises(ResponseError):
            await client.pipeline(transaction=False).incr(text).execute()
    finally:
        await inner.delete(counter, text)
        await inner.aclose()


async def test_small_run(redis_url: str, tmp_path: Path) -> None:
    result = await _run(redis_url, SMALL)
    assert len(result.epochs) == SMALL.epochs
    # Never past declared capacity, by the validators' books nor by the miners' own counters.
    assert all(m.max_load_ratio <= 1.0 for m in result.miners)
    assert result.summary["load"]["miners_over_capacity"] == 0
    assert max(m.max_load_ratio for m in result.miners) > 0.5  # and the capacity was actually in demand
    # The plan the simulation makes from its own view of the quotas is exactly what the Lua scripts decide,
    # and no miner refuses a request within the caller's guaranteed pace (borrow attempts it may refuse).
    assert (result.lua_refusals, result.guaranteed_refusals, result.validator_side_mismatches) == (0, 0, 0)
    assert result.miner_refusals >= 0 and result.borrowed >= 0
    # Every validator served, scored and set weights.
    assert all(
        v.synthetic > 0 and v.scored > 0 and v.epochs_with_weights == SMALL.epochs for v in result.validators
    )
    # Honest miners end above every lazy one; flaky and slow ones below the honest average.
    final = {
        c: [m.final_score for m in result.miners if m.behaviour == c]
        for c in ("honest", "lazy", "flaky", "slow")
    }
    assert min(final["honest"]) > max(final["lazy"])
    honest_mean = sum(final["honest"]) / len(final["honest"])
    assert sum(final["flaky"]) / len(final["flaky"]) < honest_mean
    assert sum(final["slow"]) / len(final["slow"]) < honest_mean
    # The honest ranking agrees with the miners' true value far better than chance.
    assert result.epochs[-1].tau_truth > 0.5
    assert sum(result.epochs[-1].class_incentive.values()) == pytest.approx(1.0, abs=1e-5)  # each rounded to 6 places
    # The dropout cap keeps every validator's scoring bounded: at most the cap per miner and period.
    scoring = load_settings().validator.scoring
    periods = SMALL.epochs * load_settings().validator.quotas.epoch_seconds / scoring.dropout_period_seconds
    cap = scoring.max_scored_per_period
    assert all(v.scored <= cap * (periods + 1) * len(result.miners) for v in result.validators)
    # The sybil group's twin is reported apart, and the summary sets what the group earns against it.
    assert {m.behaviour for m in result.miners} >= {"sybil", TWIN} and "twin" in result.epochs[-1].class_incentive
    ratio = result.summary["adversarial"]["sybil_machine_vs_single_uid"]
    assert ratio is not None and ratio > 0
    json_path = write_json(result, tmp_path)
    assert (
        SimulationResult.model_validate_json(json_path.read_text()).summary
        == json.loads(result.model_dump_json())["summary"]
    )
    pngs = write_plots(result, tmp_path)
    assert [p.name for p in pngs] == [
        "fairness.png",
        "load.png",
        "stability.png",
        "adversarial.png",
        "cost.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)
    # The run leaves nothing behind in Redis.
    client = connect(redis_url)
    try:
        assert [k async for k in client.scan_iter(match="isn:isn-sim-*", count=1000)] == []
    finally:
        await client.aclose()


async def test_adversaries_with_tricks_canaries_and_churn(redis_url: str) -> None:
    """Copycats spend real miners' capacity through the gateways' routing and are caught by the canaries of
    the validators whose challenges they send back to them; detectors and discriminators earn less than
    honest miners; churned uids come back as new identities on the metagraph, and the books stay exact."""
    scenario = Scenario(
        validators=8,
        miners=40,
        epochs=3,
        seed=3,
        ticks=4,
        capacity=400,
        churn=0.1,
        sybil_distinct_keys=True,
        mix=Mix(lazy=0.1, copycat=0.15, sybil=0.0, flaky=0.0, slow=0.0, detector=0.15, discriminator=0.15),
    )
    result = await _run(redis_url, scenario)
    d = result.defenses
    assert d["copycat_forwards_served"] > 0 and d["canary_flags"] > 0
    assert d["churned_registrations"] == (scenario.epochs - 1) * 4
    by_uid = {m.uid: m for m in result.miners}
    copied = [int(u) for m in result.miners if m.behaviour == "copycat" for u in m.copied]
    assert copied and all(by_uid[u].behaviour != "copycat" for u in copied)  # real miners answered them
    assert sum(1 for m in result.miners if "-r" in m.hotkey) > 0  # re-registered under new hotkeys
    # (borrow attempts may be refused; nothing within a guaranteed pace is)
    assert (result.lua_refusals, result.guaranteed_refusals, result.validator_side_mismatches) == (0, 0, 0)
    assert result.summary["load"]["miners_over_capacity"] == 0
    per_uid = result.summary["adversarial"]["per_uid_vs_honest"]
    assert per_uid["detector"] < 0.8 and per_uid["copycat"] < 0.8 and per_uid["lazy"] < 0.3
    assert result.summary["adversarial"]["copycat_vs_source"] < 0.8


async def test_without_canaries_copycats_are_never_flagged(redis_url: str) -> None:
    scenario = Scenario(validators=6, miners=24, epochs=3, seed=4, ticks=4, capacity=400,
                        mix=Mix(copycat=0.25, sybil=0.0, detector=0.0, discriminator=0.0))
    result = await _run(redis_url, scenario, validator={"canaries": False})
    assert result.defenses["canary_flags"] == 0 and result.defenses["copycat_forwards_served"] > 0


async def test_distinct_sybil_keys_change_nothing(redis_url: str) -> None:
    """Nothing in the mechanism reads coldkeys or IPs: a run with one per sybil uid is the same run."""
    base = Scenario(validators=6, miners=16, epochs=2, seed=5, ticks=2, capacity=400, mix=Mix(sybil=0.25))
    shared = await _run(redis_url, base)
    distinct = await _run(redis_url, dataclasses.replace(base, sybil_distinct_keys=True))
    assert shared.model_dump(exclude={"seconds", "scenario"}) == distinct.model_dump(
        exclude={"seconds", "scenario"}
    )


async def test_saturated_validators_get_exactly_their_share(redis_url: str) -> None:
    """When every validator wants more than it may have, each gets exactly its apportioned share of every
    miner: stake share with the floor, whole requests split by largest remainder, never more."""
    scenario = Scenario(validators=8, miners=24, epochs=2, seed=3, ticks=2, load=60.0, capacity=400)
    # Shares alone, without the quality bar (which keeps users from every miner until it has evidence).
    no_bar = {"organic_min_evidence": 0, "organic_min_quality": 0.0, "organic_relative_quality": 0.0}
    # And no canary bench, which keeps a caught copycat's share from its validator's users on purpose.
    result = await _run(redis_url, scenario, validator={"quotas": no_bar, "canaries": False})
    population = generate(scenario)
    settings = load_settings()
    quotas = settings.validator.quotas
    stakes = {v.hotkey: v.stake for v in population.validators}
    expected = {v.hotkey: 0 for v in population.validators}
    for m in population.miners:
        split = split_capacity(m.declared, stakes, min_share=quotas.min_share, min_requests=quotas.min_requests)
        for hotkey, share in split.items():
            expected[hotkey] += share * scenario.epochs
    total = sum(expected.values())
    assert total == sum(m.declared for m in population.miners) * scenario.epochs
    for v in result.validators:
        assert v.synthetic + v.organic == expected[v.hotkey]
        assert v.entitlement_used == pytest.approx(1.0)
        assert v.organic_unplaced > 0  # it was turned away, by its own quota only
        # Whole-request rounding moves a share by less than one request per miner.
        assert abs(v.delivered_share - v.entitled_share) <= scenario.miners * scenario.epochs / total
    assert result.summary["fairness"]["jain_delivered_vs_entitled"] == pytest.approx(1.0, abs=1e-3)
    assert all(m.max_load_ratio == 1.0 for m in result.miners)  # every miner full, none past full
    # Each miner's own guard allows exactly its declared capacity in total: no rounding slack.
    assert all(m.guard_allows == m.declared for m in result.miners)
    assert result.summary["load"]["guard_slack_max"] == 0


async def test_same_seed_same_run(redis_url: str) -> None:
    scenario = Scenario(validators=6, miners=16, epochs=2, seed=11, ticks=3, capacity=400)
    first, second = await _run(redis_url, scenario), await _run(redis_url, scenario)
    a, b = first.model_dump(exclude={"seconds"}), second.model_dump(exclude={"seconds"})
    assert a == b
    other = await _run(redis_url, Scenario(validators=6, miners=16, epochs=2, seed=12, ticks=3, capacity=400))
    assert other.model_dump(exclude={"seconds"}) != a


# -- the command -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--validators", "0"], "--validators"),
        (["--epochs", "1"], "--epochs"),
        (["--sybil", "1.5"], "--sybil"),
        (["--capacity", "0"], "--capacity"),
        (["--detector", "1.2"], "--detector"),
        (["--discriminator", "-1"], "--discriminator"),
        (["--copycat-route", "nearest"], "--copycat-route"),
        (["--churn", "2"], "--churn"),
    ],
)
def test_cli_names_the_bad_flag(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert flag in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_refuses_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["simulate", "--out", str(target)])
    assert result.exit_code == 2 and "--out" in result.output


def test_cli_run_writes_table_json_and_plots(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--validators",
            "6",
            "--miners",
            "16",
            "--epochs",
            "2",
            "--ticks",
            "2",
            "--capacity",
            "400",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Jain index" in result.output and "miners pushed past declared capacity" in result.output
    assert (
        "scaled run" in result.output
    )  # a capacity below the task hint is a scaled-down run, and it says so
    data = json.loads((out / "simulation.json").read_text())
    assert data["scenario"]["validators"] == 6 and len(data["epochs"]) == 2
    assert math.isclose(sum(data["summary"]["adversarial"]["uid_share"].values()), 1.0)
    assert sorted(p.name for p in out.glob("*.png")) == [
        "adversarial.png",
        "cost.png",
        "fairness.png",
        "load.png",
        "stability.png",
    ]
