"""A run's result as terminal tables and a JSON file."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from inference_subnet.simulate.results import SimulationResult, ValidatorRow
from inference_subnet.simulate.population import TWIN
from inference_subnet.simulate.scenario import CLASSES

FULL_CAPACITY = 1000
"""The framework's default capacity hint per task and epoch: a run below it is a scaled-down one."""
SHOWN_VALIDATORS = 5


def write_json(result: SimulationResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "simulation.json"
    path.write_text(result.model_dump_json(indent=2))
    return path


def scale_note(result: SimulationResult) -> str | None:
    """What a scaled-down run changes, said in its output."""
    capacity = result.scenario["capacity"]
    if capacity >= FULL_CAPACITY:
        return None
    floor = result.settings["quotas"]["min_requests"]
    return (
        f"scaled run: miners declare a median {capacity} requests per epoch "
        f"({capacity / FULL_CAPACITY:.0%} of the task default {FULL_CAPACITY}), so every validator sends "
        f"{capacity / FULL_CAPACITY:.0%} of the requests it "
        f"would at full scale; a floor validator still holds {floor} requests per epoch of every miner, a "
        f"larger part of a small one. --capacity {FULL_CAPACITY} runs full scale."
    )


def render(result: SimulationResult, console: Console) -> None:
    s = result.summary
    sc = result.scenario
    fair, load, rank, cost = (s[k] for k in ("fairness", "load", "ranking", "cost"))
    console.print(
        f"[bold]Simulated subnet[/]: {sc['validators']} validators ({fair['validators_at_floor']} at the "
        f"{result.settings['quotas']['min_requests']}-request floor), {sc['miners']} miners, {sc['epochs']} epochs "
        f"({result.simulated_hours:.1f} h simulated from {_clock(result.epochs[0].hour)}), "
        f"seed {sc['seed']}; {result.seconds:.0f} s on this machine"
    )
    if note := scale_note(result):
        console.print(f"[yellow]{note}[/]")
    console.print(_validators_table(result))
    console.print(_classes_table(result))
    table = Table(title="Load, ranking and cost", show_header=False, title_justify="left")
    table.add_column("measure")
    table.add_column("value")
    over = load["miners_over_capacity"]
    table.add_row(
        "miners pushed past declared capacity",
        f"[{'green' if over == 0 else 'red'}]{over}[/] (largest epoch load / capacity "
        f"{load['max_load_ratio']:.3f})",
    )
    table.add_row("capacity used over the run", f"{load['capacity_used']:.1%}")
    table.add_row(
        "largest one-step burst / even rate",
        f"{load['max_step_burst']:.1f}x (median miner {load['median_step_burst']:.1f}x)",
    )
    table.add_row("miner guard slack (its own limit beyond capacity)", f"up to {load['guard_slack_max']:.1%}")
    table.add_row(
        "sybil backends: peak load / real capacity",
        f"{load['sybil_backend_max_load']:.2f}x ({load['sybil_overloaded_answers']} answers timed out)",
    )
    stable = rank["epochs_until_stable"]
    table.add_row(
        f"honest ranking stable (tau >= {rank['stable_tau']}) after",
        f"{stable} epochs" if stable is not None else "not within the run",
    )
    table.add_row(
        "final tau: previous epoch / true value",
        f"{_num(rank['final_tau_previous'])} / {_num(rank['final_tau_truth'])}",
    )
    table.add_row("score error vs declared capacity (tau, 0 = unbiased)", _num(rank.get("capacity_bias_tau")))
    adv = result.summary["adversarial"]
    table.add_row(
        "one sybil machine earns / copycats earn vs their source",
        f"{_num(adv.get('sybil_machine_vs_honest_uid'), 1)} honest uids "
        f"({_num(adv.get('sybil_machine_vs_single_uid'), 2)} x its twin behind one uid) / "
        f"{_num(adv.get('copycat_vs_source'), 2)}",
    )
    table.add_row(
        "scored responses per hour per validator",
        f"mean {cost['scored_per_hour_mean']:.0f}, min {cost['scored_per_hour_min']:.0f}, "
        f"max {cost['scored_per_hour_max']:.0f} (all validators {cost['scored_per_hour_all']:.0f})",
    )
    table.add_row(
        "responses scored / turned away by the dropout cap",
        f"{cost['scored_share']:.1%} / {cost['capped_share']:.1%}",
    )
    table.add_row(
        "plan vs Redis: quota refusals, miner 429s, mismatches",
        f"{load['lua_refusals']}, {load['miner_refusals']}, {load['validator_side_mismatches']}",
    )
    console.print(table)


def _validators_table(result: SimulationResult) -> Table:
    fair = result.summary["fairness"]
    table = Table(
        title=f"Validators: delivered share vs stake share (Jain index vs stake "
        f"{fair['jain_delivered_vs_stake']:.3f}, vs entitlement {fair['jain_delivered_vs_entitled']:.3f})",
        title_justify="left",
    )
    for name in (
        "validator",
        "stake share",
        "entitled",
        "delivered",
        "delivered/stake",
        "organic met",
        "entitlement used",
        "scored/h",
    ):
        table.add_column(name, justify="left" if name == "validator" else "right")
    ranked = sorted(result.validators, key=lambda v: -v.stake)
    for v in ranked[:SHOWN_VALIDATORS]:
        table.add_row(f"uid {v.uid}", *_cells([v]))
    rest = ranked[SHOWN_VALIDATORS:]
    pinned = [v for v in rest if v.entitled_share > v.stake_share]
    others = [v for v in rest if v not in pinned]
    if others:
        table.add_row(f"{len(others)} others", *_cells(others))
    if pinned:
        table.add_row(f"{len(pinned)} at the floor", *_cells(pinned))
    return table


def _cells(group: list[ValidatorRow]) -> list[str]:
    stake = sum(v.stake_share for v in group)
    entitled = sum(v.entitled_share for v in group)
    delivered = sum(v.delivered_share for v in group)
    demand = sum(v.organic_demand for v in group)
    met = sum(v.organic_ok for v in group) / demand if demand else 0.0
    entitled_requests = sum(
        (v.synthetic + v.organic) / v.entitlement_used for v in group if v.entitlement_used
    )
    used = sum(v.synthetic + v.organic for v in group) / entitled_requests if entitled_requests else 0.0
    per_hour = sum(v.scored_per_hour for v in group) / len(group)
    return [
        f"{stake:.2%}",
        f"{entitled:.2%}",
        f"{delivered:.2%}",
        f"{delivered / stake:.2f}" if stake else "-",
        f"{met:.0%}",
        f"{used:.0%}",
        f"{per_hour:.0f}",
    ]


def _classes_table(result: SimulationResult) -> Table:
    adv = result.summary["adversarial"]
    table = Table(title="Miners by behaviour: weight captured (consensus incentive)", title_justify="left")
    for name in (
        "class",
        "uids",
        "uid share",
        "incentive (final)",
        "incentive (2nd half)",
        "per uid vs honest",
        "mean score",
        "max load/capacity",
    ):
        table.add_column(name, justify="left" if name == "class" else "right")
    for c in (*CLASSES, TWIN):
        miners = [m for m in result.miners if m.behaviour == c]
        if not miners:
            continue
        per_uid = adv["per_uid_vs_honest"][c]
        table.add_row(
            c,
            str(len(miners)),
            f"{adv['uid_share'][c]:.1%}",
            f"{adv['incentive_share_final'][c]:.1%}",
            f"{adv['incentive_share_second_half'][c]:.1%}",
            f"{per_uid:.2f}" if per_uid is not None else "-",
            f"{sum(m.final_score for m in miners) / len(miners):.3f}",
            f"{max(m.max_load_ratio for m in miners):.3f}",
        )
    return table


def _clock(hour: float) -> str:
    return f"{int(hour):02d}:{round(hour % 1 * 60):02d}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
