"""The vision miner: the detector of :mod:`inference_subnet.tasks.vision.detector`, loaded once per
process when the handler is built (so a missing OpenCV or cascade fails at start-up), run in a worker
thread for each request."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.behaviours import GARBAGE, Faults, behaviour_of
from inference_subnet.tasks.imaging import decode_png
from inference_subnet.tasks.vision.detector import Detector, reference_detector
from inference_subnet.tasks.vision.scene import LABELS
from inference_subnet.tasks.vision.task import Detection, VisionRequest, VisionResponse, VisionTask


def detect(detector: Detector, image_b64: str) -> list[Detection]:
    import numpy as np

    image = decode_png(image_b64).convert("RGB")
    return [
        Detection(label=b.label, box=(b.x0, b.y0, b.x1, b.y1))  # type: ignore[arg-type]
        for b in detector.detect(np.asarray(image))
    ]


def guess(rng: random.Random, width: int, height: int) -> list[Detection]:
    """What a miner that does not look answers: a few boxes of plausible size, anywhere, any label."""
    found = []
    for _ in range(rng.randint(2, 5)):
        side = rng.uniform(30, 100)
        x, y = rng.uniform(0, max(1.0, width - side)), rng.uniform(0, max(1.0, height - side))
        found.append(Detection(label=rng.choice(LABELS), box=(x, y, x + side, y + side)))  # type: ignore[arg-type]
    return found


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference vision miner. ``wrong`` answers random boxes with random labels; ``slow``, ``flaky``
    and ``garbage`` are the shared faults."""
    behaviour = behaviour_of(options)
    faults = Faults(behaviour, VisionTask.timeout)
    rng = random.Random(options.get("seed"))
    detector = reference_detector() if behaviour not in ("wrong", "garbage") else None

    async def handle(request: VisionRequest) -> Any:
        await faults()
        if behaviour == "garbage":
            return GARBAGE
        if detector is None:
            image = decode_png(request.image)
            return VisionResponse(objects=guess(rng, image.width, image.height))
        return VisionResponse(objects=await asyncio.to_thread(detect, detector, request.image))

    return handle
