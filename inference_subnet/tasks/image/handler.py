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
from inference_subnet.tasks.image.task import ImageRequest, ImageResponse
from inference_subnet.tasks.tiny import preload_model

_PAINTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isn-image")


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference miner. ``model`` overrides ``examples.image_model``."""
    from inference_subnet.tasks.image.model import encode_png, load_image_generator

    preload = preload_model(options, load_image_generator)

    async def handle(request: ImageRequest) -> ImageResponse:
        generator = await preload.get()
        seed = request.seed

        def paint() -> str:
            image = generator.generate(
                request.prompt, seed=seed, steps=request.steps, width=request.width, height=request.height
            )
            return encode_png(image)

        return ImageResponse(image=await asyncio.get_running_loop().run_in_executor(_PAINTER, paint))

    return handle
