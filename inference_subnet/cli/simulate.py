"""`inference-subnet simulate`: a mainnet-size subnet in accelerated time, with the framework's own code."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inference_subnet.cli.common import console, fail, settings
from inference_subnet.settings import Settings
from inference_subnet.simulate.scenario import Mix, Scenario, ScenarioError


def run_simulate(
    validators: Annotated[
        int, typer.Option("--validators", help="Validators with a permit (mainnet: 64).")
    ] = 64,
    miners: Annotated[
        int, typer.Option("--miners", help="Miner uids (mainnet: 256 uids minus the validators).")
    ] = 192,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Epochs (tempos of 360 blocks) to simulate; 20 are a day.")
    ] = Scenario.epochs,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the population, traffic and every draw.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder for simulation.json and the PNG plots.")] = Path(
        "simulation"
    ),
    lazy: Annotated[
        float, typer.Option("--lazy", help="Share of miners answering at once with cheap wrong answers.")
    ] = Mix.lazy,
    copycat: Annotated[
        float, typer.Option("--copycat", help="Share of miners relaying a top miner's answers.")
    ] = Mix.copycat,
    sybil: Annotated[
        float,
        typer.Option("--sybil", help="Share of miner uids run by sybils sharing one backend per group."),
    ] = Mix.sybil,
    sybil_group: Annotated[
        int, typer.Option("--sybil-group", help="Uids behind one sybil backend.")
    ] = Scenario.sybil_group,
    flaky: Annotated[float, typer.Option("--flaky", help="Share of miners failing often.")] = Mix.flaky,
    slow: Annotated[
        float, typer.Option("--slow", help="Share of miners answering close to the timeout.")
    ] = Mix.slow,
    detector: Annotated[
        float,
        typer.Option(
            "--detector",
            help="Share of miners serving recognised fresh challenges well and everything else cheaply.",
        ),
    ] = Mix.detector,
    discriminator: Annotated[
        float,
        typer.Option(
            "--discriminator",
            help="Share of miners serving validators above the stake floor well and floor validators badly.",
        ),
    ] = Mix.discriminator,
    copycat_route: Annotated[
        str,
        typer.Option(
            "--copycat-route",
            help="How copycats pick the gateway they forward to, by demand: 'request' (per request) or "
            "'fixed' (one per copycat).",
        ),
    ] = Scenario.copycat_route,
    sybil_distinct_keys: Annotated[
        bool,
        typer.Option(
            "--sybil-distinct-keys/--sybil-shared-keys",
            help="Every sybil uid has its own coldkey and IP (the default: one per machine).",
        ),
    ] = Scenario.sybil_distinct_keys,
    churn: Annotated[
        float,
        typer.Option(
            "--churn", help="Share of miner uids re-registered under a new hotkey at each new epoch."
        ),
    ] = Scenario.churn,
    capacity: Annotated[
        int,
        typer.Option(
            "--capacity",
            help="Median capacity (requests per epoch) miners declare; 1000 is the task default.",
        ),
    ] = Scenario.capacity,
    load: Annotated[
        float, typer.Option("--load", help="Organic demand at the daily peak / organic capacity.")
    ] = Scenario.load,
    ticks: Annotated[int, typer.Option("--ticks", help="Simulation steps per epoch.")] = Scenario.ticks,
    start_hour: Annotated[
        float,
        typer.Option("--start-hour", help="Simulated hour of day to start at (organic demand peaks at 15)."),
    ] = Scenario.start_hour,
    stable_tau: Annotated[
        float,
        typer.Option(
            "--stable-tau", help="Kendall tau between epochs from which a ranking counts as stable."
        ),
    ] = Scenario.stable_tau,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
) -> None:
    """Simulate a subnet's quotas, scoring and weights at mainnet size with adversarial miners, and report
    fairness, load against capacity, ranking stability, weight captured by each behaviour and validator
    cost."""
    os.environ.setdefault("ISN_LOG_LEVEL", "WARNING")  # the progress bar and the tables are the output
    scenario = Scenario(
        validators=validators,
        miners=miners,
        epochs=epochs,
        seed=seed,
        sybil_group=sybil_group,
        mix=Mix(
            lazy=lazy,
            copycat=copycat,
            sybil=sybil,
            flaky=flaky,
            slow=slow,
            detector=detector,
            discriminator=discriminator,
        ),
        copycat_route=copycat_route,
        sybil_distinct_keys=sybil_distinct_keys,
        churn=churn,
        capacity=capacity,
        load=load,
        ticks=ticks,
        start_hour=start_hour,
        stable_tau=stable_tau,
    )
    try:
        scenario.check()
    except ScenarioError as exc:
        fail(str(exc))
    if out.exists() and not out.is_dir():
        fail(f"--out: {out} exists and is not a folder")
    cfg = settings()
    from inference_subnet.simulate.plots import write_plots
    from inference_subnet.simulate.report import render, write_json

    result = asyncio.run(_run(scenario, cfg))
    out_console = Console()
    if not out_console.is_terminal:  # redirected to a file: wide enough for the tables' columns
        out_console = Console(width=120)
    render(result, out_console)
    path = write_json(result, out)
    console.print(f"JSON: {path}")
    if plots:
        for png in write_plots(result, out):
            console.print(f"plot: {png}")


SOCKET_TIMEOUT = 120.0
"""Seconds the simulation waits for one Redis reply."""


async def _run(scenario: Scenario, cfg: Settings):
    from inference_subnet.simulate.engine import Simulation
    from inference_subnet.store.redis import RedisOptions, connect

    # A batch run, not a service: one step's pipelines carry thousands of commands, and on a busy machine
    # reading their replies can take longer than a service's 5 s deadline.
    redis = connect(cfg.redis_url, RedisOptions(socket_timeout=SOCKET_TIMEOUT))
    steps = scenario.epochs * scenario.ticks
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("setting up", total=steps, detail="")

            def step(info) -> None:
                progress.update(
                    bar,
                    advance=1,
                    description=f"epoch {info.epoch + 1}/{scenario.epochs}",
                    detail=f"{info.served} served, {info.scored} scored this step",
                )

            return await Simulation(scenario, cfg, redis, on_step=step).run()
    finally:
        await redis.aclose()
