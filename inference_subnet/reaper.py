"""The reaper: a tiny process that stops a parent's children once the parent is gone, however it went.

A process that is SIGKILLed, killed by the OOM killer or crashes in C runs no handler, so the children it
started (an embedded ``valkey-server``, a local subnet's miners) would live on, holding ports and memory.
:mod:`inference_subnet.lifecycle` starts this script as ``python -I -S reaper.py GRACE`` with a pipe on its
stdin and writes one order a line: ``+PID START`` guards a child (``START`` is its start time in clock
ticks, ``0`` when unknown), ``-PID`` releases it. Only the parent holds the pipe's write end, so the end of
input means the parent exited: every child still guarded and still the same process (its start time
matches, so a recycled pid is never hit) gets SIGTERM, then SIGKILL after ``GRACE`` seconds.

Standard library only, and no package import: it must start in milliseconds and keep working while the
package it belongs to is being reinstalled.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable

POLL_SECONDS = 0.05


def process_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks)`` from ``/proc/PID/stat``; ``None`` when no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ")".
    fields = raw.rpartition(")")[2].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` (no such process, or no ``/proc``)."""
    stat = process_stat(pid)
    return stat[1] if stat else None


def is_same_process(pid: int, start: int) -> bool:
    """Whether ``pid`` is alive (a zombie is not) and, when ``start`` is known, the very process guarded."""
    if not os.path.isdir("/proc/self"):  # no procfs (macOS): liveness is all there is to check
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    stat = process_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and (not start or stat[1] == start)


def read_orders(lines: Iterable[bytes]) -> dict[int, int]:
    """Follow the parent's orders until its pipe closes; the children still guarded then, pid -> start."""
    guarded: dict[int, int] = {}
    for raw in lines:
        line = raw.decode("ascii", "replace").strip()
        try:
            if line.startswith("+"):
                pid, _, start = line[1:].partition(" ")
                guarded[int(pid)] = int(start or 0)
            elif line.startswith("-"):
                guarded.pop(int(line[1:]), None)
        except ValueError:  # a torn or foreign line: ignore it rather than stop guarding
            continue
    return guarded


def reap(guarded: dict[int, int], grace: float) -> list[int]:
    """SIGTERM every guarded child still running, SIGKILL those still running after ``grace``; the pids
    that had to be killed."""
    targets = {pid: start for pid, start in guarded.items() if is_same_process(pid, start)}
    for pid in targets:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while targets and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        targets = {pid: start for pid, start in targets.items() if is_same_process(pid, start)}
    for pid in targets:
        _kill(pid, signal.SIGKILL)
    return sorted(targets)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # gone meanwhile, or no longer ours to signal
        pass


def main(argv: list[str]) -> int:
    grace = float(argv[1]) if len(argv) > 1 else 5.0
    # The parent's signals are not the reaper's: it outlives the parent by design, until its pipe closes.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    reap(read_orders(sys.stdin.buffer), grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
