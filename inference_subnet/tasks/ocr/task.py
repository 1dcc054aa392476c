"""OCR: read the text in an image the validator rendered from text it chose.

Ground truth and what a miner can see: the request carries the image and a challenge id
(:mod:`inference_subnet.protocol.challenge`), never the text. The text is drawn from a generator seeded by an
HMAC of the id's nonce under the validator's secret, so the validator recomputes it at scoring time and a
miner cannot. Re-rendering from a guessed seed gives other words (the "wrong seed" miner of the tests).

Score: ``1 - character error rate`` against that text, whitespace-normalised (line breaks are layout, not
content), floored at 0. An organic request (a user's image, or an id that does not verify) has no known
text; it is scored against the validator's own reading of the image with the reference engine (tesseract),
which rewards agreeing with a good reader rather than being right, the usual compromise of inference
subnets without labels.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, Field

from inference_subnet.scorers import char_error_rate
from inference_subnet.protocol.challenge import ChallengeId, ReferencedChallengeTask
from inference_subnet.tasks.imaging import PngBase64, encode_png
from inference_subnet.tasks.ocr.render import compose, render, write


class OcrRequest(BaseModel):
    id: ChallengeId
    image: PngBase64


class OcrResponse(BaseModel):
    text: str = Field(max_length=20_000, description="The text read, lines separated by newlines.")


def normalise(text: str) -> str:
    """One space between words: line breaks and spacing are layout, not what was written."""
    return " ".join(text.split())


def text_quality(answer: str, reference: str) -> float:
    """``1 - CER`` of the normalised texts, floored at 0."""
    return max(0.0, 1.0 - char_error_rate(normalise(answer), normalise(reference)))


class OcrTask(ReferencedChallengeTask[OcrRequest, OcrResponse, str]):
    name = "ocr"
    Request = OcrRequest
    Response = OcrResponse
    timeout = 5.0
    capacity_hint = 3000
    """tesseract reads one of these images in about 0.1 s of one core; a miner on two cores serves a few
    per second, and a validator's share of that is what this hint sizes."""
    default_handler = "inference_subnet.tasks.ocr.handler:make_handler"

    def synthesize(self, rng: random.Random) -> OcrRequest:
        challenge_id, truth = self.issue(rng)
        page = compose(truth)
        return OcrRequest(id=challenge_id, image=encode_png(render(page, truth)))

    def truth(self, request: OcrRequest) -> str | None:
        """The text this validator rendered into ``request``, or ``None`` for a request it did not make."""
        truth = self.open(request.id)
        return None if truth is None else "\n".join(write(truth))

    def reference(self, request: OcrRequest) -> str:
        """What the reference engine reads in the image: the yardstick of organic requests."""
        from inference_subnet.tasks.ocr.reader import reference_reader

        return reference_reader().read(request.image)

    def quality(self, response: OcrResponse, expected: str) -> float:
        return text_quality(response.text, expected)
