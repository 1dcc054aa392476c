"""Speed and reliability terms, to blend into a task's quality where the task wants it (the framework's
hybrid score already weighs latency and reliability across samples; these are for per-answer use)."""

from __future__ import annotations

import math


def latency_quality(seconds: float, *, target: float, timeout: float) -> float:
    """1 at or under ``target``, falling linearly to 0 at ``timeout``; NaN or negative counts as a timeout."""
    if not (target < timeout):
        raise ValueError(f"target ({target}) must be below timeout ({timeout})")
    if math.isnan(seconds) or seconds < 0 or seconds >= timeout:
        return 0.0
    if seconds <= target:
        return 1.0
    return (timeout - seconds) / (timeout - target)


def reliability(successes: int, attempts: int, *, prior_successes: float = 1.0, prior_attempts: float = 2.0) -> float:
    """Success rate shrunk towards a prior (default 1/2), so one lucky or unlucky answer does not decide."""
    if successes < 0 or attempts < successes:
        raise ValueError(f"need 0 <= successes <= attempts, got {successes}/{attempts}")
    return (successes + prior_successes) / (attempts + prior_attempts)
