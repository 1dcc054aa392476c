"""The ``image`` task: an image from a prompt, a seed, a number of steps and a size, as a base64 PNG.

Scoring reproduces the image: the validator runs the same pipeline with the same prompt, seed and steps,
and compares pixels and structure (:func:`~inference_subnet.scorers.image_similarity`), tolerant to the
floating-point noise of a different CPU thread count. A miner that uses another seed, ignores the prompt,
or returns a blank or random picture makes a different image and scores near 0. Reproducing costs the
validator as much as the miner's own generation, so only a sample of responses is scored: the framework's
dropout caps scored responses per miner and period, and the reference is computed once per request for all
the miners that answered it (and kept for a few requests, for repeats).

This module imports neither torch nor diffusers: a gateway can load the task without them.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from inference_subnet.protocol.task import Task
from inference_subnet.scorers import image_similarity
from inference_subnet.tasks.tiny import example_settings, speed_scaled

MAX_SIDE = 2048


def largest_answer_bytes(side: int) -> int:
    """Bytes of the largest honest answer for a ``side`` x ``side`` image, with room: an 8-bit RGBA PNG
    that did not compress at all (a filter byte per row; deflate's stored blocks and the PNG chunks add
    under a thousandth), base64 (4/3) inside its JSON object, plus 1 MiB."""
    png = side * (4 * side + 1)
    png += png // 1000 + 65_536
    return 4 * -(-png // 3) + 1_048_576


class ImageRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000, description="What to draw.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds the initial noise: same seed, same image.")
    steps: int = Field(10, ge=1, le=100, description="Denoising steps.")
    width: int = Field(32, ge=8, le=MAX_SIDE, multiple_of=8, description="Pixels; the model may fix it.")
    height: int = Field(32, ge=8, le=MAX_SIDE, multiple_of=8, description="Pixels; the model may fix it.")


class ImageResponse(BaseModel):
    image: str = Field(max_length=64_000_000, description="The image as a base64-encoded PNG.")


_PROMPTS = (
    "a red fox at the edge of a forest",
    "an old sailing ship on a calm blue sea",
    "a market square with a fountain at noon",
    "a bowl of lentil soup on a wooden table",
    "a library with tall shelves and a long table",
    "a garden of tomatoes and roses in the sun",
    "a train crossing a river on a wooden bridge",
    "misty hills over a quiet valley at dawn",
)


class _References:
    """The validator's reference images by request, for a few requests (organic and synthetic repeats)."""

    KEPT = 32
    """How many recent requests keep their reference image: repeats find it, memory stays bounded."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request: ImageRequest) -> Any:
        from inference_subnet.tasks.image.model import load_image_generator

        key = request.model_dump_json()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = load_image_generator().generate(
            request.prompt, seed=request.seed, steps=request.steps, width=request.width, height=request.height
        )
        with self._lock:
            self._items[key] = image
            while len(self._items) > self.KEPT:
                self._items.popitem(last=False)
        return image


class ImageTask(Task[ImageRequest, ImageResponse]):
    name = "image"
    Request = ImageRequest
    Response = ImageResponse
    timeout = 5.0
    """Sized for the built-in tiny model and small models on a CPU (tens of times their p90 here); a subnet
    serving a large model subclasses the task with its own."""
    capacity_hint = 1_800
    """One image every ~2.4 s over a 72-minute epoch: a small diffusion model on a CPU or a shared GPU."""
    max_response_bytes = largest_answer_bytes(MAX_SIDE)
    """About 22 MiB: the largest image allowed fits even uncompressed, so no honest miner meets the cap."""
    default_handler = "inference_subnet.tasks.image.handler:make_handler"

    def __init__(self) -> None:
        self._references = _References()
        self._size: int | None = None

    def corrupt(self, answer: BaseModel) -> ImageResponse:
        """A ``wrong`` miner's image: the honest one turned upside down in negative, a valid PNG of the
        right size that agrees with the reference nowhere."""
        from PIL import ImageOps

        from inference_subnet.tasks.imaging import decode_png, encode_png

        image = decode_png(answer.image).convert("RGB")  # type: ignore[attr-defined]
        return ImageResponse(image=encode_png(ImageOps.invert(image).rotate(180)))

    def synthesize(self, rng: random.Random) -> ImageRequest:
        if self._size is None:
            self._size = example_settings().image_size
        return ImageRequest(
            prompt=rng.choice(_PROMPTS),
            seed=rng.randrange(2**32),
            steps=rng.choice((4, 6, 8, 10)),
            width=self._size,
            height=self._size,
        )

    def score(
        self, request: ImageRequest, responses: Sequence[ImageResponse | None], timings: Sequence[float]
    ) -> list[float]:
        if all(r is None for r in responses):
            return [0.0] * len(responses)
        from inference_subnet.tasks.image.model import BadImage, decode_png

        reference = self._references.get(request)
        scores = []
        for response, seconds in zip(responses, timings):
            if response is None:
                scores.append(0.0)
                continue
            try:
                pixels = decode_png(response.image, width=request.width, height=request.height)
            except BadImage:
                scores.append(0.0)
                continue
            scores.append(speed_scaled(image_similarity(pixels, reference), seconds, self.timeout))
        return scores
