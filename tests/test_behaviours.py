"""The faulty behaviours, applied by the framework around any handler, and the generic wrong answer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import BaseModel, Field

from inference_subnet.protocol.behaviours import GARBAGE, with_behaviour
from inference_subnet.protocol.handlers import HandlerUnavailable, load_handler
from inference_subnet.protocol.perturb import perturb
from inference_subnet.protocol.task import Task


class Box(BaseModel):
    label: str
    corners: tuple[float, float, float, float]


class Answer(BaseModel):
    count: int = Field(ge=0, le=10)
    probability: float = Field(ge=0, le=1)
    text: str = Field(max_length=5)
    flag: bool
    boxes: list[Box]
    note: str | None = None


class Req(BaseModel):
    n: int


class Chunk(BaseModel):
    piece: str


class Plain(Task[Req, Answer]):
    name = "plain"
    Request = Req
    Response = Answer
    timeout = 0.2
    default_handler = "test_behaviours:make_plain"

    def synthesize(self, rng: random.Random) -> Req:
        return Req(n=rng.randint(0, 9))

    def score(self, request: Req, responses: Sequence[Answer | None], timings: Sequence[float]) -> list[float]:
        return [float(r is not None and r.count == request.n) for r in responses]


class Custom(Plain):
    name = "custom"

    def corrupt(self, answer: BaseModel) -> Answer:
        return Answer.model_validate({**answer.model_dump(), "text": "nope"})


class Streaming(Plain):
    name = "streaming"
    streaming = True
    Chunk = Chunk
    default_handler = "test_behaviours:make_streaming"


HONEST = Answer(count=10, probability=0.25, text="level", flag=True,
                boxes=[Box(label="cat", corners=(1.0, 2.0, 3.0, 4.0))])


def make_plain(options: dict[str, Any]) -> Any:
    async def handle(request: Req) -> Answer:
        return HONEST.model_copy(update={"count": request.n})

    return handle


def make_streaming(options: dict[str, Any]) -> Any:
    async def handle(request: Req) -> AsyncIterator[Chunk]:
        for piece in ("ab", "cd"):
            yield Chunk(piece=piece)

    return handle


def test_perturb_changes_every_field_by_type_and_stays_valid() -> None:
    wrong = perturb(HONEST)
    assert wrong.count == 9  # 11 would break le=10: a bounded integer at its limit steps back
    assert wrong.probability == 0.75 and wrong.flag is False
    assert wrong.text != HONEST.text and len(wrong.text) == len(HONEST.text)  # a palindrome still changes
    # numbers in [0, 1] flip (probabilities), others move by more than their size
    assert wrong.boxes[0].label == "tac" and wrong.boxes[0].corners == (0.0, 5.0, 7.0, 9.0)
    assert wrong.note is None
    Answer.model_validate(wrong.model_dump())


async def test_honest_is_the_handler_itself_and_wrong_uses_corrupt() -> None:
    handler = make_plain({})
    assert with_behaviour(Plain(), handler, "honest") is handler
    wrong = await load_handler(Plain(), {"behaviour": "wrong"})(Req(n=3))
    assert isinstance(wrong, Answer) and wrong.count == 4 and Plain().score(Req(n=3), [wrong], [0.0]) == [0.0]
    custom = await load_handler(Custom(), {"behaviour": "wrong"})(Req(n=3))
    assert custom.count == 3 and custom.text == "nope"  # the task's own wrong answer


async def test_garbage_flaky_and_slow_around_any_handler() -> None:
    assert await load_handler(Plain(), {"behaviour": "garbage"})(Req(n=1)) == GARBAGE
    flaky = load_handler(Plain(), {"behaviour": "flaky"})
    outcomes = []
    for _ in range(6):
        try:
            await flaky(Req(n=1))
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("failed")
    assert outcomes == ["ok", "failed"] * 3
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(load_handler(Plain(), {"behaviour": "slow"})(Req(n=1)), Plain.timeout)


async def test_streaming_wrong_corrupts_each_chunk_and_garbage_is_one_line() -> None:
    wrong = [c async for c in load_handler(Streaming(), {"behaviour": "wrong"})(Req(n=1))]
    assert [c.piece for c in wrong] == ["ba", "dc"]
    garbage = [c async for c in load_handler(Streaming(), {"behaviour": "garbage"})(Req(n=1))]
    assert garbage == [GARBAGE]


def test_a_typo_in_the_behaviour_or_a_task_without_handler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown behaviour 'lazy'"):
        load_handler(Plain(), {"behaviour": "lazy"})

    class Bare(Plain):
        default_handler = None

    with pytest.raises(HandlerUnavailable, match="ships no miner handler; name one with --handler plain="):
        load_handler(Bare())
