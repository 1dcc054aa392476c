"""`inference-subnet localnet`: a whole subnet on this machine, visibly working, with its outcome checked."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from inference_subnet.chain.types import ChainError
from inference_subnet.cli.common import console, fail, settings
from inference_subnet.miner.process import MinerProcessError
from inference_subnet.protocol.task import UnknownTask, load_task
from inference_subnet.protocol.behaviours import BEHAVIOURS


def run_localnet(
    miners: Annotated[int, typer.Option("--miners", min=2, max=64, help="Miners to start (a mix of behaviours).")] = 6,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "--tasks", help="Task to run (repeat, or comma-separated); default: arithmetic."),
    ] = None,
    chain: Annotated[str, typer.Option("--chain", help="`real` (needs --chain-url) or `memory`.")] = "memory",
    chain_url: Annotated[
        str | None,
        typer.Option("--chain-url", envvar="ISN_LOCALNET_CHAIN_URL",
                     help="ws:// URL of a dev subtensor node whose sudo key is //Alice."),
    ] = None,
    duration: Annotated[float, typer.Option("--duration", min=0, help="Seconds to run; 0 runs until Ctrl-C.")] = 60.0,
    block_time: Annotated[float, typer.Option("--block-time", min=0.1, help="Seconds between blocks.")] = 1.0,
    behaviour: Annotated[
        list[str] | None,
        typer.Option("--behaviour", help=f"Miner behaviours in turn (repeat): {', '.join(BEHAVIOURS)}."),
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Wallets, logs and database; default: a temp dir.")] = None,
    live: Annotated[bool | None, typer.Option("--live/--no-live", help="Live view; default: on a terminal.")] = None,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="After the summary (and the report), keep everything running until Ctrl-C."),
    ] = False,
) -> None:
    """Start a chain, a validator and N miners (honest, slow, flaky, wrong), run rounds and organic traffic,
    set weights, and check that honest miners end with more weight than faulty ones. Prints the gateway and
    dashboard URLs and an API key to call it with."""
    from inference_subnet.localnet.report import LocalnetReport, access_lines, blocks_text
    from inference_subnet.localnet.run import LocalnetOptions, run_localnet as run

    os.environ.setdefault("ISN_LOG_LEVEL", "WARNING")  # the live view is the output; logs only for trouble
    settings()  # validates the config file and environment, sets up logging
    if chain not in ("real", "memory"):
        fail(f"--chain: expected `real` or `memory`, got {chain!r}")
    if chain == "real" and not chain_url:
        fail("--chain real needs --chain-url ws://... (a dev subtensor node, e.g. the one ../shared/chain/start.sh prints)")
    unknown = sorted(set(behaviour or ()) - set(BEHAVIOURS))
    if unknown:
        fail(f"--behaviour: unknown {', '.join(unknown)}; choose from {', '.join(BEHAVIOURS)}")
    tasks = tuple(name.strip() for value in (task or ["arithmetic"]) for name in value.split(",") if name.strip())
    try:
        for name in tasks:
            load_task(name)
    except UnknownTask as exc:
        fail(f"--task: {exc}")
    options = LocalnetOptions(
        miners=miners, tasks=tasks, chain_url=chain_url if chain == "real" else None,
        duration=duration or None, block_time=block_time, behaviours=tuple(behaviour) if behaviour else None,
        workdir=workdir, live=live, keep=keep,
    )

    def summarize(outcome: LocalnetReport) -> None:
        """The report and the summary, as soon as the run is judged (before ``--keep`` keeps it running)."""
        if report is not None:
            report.write_text(outcome.model_dump_json(indent=2))
            console.print(f"report written to {report}")
        first = "never" if outcome.seconds_to_first_weights is None else f"{outcome.seconds_to_first_weights:.1f}s"
        console.print(
            f"{blocks_text(outcome.head_block, outcome.start_block)} · rounds {outcome.rounds}"
            f" · synthetic calls {sum(m.synthetic_calls for m in outcome.miners)}"
            f" · organic {outcome.organic_ok}/{outcome.organic_requests} ok ({outcome.organic_good} correct)"
            f" · first weights after {first}",
            soft_wrap=True,
        )
        for line in access_lines(outcome.access):
            console.print(line, highlight=False, soft_wrap=True)
        for row in outcome.miners:
            if row.first_error:
                console.print(f"{row.name} ({row.behaviour}) first error: {row.first_error}"
                              f" (log: {row.log_file})", markup=False, highlight=False, soft_wrap=True)
        if outcome.scoring_error:
            console.print(f"scoring failed, first: {outcome.scoring_error}", markup=False, highlight=False,
                          soft_wrap=True)
        if outcome.verdict_ok:
            console.print(f"[bold green]OK[/]: {escape(outcome.verdict)}")
        else:
            console.print(f"[bold red]FAILED[/]: {escape(outcome.verdict)}")

    try:
        outcome = asyncio.run(run(options, console, summarize))
    except ChainError as exc:
        fail(f"--chain-url {chain_url}: {exc}" if chain_url else f"chain: {exc}", code=1)
    except MinerProcessError as exc:
        fail(f"a miner did not start: {exc}", code=1)
    if not outcome.verdict_ok:
        raise typer.Exit(1)
