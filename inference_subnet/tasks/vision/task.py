"""Object recognition: find and label the objects in a scene the validator composed.

Ground truth and what a miner can see: the request carries the picture and a challenge id
(:mod:`inference_subnet.protocol.challenge`), never the labels or boxes. The layout is drawn from a generator
seeded by an HMAC of the id's nonce under the validator's secret, so the validator recomputes the boxes at
scoring time and a miner cannot; composing a scene from a guessed seed puts the objects elsewhere.

Score: F1 of the miner's boxes against the true ones, matched one to one by IoU >= 0.5 with the same
label, so both misses and spurious boxes cost. An organic request (a user's picture, or an id that does not
verify) is scored against the validator's own run of the reference detector.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from inference_subnet.scorers import Box, matched_f1
from inference_subnet.protocol.challenge import ChallengeId, ReferencedChallengeTask
from inference_subnet.tasks.imaging import PngBase64, encode_png
from inference_subnet.tasks.vision.scene import boxes, layout, render

Label = Literal["circle", "square", "triangle", "face"]
Coordinate = Annotated[float, Field(allow_inf_nan=False)]
IOU_THRESHOLD = 0.5


class VisionRequest(BaseModel):
    id: ChallengeId
    image: PngBase64


class Detection(BaseModel):
    label: Label
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] = Field(
        description="x0, y0, x1, y1 in pixels from the top-left corner."
    )

    def as_box(self) -> Box:
        return Box(*self.box, label=self.label)


class VisionResponse(BaseModel):
    objects: list[Detection] = Field(max_length=100, description="Every object found, in any order.")


def boxes_quality(found: Sequence[Detection], expected: Sequence[Box]) -> float:
    return matched_f1([d.as_box() for d in found], expected, threshold=IOU_THRESHOLD)


class VisionTask(ReferencedChallengeTask[VisionRequest, VisionResponse, list[Box]]):
    name = "vision"
    Request = VisionRequest
    Response = VisionResponse
    timeout = 3.0
    capacity_hint = 10_000
    """One scene takes the reference detector ~25 ms of one core: a miner serves tens per second."""
    default_handler = "inference_subnet.tasks.vision.handler:make_handler"

    def synthesize(self, rng: random.Random) -> VisionRequest:
        challenge_id, seed = self.issue(rng)
        objects = layout(seed)
        return VisionRequest(id=challenge_id, image=encode_png(render(objects, seed)))

    def truth(self, request: VisionRequest) -> list[Box] | None:
        """The boxes this validator placed in ``request``, or ``None`` for a request it did not make."""
        seed = self.open(request.id)
        return None if seed is None else boxes(layout(seed))

    def reference(self, request: VisionRequest) -> list[Box]:
        """What the reference detector finds: the yardstick of organic requests."""
        import numpy as np

        from inference_subnet.tasks.imaging import decode_png
        from inference_subnet.tasks.vision.detector import reference_detector

        return reference_detector().detect(np.asarray(decode_png(request.image).convert("RGB")))

    def quality(self, response: VisionResponse, expected: list[Box]) -> float:
        return boxes_quality(response.objects, expected)
