"""``inference-subnet task check``: a task's whole life in one run, before any subnet starts.

A task that fails in a local subnet fails far from its cause (every miner at 0, no weights set). This runs
each step a validator and a miner take, on a few synthesized requests, and says which step broke and why:
synthesize, the request's JSON round trip, the miner's handler, the answer against the Response model (and
its JSON round trip), then one ``Task.score`` call on the honest answer, the framework's ``wrong`` answer
(``Task.corrupt``) and a garbage one (no valid answer, ``None``), as the validator would score them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from inference_subnet.protocol.behaviours import GARBAGE
from inference_subnet.protocol.task import Handler, Task

STEPS = (
    "synthesize",
    "request round trip",
    "handler",
    "response valid",
    "score in range",
    "honest scores high",
    "wrong scores lower",
    "garbage scores 0",
    "garbage is refused",
)


@dataclass
class Step:
    """One check over every request: whether it held each time, the time it took, the first failure."""

    name: str
    runs: int = 0
    failures: int = 0
    seconds: list[float] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.runs > 0 and self.failures == 0

    def passed(self, seconds: float | None = None, detail: str = "") -> None:
        self.runs += 1
        if seconds is not None:
            self.seconds.append(seconds)
        self.detail = self.detail or detail

    def failed(self, detail: str, seconds: float | None = None) -> None:
        self.runs += 1
        self.failures += 1
        if seconds is not None:
            self.seconds.append(seconds)
        if not self.failures - 1:  # the first failure is the one worth reading
            self.detail = detail


@dataclass
class CheckReport:
    task: str
    requests: int
    steps: dict[str, Step]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps.values())


class _Skip(Exception):
    """A request's later steps cannot run: an earlier one failed (and said why)."""


def error_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _timed(step: Step, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001  (the author's code: any failure is the finding)
        step.failed(error_line(exc), time.perf_counter() - started)
        raise _Skip from exc
    step.passed(time.perf_counter() - started)
    return result


def _json_round_trip(model: type[BaseModel], value: Any) -> BaseModel:
    """``value`` as the other side reads it: dumped to JSON, parsed back, validated."""
    dumped = value.model_dump_json() if isinstance(value, BaseModel) else model.model_validate(value).model_dump_json()
    return model.model_validate_json(dumped)


async def _answer(task: Task, handler: Handler, request: BaseModel) -> tuple[Any, float]:
    """The handler's answer within the task's timeout (a streaming task's chunks, as a list)."""
    started = time.perf_counter()
    async with asyncio.timeout(task.timeout):
        if task.streaming:
            answer: Any = [chunk async for chunk in handler(request)]  # type: ignore[union-attr]
        else:
            answer = await handler(request)  # type: ignore[misc]
    return answer, time.perf_counter() - started


def _response(task: Task, answer: Any) -> BaseModel:
    """The answer as the validator reads it; a streaming answer's chunks validated one by one, assembled."""
    if not task.streaming:
        return _json_round_trip(task.Response, answer)
    chunk_model = task.Chunk or task.Response
    return task.assemble([_json_round_trip(chunk_model, chunk) for chunk in answer])


def _wrong(task: Task, answer: Any) -> BaseModel:
    """What the framework's ``wrong`` miner would answer instead."""
    if not task.streaming:
        return task.corrupt(_json_round_trip(task.Response, answer))
    chunk_model = task.Chunk or task.Response
    return task.assemble([task.corrupt(_json_round_trip(chunk_model, chunk)) for chunk in answer])


async def check_task(
    task: Task, handler: Handler, *, requests: int = 3, seed: int = 0, min_honest: float = 0.5
) -> CheckReport:
    """Run every step on ``requests`` synthesized requests; never raises for a fault of the task."""
    steps = {name: Step(name) for name in STEPS}
    rng = random.Random(seed)
    for _ in range(requests):
        try:
            await _check_one(task, handler, rng, steps, min_honest)
        except _Skip:
            continue
    garbage = steps["garbage is refused"]
    try:
        task.Response.model_validate(GARBAGE)
    except ValidationError:
        garbage.passed(detail=f"{GARBAGE} is not a {task.Response.__name__}")
    else:
        garbage.failed(f"{task.Response.__name__} accepts {GARBAGE}: give it required fields")
    return CheckReport(task=task.name, requests=requests, steps=steps)


async def _check_one(
    task: Task, handler: Handler, rng: random.Random, steps: dict[str, Step], min_honest: float
) -> None:
    def synthesize() -> BaseModel:
        request = task.synthesize(rng)
        if not isinstance(request, task.Request):
            raise TypeError(f"synthesize returned a {type(request).__name__}, not a {task.Request.__name__}")
        return request

    request = _timed(steps["synthesize"], synthesize)

    def round_trip() -> BaseModel:
        sent = _json_round_trip(task.Request, request)
        if sent != request:
            raise ValueError("the request changes through JSON: miners would answer another one")
        return sent

    sent = _timed(steps["request round trip"], round_trip)
    step = steps["handler"]
    try:
        answer, seconds = await _answer(task, handler, sent)
    except TimeoutError:
        step.failed(f"no answer within the task's timeout ({task.timeout:g}s)", task.timeout)
        raise _Skip from None
    except Exception as exc:  # noqa: BLE001
        step.failed(error_line(exc))
        raise _Skip from exc
    step.passed(seconds)
    honest = _timed(steps["response valid"], lambda: _response(task, answer))
    try:
        wrong: BaseModel | None = _wrong(task, answer)
    except Exception as exc:  # noqa: BLE001
        steps["wrong scores lower"].failed(f"Task.corrupt: {error_line(exc)}")
        wrong = None

    def score() -> list[float]:
        # One call, as a validator scores one request's answers together; garbage is no valid answer (None).
        scores = [float(s) for s in task.score(sent, [honest, wrong, None], [seconds] * 3)]
        if len(scores) != 3 or not all(0.0 <= s <= 1.0 for s in scores):
            raise ValueError(f"score gave {scores!r} for 3 answers; expected 3 values in [0, 1]")
        return scores

    honest_score, wrong_score, garbage_score = _timed(steps["score in range"], score)
    _check(steps["honest scores high"], honest_score >= min_honest,
           f"honest {honest_score:.2f} (at least {min_honest:g} expected)")
    if wrong is not None:
        _check(steps["wrong scores lower"], wrong_score < honest_score,
               f"wrong {wrong_score:.2f} vs honest {honest_score:.2f}")
    _check(steps["garbage scores 0"], garbage_score == 0.0, f"garbage {garbage_score:.2f}")


def _check(step: Step, holds: bool, detail: str) -> None:
    if holds:
        step.passed(detail=detail)
    else:
        step.failed(detail)
