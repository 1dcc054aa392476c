"""What every benchmark measures the same way: ports, process CPU time, quantiles, the median round.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this module is imported as ``common``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference_subnet.localnet.ports import free_port  # noqa: F401 - one free-port rule everywhere

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_round(runs: Sequence[dict[str, Any]], *cpu_fields: str) -> dict[str, Any]:
    """One mode's figures from repeated rounds: throughput and latency of the median round (other processes
    on a shared machine make single rounds swing both ways), errors over all rounds, and the median of each
    per-request CPU field."""
    median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    summary: dict[str, Any] = {
        "requests": len(median["latencies"]),
        "errors": sum(r["errors"] for r in runs),
        "rps": median["rps"],
        "rps_rounds": [round(r["rps"], 1) for r in runs],
        "p50_ms": quantile(median["latencies"], 0.50) * 1e3,
        "p99_ms": quantile(median["latencies"], 0.99) * 1e3,
    }
    for field in cpu_fields:
        summary[field] = statistics.median(r[field] for r in runs)
    return summary


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of every live descendant (a supervisor and its worker processes)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
