"""The toy task: add or multiply two integers. Small enough to read in a minute, complete enough to run a
whole subnet (synthesis, exact scoring, a reference miner). The framework turns the honest miner into the
faulty ones a local subnet mixes in; a ``wrong`` one answers off by one (``Task.corrupt``'s default)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from inference_subnet.protocol.task import Handler, Task

LIMIT = 10**12


class ArithmeticRequest(BaseModel):
    op: Literal["add", "multiply"]
    a: int = Field(ge=-LIMIT, le=LIMIT)
    b: int = Field(ge=-LIMIT, le=LIMIT)


class ArithmeticResponse(BaseModel):
    result: int


def solve(request: ArithmeticRequest) -> int:
    return request.a + request.b if request.op == "add" else request.a * request.b


class ArithmeticTask(Task[ArithmeticRequest, ArithmeticResponse]):
    name = "arithmetic"
    Request = ArithmeticRequest
    Response = ArithmeticResponse
    timeout = 2.0
    capacity_hint = 10_000
    default_handler = "inference_subnet.tasks.arithmetic:make_handler"

    def synthesize(self, rng: random.Random) -> ArithmeticRequest:
        return ArithmeticRequest(
            op=rng.choice(["add", "multiply"]), a=rng.randint(-10**6, 10**6), b=rng.randint(-10**6, 10**6)
        )

    def score(
        self,
        request: ArithmeticRequest,
        responses: Sequence[ArithmeticResponse | None],
        timings: Sequence[float],
    ) -> list[float]:
        expected = solve(request)
        return [1.0 if r is not None and r.result == expected else 0.0 for r in responses]


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference miner; ``delay`` (seconds) makes it answer later, for tests of slow but honest miners."""
    delay = float(options.get("delay", 0.0))

    async def handle(request: ArithmeticRequest) -> ArithmeticResponse:
        if delay:
            await asyncio.sleep(delay)
        return ArithmeticResponse(result=solve(request))

    return handle
