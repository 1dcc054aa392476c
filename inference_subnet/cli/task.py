"""`inference-subnet task check`: run a task's whole life on a few requests and show what broke."""

from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from inference_subnet.cli.common import fail, printable

app = typer.Typer(help="Check a task before running it in a subnet.", no_args_is_help=True)


@app.command("check")
def check(
    task_path: Annotated[str, typer.Argument(metavar="TASK", help="A task name or module:Class path.")],
    handler: Annotated[
        Optional[str],
        typer.Option("--handler", help="module:factory of the miner handler; default: the task's default_handler."),
    ] = None,
    requests: Annotated[int, typer.Option("--requests", min=1, max=100, help="Requests to synthesize.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthesized requests.")] = 0,
    min_honest: Annotated[
        float, typer.Option("--min-honest", min=0.0, max=1.0, help="Least score an honest answer must get.")
    ] = 0.5,
) -> None:
    """Synthesize requests, round-trip them, run the handler, score honest, wrong and garbage answers,
    time each step; exit 1 when a check fails."""
    from inference_subnet.builder.check import check_task
    from inference_subnet.protocol.handlers import load_handler
    from inference_subnet.protocol.task import UnknownTask, load_task

    try:
        task = load_task(task_path)
    except UnknownTask as exc:
        fail(f"TASK: {exc}")
    try:
        built = load_handler(task, {"behaviour": "honest"}, handler)
    except (LookupError, ValueError) as exc:
        fail(f"{'--handler' if handler else 'TASK'}: {exc}")
    report = asyncio.run(check_task(task, built, requests=requests, seed=seed, min_honest=min_honest))
    out = Console()
    table = Table(title=f"task {printable(report.task)}: {report.requests} synthesized request(s)", title_justify="left")
    for column, justify in (("check", "left"), ("result", "left"), ("runs", "right"), ("max ms", "right"),
                            ("total ms", "right"), ("detail", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for step in report.steps.values():
        result = Text("ok", style="green") if step.ok else Text(
            "not run" if step.runs == 0 else "FAIL", style="yellow" if step.runs == 0 else "bold red")
        timed = bool(step.seconds)
        table.add_row(
            step.name, result, str(step.runs),
            f"{max(step.seconds) * 1000:.1f}" if timed else "",
            f"{sum(step.seconds) * 1000:.1f}" if timed else "",
            Text(printable(step.detail)),  # the author's messages are never read as markup
        )
    out.print(table)
    failed = [s.name for s in report.steps.values() if s.failures]
    skipped = [s.name for s in report.steps.values() if not s.runs]
    if failed or skipped:
        after = f" ({len(skipped)} later check(s) not run)" if skipped else ""
        out.print(Text(f"FAILED: {', '.join(failed) or 'nothing ran'}{after}", style="bold red"))
        raise typer.Exit(1)
    out.print(Text("all checks passed", style="bold green"))
