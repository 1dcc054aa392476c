"""A run's result as PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit to import

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from inference_subnet.simulate.results import SimulationResult
from inference_subnet.simulate.scenario import CLASSES

COLOURS = {
    "honest": "#2a9d8f",
    "lazy": "#e9c46a",
    "copycat": "#e76f51",
    "sybil": "#6d597a",
    "flaky": "#8ab17d",
    "slow": "#264653",
    "twin": "#b5838d",
    "detector": "#f4a261",
    "discriminator": "#9d4edd",
}


def write_plots(result: SimulationResult, out: Path) -> list[Path]:
    """Write every plot into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (
        ("fairness", _fairness),
        ("load", _load),
        ("stability", _stability),
        ("adversarial", _adversarial),
        ("cost", _cost),
    ):
        fig = draw(result)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _fairness(result: SimulationResult) -> Figure:
    fig, ax = plt.subplots(figsize=(7.5, 6))
    v = result.validators
    stake = [x.stake_share for x in v]
    ax.scatter(
        stake, [x.delivered_share for x in v], s=28, color="#264653", label="delivered share", zorder=3
    )
    ax.scatter(
        stake,
        [x.entitled_share for x in v],
        s=40,
        facecolors="none",
        edgecolors="#e76f51",
        label="entitled share (stake with the floor)",
        zorder=2,
    )
    low, high = min(stake) * 0.7, max(max(stake), max(x.delivered_share for x in v)) * 1.4
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="share = stake share")
    floor = result.settings["quotas"]["min_requests"] / max(1, result.scenario["capacity"])
    ax.axhline(floor, color="#e9c46a", linewidth=1, label=f"floor ({floor:.1%} of a median miner)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # decade labels only: minor labels overlap on log axes
    ax.set_xlabel("stake share")
    ax.set_ylabel("share of all requests served")
    fair = result.summary["fairness"]
    ax.set_title(
        f"Fairness: Jain index {fair['jain_delivered_vs_stake']:.3f} vs stake, "
        f"{fair['jain_delivered_vs_entitled']:.3f} vs entitlement"
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig


def _load(result: SimulationResult) -> Figure:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    miners = sorted(result.miners, key=lambda m: -m.max_load_ratio)
    xs = range(len(miners))
    colours = [COLOURS[m.behaviour] for m in miners]
    top.bar(xs, [m.max_load_ratio for m in miners], color=colours, width=1.0)
    top.axhline(1.0, color="red", linewidth=1, linestyle="--", label="declared capacity")
    top.set_ylabel("busiest epoch's load / capacity")
    top.set_ylim(0, max(1.35, max(m.max_load_ratio for m in miners) * 1.25))  # room for the legend
    top.set_title(
        f"Load against declared capacity per miner (never above 1: "
        f"{result.summary['load']['miners_over_capacity']} miners over)"
    )
    bottom.bar(xs, [m.max_step_burst for m in miners], color=colours, width=1.0)
    bottom.axhline(1.0, color="grey", linewidth=1, linestyle="--", label="capacity spread evenly")
    bottom.set_ylabel("busiest step / even rate")
    step_minutes = result.settings["quotas"]["epoch_seconds"] / 60.0 / result.scenario["ticks"]
    bottom.set_xlabel(f"miners, by busiest epoch's load (one step = {step_minutes:.0f} min)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[c]) for c in CLASSES]
    top.legend(
        handles + top.get_legend_handles_labels()[0],
        [*CLASSES, "declared capacity"],
        fontsize=8,
        ncol=7,
        loc="upper right",
    )
    bottom.legend(fontsize=8, loc="upper right")
    return fig


def _stability(result: SimulationResult) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = [e.epoch for e in result.epochs]
    ax.plot(
        epochs[1:],
        [e.tau_previous for e in result.epochs[1:]],
        marker="o",
        color="#264653",
        label="against the previous epoch",
    )
    ax.plot(
        epochs,
        [e.tau_truth for e in result.epochs],
        marker="s",
        color="#2a9d8f",
        label="against the true value",
    )
    rank = result.summary["ranking"]
    ax.axhline(
        rank["stable_tau"],
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"stable: tau >= {rank['stable_tau']}",
    )
    if rank["epochs_until_stable"] is not None:
        ax.axvline(
            rank["epochs_until_stable"],
            color="#e76f51",
            linewidth=1,
            label=f"stable from epoch {rank['epochs_until_stable']}",
        )
    ax.set_ylim(min(-0.05, min((e.tau_truth for e in result.epochs), default=0) - 0.05), 1.05)
    ax.set_xlabel("epoch (one tempo)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Kendall tau of the honest ranking")
    ax.set_title("How fast the honest miners' ranking (by incentive) settles")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.25)
    return fig


def _adversarial(result: SimulationResult) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5))
    epochs = [e.epoch for e in result.epochs]
    uid_share = result.summary["adversarial"]["uid_share"]
    for c in CLASSES:
        if not uid_share.get(c):
            continue
        ax.plot(
            epochs,
            [e.class_incentive.get(c, 0.0) for e in result.epochs],
            color=COLOURS[c],
            marker=".",
            label=f"{c} ({uid_share[c]:.0%} of uids)",
        )
        ax.axhline(uid_share[c], color=COLOURS[c], linestyle=":", linewidth=1)
    ax.set_xlabel("epoch (one tempo)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("share of consensus incentive")
    ax.set_title("Weight captured by each behaviour (dotted: its share of uids)")
    ax.legend(fontsize=8, ncol=2, loc="center right")
    ax.grid(alpha=0.25)
    return fig


def _cost(result: SimulationResult) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    v = result.validators
    left.scatter([x.stake_share for x in v], [x.scored_per_hour for x in v], color="#264653", s=24)
    left.set_xscale("log")
    left.set_yscale("log")
    left.xaxis.set_minor_formatter(NullFormatter())
    left.set_xlabel("stake share")
    left.set_ylabel("scored responses per hour")
    left.set_title("Validator cost: responses it must score")
    left.grid(True, which="both", alpha=0.25)
    hours = result.settings["quotas"]["epoch_seconds"] / 3600.0
    epochs = [e.epoch for e in result.epochs]
    right.plot(
        epochs,
        [e.scored / hours for e in result.epochs],
        marker="o",
        color="#264653",
        label="scored per hour, all validators",
    )
    right.plot(
        epochs,
        [(e.synthetic_delivered + e.organic_delivered) / hours for e in result.epochs],
        marker=".",
        color="#2a9d8f",
        label="requests served per hour",
    )
    right.set_xlabel("epoch (one tempo)")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("per hour")
    twin = right.twinx()
    twin.plot(
        epochs,
        [e.demand_factor for e in result.epochs],
        color="#e9c46a",
        linestyle="--",
        label="organic demand (daily curve)",
    )
    twin.set_ylim(0, 1.1)
    twin.set_ylabel("demand relative to the daily peak")
    lines = right.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    right.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper left")
    right.set_title("Over the simulated hours")
    right.grid(alpha=0.25)
    return fig
