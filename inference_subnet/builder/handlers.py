"""A generated miner handler: the owner's ``answer`` function, plus the behaviours a local subnet mixes in.

The owner writes one function per task (plain or ``async``; for a streaming task it may also be an async
generator of text pieces). :func:`spec_handler` turns it into the framework's handler and applies
``options["behaviour"]`` exactly as the examples do: ``slow``, ``flaky`` and ``garbage`` from
``tasks.behaviours``, and a generic ``wrong`` that keeps the answer valid but changes every field (see
``FieldSpec.wrong_value``), so a faulty miner loses on quality, not on format.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from inference_subnet.builder.synthesis import as_model
from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.behaviours import GARBAGE, Faults, behaviour_of

if TYPE_CHECKING:
    from inference_subnet.builder.runtime import SpecTask

Answer = Callable[[Any], Any]
"""``answer(request)``: a response (model or dict), a coroutine of one, or (streaming) an async generator."""


def wrong_response(task: SpecTask, response: BaseModel, rng: random.Random) -> BaseModel:
    """``response`` with every field changed within its limits."""
    fields = task.definition.response
    data = response.model_dump()
    changed = {name: fields[name].wrong_value(value, rng) if name in fields else value
               for name, value in data.items()}
    return task.Response.model_validate(changed)


async def _full(answer: Answer, request: BaseModel) -> Any:
    """Call a non-streaming answer, plain or async."""
    result = answer(request)
    if inspect.isawaitable(result):
        result = await result
    return result


def spec_handler(task: SpecTask, answer: Answer, options: Mapping[str, Any]) -> Handler:
    """The framework handler of ``task`` answering with ``answer`` and the requested behaviour."""
    behaviour = behaviour_of(options)
    faults = Faults(behaviour, task.timeout)
    rng = random.Random(options.get("seed"))
    if task.streaming:
        return _streaming_handler(task, answer, faults, rng)

    async def handle(request: BaseModel) -> Any:
        await faults()
        if behaviour == "garbage":
            return GARBAGE
        response = as_model(await _full(answer, request), task.Response)
        return wrong_response(task, response, rng) if behaviour == "wrong" else response

    return handle


def _streaming_handler(task: SpecTask, answer: Answer, faults: Faults, rng: random.Random) -> Handler:
    behaviour = faults.behaviour

    async def stream(request: BaseModel) -> AsyncIterator[Any]:
        await faults()
        if behaviour == "garbage":
            yield GARBAGE
            return
        produced = answer(request)
        if inspect.isasyncgen(produced) and behaviour != "wrong":
            async for piece in produced:
                yield task.chunk(piece)
            return
        if inspect.isasyncgen(produced):
            response = task.assemble([task.chunk(piece) async for piece in produced])
        else:
            response = as_model(await produced if inspect.isawaitable(produced) else produced, task.Response)
        if behaviour == "wrong":
            response = wrong_response(task, response, rng)
        for chunk in task.split(response):
            yield chunk

    return stream
