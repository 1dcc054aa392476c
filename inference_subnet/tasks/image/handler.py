"""The reference ``image`` miner: runs the pipeline and answers a base64 PNG.

The pipeline loads once per process, in a background thread, before the worker listens
(:func:`~inference_subnet.tasks.tiny.preload_model`), and images are made on one dedicated thread, one at a
time: the event loop stays free for the miner's auth and quota work, and concurrent requests queue instead
of fighting over the CPU.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.behaviours import GARBAGE, Faults, behaviour_of
from inference_subnet.tasks.image.task import ImageRequest, ImageResponse, ImageTask
from inference_subnet.tasks.tiny import preload_model

_PAINTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isn-image")


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference miner. ``model`` overrides ``examples.image_model``. ``behaviour`` ``wrong`` is a
    lazy miner that answers with another seed than the one asked for."""
    from inference_subnet.tasks.image.model import encode_png, load_image_generator

    behaviour = behaviour_of(options)
    faults = Faults(behaviour, ImageTask.timeout)
    preload = preload_model(options, behaviour, load_image_generator)

    async def handle(request: ImageRequest) -> Any:
        await faults()
        if behaviour == "garbage":
            return GARBAGE
        generator = await preload.get()
        seed = (request.seed + 1) % 2**32 if behaviour == "wrong" else request.seed

        def paint() -> str:
            image = generator.generate(
                request.prompt, seed=seed, steps=request.steps, width=request.width, height=request.height
            )
            return encode_png(image)

        return ImageResponse(image=await asyncio.get_running_loop().run_in_executor(_PAINTER, paint))

    return handle
