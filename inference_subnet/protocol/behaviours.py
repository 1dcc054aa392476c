"""Faulty miners on purpose: the behaviours a local subnet mixes in, applied by the framework around any
handler, so a subnet author writes only the honest one.

``slow`` answers after the task's timeout, ``flaky`` fails every second request, ``garbage`` answers a body
that no Response model accepts, and ``wrong`` answers a valid but wrong response: the honest answer passed
through ``Task.corrupt`` (a generic change of every field by default; for a streaming task, each chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import BaseModel

from inference_subnet.protocol.task import Handler, Task

HONEST = "honest"
BEHAVIOURS = (HONEST, "wrong", "slow", "flaky", "garbage")
GARBAGE: dict[str, Any] = {"not": "a valid response"}
"""What a ``garbage`` miner answers: valid JSON that no task's Response model accepts."""


def behaviour_of(options: Mapping[str, Any]) -> str:
    """The requested behaviour, checked, so a typo fails at start-up rather than as a silently honest miner."""
    behaviour = options.get("behaviour", HONEST)
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; choose from {', '.join(BEHAVIOURS)}")
    return str(behaviour)


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


def _model(answer: Any, model: type[BaseModel]) -> BaseModel:
    """A handler may answer a model or a plain dict; ``corrupt`` gets the model."""
    return answer if isinstance(answer, model) else model.model_validate(answer)


def with_behaviour(task: Task, handler: Handler, behaviour: str) -> Handler:
    """``handler`` behaving as ``behaviour`` asks (``honest``: ``handler`` itself)."""
    if behaviour == HONEST:
        return handler
    faults = Faults(behaviour, task.timeout)
    if task.streaming:
        chunk_model = task.Chunk or task.Response

        async def stream(request: BaseModel) -> AsyncIterator[Any]:
            await faults()
            if behaviour == "garbage":
                yield GARBAGE
                return
            async for chunk in handler(request):  # type: ignore[union-attr]
                yield task.corrupt(_model(chunk, chunk_model)) if behaviour == "wrong" else chunk

        return stream

    async def handle(request: BaseModel) -> Any:
        await faults()
        if behaviour == "garbage":
            return GARBAGE
        answer = await handler(request)  # type: ignore[misc]
        return task.corrupt(_model(answer, task.Response)) if behaviour == "wrong" else answer

    return handle
