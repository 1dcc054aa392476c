"""Run a generated project's tests in a child process, bounded in time, and read the outcome.

The project does not need to be installed: its folder goes first on ``PYTHONPATH`` and its tests load
tasks by ``module:Class`` path. Only the outcome and the tail of the output come back, which is what a
person (or a repair round) needs to see.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TAIL_CHARS = 6000


@dataclass(frozen=True)
class TestRun:
    ok: bool
    summary: str
    """pytest's last line, e.g. ``10 passed in 0.4s``, or why there is none."""
    output: str
    """The tail of the output: the failures, as pytest printed them."""
    seconds: float


def run_tests(project: Path, *, timeout: float = 300.0, python: str | None = None) -> TestRun:
    """``python -m pytest -q tests`` in ``project``; killed (with its children) after ``timeout`` seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))}
    args = [python or sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "tests"]
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return TestRun(False, f"timed out after {timeout:g}s", output[-TAIL_CHARS:], time.monotonic() - started)
    seconds = time.monotonic() - started
    lines = [line for line in output.strip().splitlines() if line.strip()]
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\b(passed|failed|error)", line)),
                   lines[-1] if lines else f"pytest exited with code {proc.returncode}")
    if "No module named pytest" in output:
        summary = "pytest is not installed here: pip install 'inference-subnet[test]'"
    return TestRun(proc.returncode == 0, summary, output[-TAIL_CHARS:], seconds)
