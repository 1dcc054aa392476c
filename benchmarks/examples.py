"""The example tasks on this machine: what a miner pays per request, and what scoring it costs a validator.

Run: ``python3 benchmarks/examples.py [TASK ...]`` (default: every example of llm, image, ocr, detect,
vision that is installed). Generic over the Task API: for each task, the reference (honest) handler is built
as a miner builds it, and requests come from the task's own ``synthesize``.

Per task:
  * load: building the handler and its first answer (a miner worker loads its model once, before it listens);
  * miner: ``REQUESTS`` synthetic requests one after another: p50/p90 latency (and time to the first chunk
    for streaming tasks), and CPU time per request of this process (all its threads);
  * throughput: the same requests with ``CONCURRENCY`` in flight (the handler queues them on its worker);
  * validator: ``Task.score`` per response, scoring one response per request (the cost of an organic sample)
    and a synthetic round's ``ROUND`` responses per request (the reference is computed once per request, so
    the cost per response falls); both as a share of the miner's p50 latency, the baseline of the same run;
  * quality: the mean score of the honest answers (a sanity check: it should be near 1).
Every phase stops at ``REQUESTS`` or ``MAX_SECONDS``, whichever comes first.

Results are printed and written to ``benchmarks/results/examples.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import quantile
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import Task, UnknownTask, load_task

RESULTS = Path(__file__).resolve().parent / "results" / "examples.json"
EXAMPLES = ("llm", "image", "ocr", "detect", "vision")
REQUESTS = 20
CONCURRENCY = 4
ROUND = 6
"""Responses per request in a synthetic round (the local subnet's six miners)."""
MAX_SECONDS = 60.0
SEED = 2024


async def _call(task: Task, handler: Any, request: Any) -> tuple[Any, float, float | None]:
    """One request through the handler: the response (assembled when streamed), the seconds it took, and
    for streaming tasks the seconds to the first chunk."""
    started = time.perf_counter()
    if task.streaming:
        chunks, first = [], None
        async for chunk in handler(request):
            if first is None:
                first = time.perf_counter() - started
            chunks.append(chunk)
        return task.assemble(chunks), time.perf_counter() - started, first
    response = await handler(request)
    return response, time.perf_counter() - started, None


async def measure(task: Task, progress: Progress) -> dict[str, Any]:
    rng = random.Random(SEED)
    requests = [task.synthesize(rng) for _ in range(REQUESTS + 1)]
    bar = progress.add_task(f"{task.name}: load", total=None)
    started = time.perf_counter()
    handler = load_handler(task, {})  # a model-backed handler loads its model here, as a miner worker does
    await _call(task, handler, requests[0])
    load_seconds = time.perf_counter() - started
    warm = time.perf_counter()
    task.score(requests[0], [(await _call(task, handler, requests[0]))[0]], [0.0])  # the validator's model
    score_load = time.perf_counter() - warm

    progress.update(bar, description=f"{task.name}: miner", total=REQUESTS, completed=0)
    answers, latencies, firsts = [], [], []
    cpu0, deadline = time.process_time(), time.perf_counter() + MAX_SECONDS
    for request in requests[1:]:
        response, seconds, first = await _call(task, handler, request)
        answers.append((request, response, seconds))
        latencies.append(seconds)
        if first is not None:
            firsts.append(first)
        progress.advance(bar)
        if time.perf_counter() > deadline:
            break
    cpu_per_request = (time.process_time() - cpu0) / len(answers)

    progress.update(bar, description=f"{task.name}: throughput", total=len(answers), completed=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(request: Any) -> None:
        async with gate:
            await _call(task, handler, request)
            progress.advance(bar)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(r) for r, _, _ in answers)), MAX_SECONDS * 2)
    rps = len(answers) / (time.perf_counter() - started)

    progress.update(bar, description=f"{task.name}: validator", total=len(answers) * 2, completed=0)
    single, per_round, quality = [], [], []
    deadline = time.perf_counter() + MAX_SECONDS
    for request, response, seconds in answers:
        fresh = load_task(task.name)  # no cached reference: the first scoring of a request
        t0 = time.perf_counter()
        quality.extend(fresh.score(request, [response], [seconds]))
        single.append(time.perf_counter() - t0)
        progress.advance(bar)
        fresh = load_task(task.name)
        t0 = time.perf_counter()
        fresh.score(request, [response] * ROUND, [seconds] * ROUND)
        per_round.append((time.perf_counter() - t0) / ROUND)
        progress.advance(bar)
        if time.perf_counter() > deadline:
            break
    p50 = statistics.median(latencies)
    return {
        "task": task.name,
        "requests": len(answers),
        "load_s": load_seconds,
        "validator_load_s": score_load,
        "miner_p50_ms": p50 * 1e3,
        "miner_p90_ms": quantile(latencies, 0.9) * 1e3,
        "first_chunk_p50_ms": statistics.median(firsts) * 1e3 if firsts else None,
        "miner_cpu_ms": cpu_per_request * 1e3,
        "rps": rps,
        "score_ms": statistics.median(single) * 1e3,
        "score_share": statistics.median(single) / p50,
        "score_round_ms": statistics.median(per_round) * 1e3,
        "score_round_share": statistics.median(per_round) / p50,
        "honest_quality": statistics.fmean(quality),
    }


def installed(names: list[str], console: Console) -> list[Task]:
    tasks = []
    for name in names:
        try:
            task = load_task(name)
            load_handler(task, {})
        except (UnknownTask, ImportError, LookupError) as exc:
            console.print(f"[yellow]skipping {name}: {exc}[/]")
            continue
        tasks.append(task)
    return tasks


async def run(tasks: list[Task], console: Console) -> list[dict[str, Any]]:
    results = []
    with Progress(console=console, transient=True) as progress:
        for task in tasks:
            results.append(await measure(task, progress))
    return results


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "tasks", nargs="*", help=f"example tasks (default: the installed ones of {', '.join(EXAMPLES)})"
    )
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: room for every column
        console = Console(width=170)
    tasks = installed(list(args.tasks or EXAMPLES), console)
    if not tasks:
        console.print("[red]no example task is installed: pip install -e .[examples][/]")
        sys.exit(1)
    results = asyncio.run(run(tasks, console))

    threads = _torch_threads()
    table = Table(title=f"example tasks on this machine: {REQUESTS} requests each, {os.cpu_count()} CPUs, "
                        f"torch threads {threads}, load average {os.getloadavg()[0]:.1f}")
    for column in ("task", "load s", "miner p50 ms", "p90 ms", "1st chunk ms", "miner CPU ms", "req/s",
                   "score ms (1 resp)", "share", f"score ms/resp ({ROUND})", "share", "honest quality"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in results:
        table.add_row(
            r["task"], f"{r['load_s']:.1f}", f"{r['miner_p50_ms']:.1f}", f"{r['miner_p90_ms']:.1f}",
            "-" if r["first_chunk_p50_ms"] is None else f"{r['first_chunk_p50_ms']:.1f}",
            f"{r['miner_cpu_ms']:.1f}", f"{r['rps']:.1f}", f"{r['score_ms']:.1f}", f"{r['score_share']:.0%}",
            f"{r['score_round_ms']:.1f}", f"{r['score_round_share']:.0%}", f"{r['honest_quality']:.3f}",
        )
    console.print(table)
    console.print("share: the validator's scoring time per response as a share of the miner's p50 latency.")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch_threads": threads, "load_average": os.getloadavg()},
        "requests": REQUESTS, "concurrency": CONCURRENCY, "round": ROUND,
        "results": results,
    }, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
