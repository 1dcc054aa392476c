"""Faulty miners on purpose: the behaviours a local subnet mixes in, shared by every example task.

Every example's reference handler takes ``options["behaviour"]``. ``slow``, ``flaky`` and ``garbage`` mean
the same for every task and live here; ``wrong`` is task-specific (an off-by-one sum, a different seed, a
blank image, random labels) and is the example's own.
"""

from __future__ import annotations

import asyncio
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


class Faults:
    """The task-independent faults, applied before a handler answers: ``slow`` sleeps past the task's
    timeout, ``flaky`` fails every second request.

    The flaky miner alternates rather than failing at random so that a local subnet (and its tests) judge the
    same miner every run: half its answers fail, whatever the seed and however few rounds ran.
    """

    def __init__(self, behaviour: str, timeout: float) -> None:
        self.behaviour = behaviour
        self.timeout = timeout
        self._calls = 0

    async def __call__(self) -> None:
        if self.behaviour == "slow":
            await asyncio.sleep(self.timeout * 1.5)
        if self.behaviour == "flaky":
            self._calls += 1
            if self._calls % 2 == 0:
                raise RuntimeError("flaky miner failed")
