"""The vision miner: the detector of :mod:`inference_subnet.tasks.vision.detector`, loaded once per
process when the handler is built (so a missing OpenCV or cascade fails at start-up), run in a worker
thread for each request."""

from __future__ import annotations

import asyncio
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.imaging import decode_png
from inference_subnet.tasks.vision.detector import Detector, reference_detector
from inference_subnet.tasks.vision.task import Detection, VisionRequest, VisionResponse


def detect(detector: Detector, image_b64: str) -> list[Detection]:
    import numpy as np

    image = decode_png(image_b64).convert("RGB")
    return [
        Detection(label=b.label, box=(b.x0, b.y0, b.x1, b.y1))  # type: ignore[arg-type]
        for b in detector.detect(np.asarray(image))
    ]


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference vision miner: the shapes-and-faces detector, in a worker thread per request."""
    detector = reference_detector()

    async def handle(request: VisionRequest) -> VisionResponse:
        return VisionResponse(objects=await asyncio.to_thread(detect, detector, request.image))

    return handle
