"""A generated miner handler: the owner's ``answer`` function as the framework's handler.

The owner writes one function per task (plain or ``async``; for a streaming task it may also be an async
generator of text pieces). :func:`spec_handler` turns it into a handler; the behaviours a local subnet mixes
in are applied around it by the framework (``protocol.behaviours``), and a spec task's ``wrong`` answer is
:func:`wrong_answer`: every field changed within its limits (see ``FieldSpec.wrong_value``), so a faulty
miner loses on quality, not on format.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from inference_subnet.builder.synthesis import as_model
from inference_subnet.protocol.perturb import other_value
from inference_subnet.protocol.task import Handler

if TYPE_CHECKING:
    from inference_subnet.builder.runtime import SpecTask

Answer = Callable[[Any], Any]
"""``answer(request)``: a response (model or dict), a coroutine of one, or (streaming) an async generator."""


def wrong_answer(task: SpecTask, answer: BaseModel, rng: random.Random) -> BaseModel:
    """``answer`` (a Response, or a streamed Chunk) with every field changed within its limits. A chunk's
    streamed text keeps its length, so the assembled answer still fits the response's limits."""
    fields = task.definition.response
    model = type(answer)
    streamed = task.definition.stream_field if task.Chunk is not None and model is task.Chunk else None
    changed = {
        name: other_value(value) if name == streamed
        else fields[name].wrong_value(value, rng) if name in fields else value
        for name, value in answer.model_dump().items()
    }
    return model.model_validate(changed)


async def _full(answer: Answer, request: BaseModel) -> Any:
    """Call a non-streaming answer, plain or async."""
    result = answer(request)
    if inspect.isawaitable(result):
        result = await result
    return result


def spec_handler(task: SpecTask, answer: Answer) -> Handler:
    """The framework handler of ``task`` answering with ``answer``."""
    if task.streaming:
        return _streaming_handler(task, answer)

    async def handle(request: BaseModel) -> BaseModel:
        return as_model(await _full(answer, request), task.Response)

    return handle


def _streaming_handler(task: SpecTask, answer: Answer) -> Handler:
    async def stream(request: BaseModel) -> AsyncIterator[BaseModel]:
        produced = answer(request)
        if inspect.isasyncgen(produced):
            async for piece in produced:
                yield task.chunk(piece)
            return
        response = as_model(await produced if inspect.isawaitable(produced) else produced, task.Response)
        for chunk in task.split(response):
            yield chunk

    return stream
