"""What forwarding an ``llm`` request to an inference server costs, beside the built-in handler measured in
the same run.

Run: ``python3 benchmarks/llm_backend.py``. It starts ``inference-subnet llm serve`` (the tiny model) in a
child process on 127.0.0.1 and times the same synthesized requests three ways:

1. ``built-in``: the reference handler decoding in this process (the baseline);
2. ``backend``: ``openai_backend`` streaming each request from the server over HTTP and SSE;
3. ``backend x4``: the same, four requests at a time (the server interleaves them on its model thread).

Per mode: requests, errors, time to the first text chunk and to the last (p50, p99) and completion tokens
per second. Every loop is bounded; results are printed and written to ``benchmarks/results/llm_backend.json``.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from common import free_port, quantile
from rich.console import Console
from rich.table import Table

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.tasks.llm.task import LLMRequest, LLMTask

RESULTS = Path(__file__).resolve().parent / "results" / "llm_backend.json"
REQUESTS = 40
CONCURRENCY = 4
TASK = LLMTask()


async def timed(handler: Any, request: LLMRequest) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    tokens = 0
    async for chunk in handler(request):
        if first is None and chunk.delta:
            first = time.perf_counter() - start
        tokens = chunk.completion_tokens or tokens
    total = time.perf_counter() - start
    return (first if first is not None else total), total, tokens


async def run(handler: Any, requests: list[LLMRequest], concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(request: LLMRequest) -> tuple[float, float, int] | None:
        nonlocal errors
        async with gate:
            try:
                return await timed(handler, request)
            except Exception:  # noqa: BLE001  (counted, not fatal: the table shows them)
                errors += 1
                return None

    start = time.perf_counter()
    results = [r for r in await asyncio.gather(*(one(r) for r in requests)) if r is not None]
    wall = time.perf_counter() - start
    firsts, totals, tokens = zip(*results) if results else ((), (), ())
    return {
        "requests": len(requests), "errors": errors,
        "first_p50_ms": quantile(firsts, 0.5) * 1e3, "first_p99_ms": quantile(firsts, 0.99) * 1e3,
        "total_p50_ms": quantile(totals, 0.5) * 1e3, "total_p99_ms": quantile(totals, 0.99) * 1e3,
        "tokens_per_s": sum(tokens) / wall,
    }


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "inference_subnet.cli.main", "llm", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("llm serve did not become ready")


async def main() -> None:
    rng = random.Random(7)
    requests = [TASK.synthesize(rng) for _ in range(REQUESTS)]
    port = free_port()
    server = start_server(port)
    try:
        builtin = load_handler(TASK, {})
        backend = load_handler(TASK, {"base_url": f"http://127.0.0.1:{port}/v1"},
                               "inference_subnet.tasks.llm.openai_backend:make_handler")
        await run(builtin, requests[:4], 1)  # warm both paths
        await run(backend, requests[:4], 1)
        modes = {
            "built-in": await run(builtin, requests, 1),
            "backend": await run(backend, requests, 1),
            f"backend x{CONCURRENCY}": await run(backend, requests, CONCURRENCY),
        }
    finally:
        server.terminate()
        server.wait(10)
    table = Table(title=f"llm: {REQUESTS} synthesized requests (tiny model, CPU)", title_justify="left")
    for column in ("mode", "requests", "errors", "first p50 ms", "first p99 ms", "total p50 ms", "total p99 ms",
                   "tokens/s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for name, m in modes.items():
        table.add_row(name, str(m["requests"]), str(m["errors"]), f"{m['first_p50_ms']:.1f}",
                      f"{m['first_p99_ms']:.1f}", f"{m['total_p50_ms']:.1f}", f"{m['total_p99_ms']:.1f}",
                      f"{m['tokens_per_s']:.0f}")
    Console().print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"python": platform.python_version(), "requests": REQUESTS,
                                   "modes": modes}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
