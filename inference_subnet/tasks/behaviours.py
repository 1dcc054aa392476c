"""Faulty miners on purpose: the behaviours a local subnet mixes in, shared by every example task.

Every example's reference handler takes ``options["behaviour"]``. ``slow``, ``flaky`` and ``garbage`` mean
the same for every task and live here; ``wrong`` is task-specific (an off-by-one sum, a different seed, a
blank image, random labels) and is the example's own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

HONEST = "honest"
BEHAVIOURS = (HONEST, "wrong", "slow", "flaky", "garbage")
GARBAGE: dict[str, Any] = {"not": "a valid response"}
"""What a ``garbage`` miner answers: valid JSON that no task's Response model accepts."""


def behaviour_of(options: Mapping[str, Any]) -> str:
    """The requested behaviour, checked, so a typo fails at start-up rather than as a silently honest miner."""
    behaviour = options.get("behaviour", HONEST)
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; choose from {', '.join(BEHAVIOURS)}")
    return behaviour


async def misbehave(behaviour: str, rng: random.Random, timeout: float) -> None:
    """The task-independent faults, applied before the handler answers: ``slow`` sleeps past the task's
    timeout, ``flaky`` fails half the time."""
    if behaviour == "slow":
        await asyncio.sleep(timeout * 1.5)
    if behaviour == "flaky" and rng.random() < 0.5:
        raise RuntimeError("flaky miner failed")
