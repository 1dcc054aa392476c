"""The reference ``llm`` miner: streams the model's reply token by token.

The model loads once per process, in a background thread, before the worker listens
(:func:`~inference_subnet.tasks.tiny.preload_model`), and decoding runs on one dedicated thread: concurrent
requests interleave token by token on it instead of fighting over the CPU, and the event loop stays free
for the miner's auth and quota work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.llm.task import LLMChunk, LLMRequest
from inference_subnet.tasks.tiny import preload_model

_DECODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isn-llm")
_END = object()


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference miner. ``model`` overrides ``examples.llm_model``."""
    from inference_subnet.tasks.llm.model import load_text_generator

    preload = preload_model(options, load_text_generator)

    async def handle(request: LLMRequest) -> AsyncIterator[LLMChunk]:
        generator = await preload.get()
        seed, temperature = request.seed, request.temperature
        loop = asyncio.get_running_loop()
        decoding = await loop.run_in_executor(
            _DECODER,
            lambda: generator.stream_chat(
                [m.model_dump() for m in request.messages],
                max_new_tokens=request.max_tokens,
                seed=seed,
                temperature=temperature,
                stop=request.stop,
            ),
        )
        pieces = iter(decoding)
        while (piece := await loop.run_in_executor(_DECODER, next, pieces, _END)) is not _END:
            yield LLMChunk(delta=piece)
        yield LLMChunk(
            delta="",
            finish_reason=decoding.finish_reason,
            prompt_tokens=decoding.prompt_tokens,
            completion_tokens=len(decoding.token_ids),
            token_ids=list(decoding.token_ids),
        )

    return handle
