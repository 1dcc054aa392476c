"""The OCR example with the real tesseract: an honest miner reads what the validator rendered, lazy and
wrong miners do not, and the text never travels in the request."""

from __future__ import annotations

import base64
import io
import random
import re

import pytest
from examples_helpers import (
    another_key_opens,
    answer_all,
    check_garbage_miner,
    guessed_truth,
    mean_score,
    png_text_chunks,
    synthetic,
)
from PIL import Image
from pydantic import ValidationError

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import load_task
from inference_subnet.settings import load_settings
from inference_subnet.protocol.challenge import ChallengeKey, random_id
from inference_subnet.tasks.imaging import encode_png
from inference_subnet.tasks.ocr import OcrRequest, OcrResponse, OcrTask
from inference_subnet.tasks.ocr.handler import make_handler
from inference_subnet.tasks.ocr.reader import TesseractReader, TesseractUnavailable
from inference_subnet.tasks.ocr.render import compose, render

ROUNDS = 12


@pytest.fixture(scope="module")
def task() -> OcrTask:
    return OcrTask(ChallengeKey(b"ocr-test-secret-0123456789"))


@pytest.fixture(scope="module")
def requests(task: OcrTask) -> list[OcrRequest]:
    return synthetic(task, ROUNDS, seed=20240601)


@pytest.fixture(scope="module")
async def honest(requests: list[OcrRequest]) -> list[OcrResponse]:
    return await answer_all(make_handler({}), requests)


def test_registered_by_name() -> None:
    task = load_task("ocr")
    assert isinstance(task, OcrTask) and task.route == "/tasks/ocr"


def test_synthesis_is_reproducible(task: OcrTask) -> None:
    a, b = task.synthesize(random.Random(3)), task.synthesize(random.Random(3))
    assert a == b
    assert a != task.synthesize(random.Random(4))


async def test_honest_tesseract_miner_scores_high(
    task: OcrTask, requests: list[OcrRequest], honest: list[OcrResponse]
) -> None:
    assert mean_score(task, requests, honest) >= 0.9
    # Real readings, not echoes of the truth: tesseract's output is its own text.
    assert all(r.text.strip() for r in honest)


async def test_wrong_miner_that_guesses_words_scores_low(task: OcrTask, requests: list[OcrRequest]) -> None:
    wrong = await answer_all(load_handler(task, {"behaviour": "wrong", "seed": 1}), requests)
    assert mean_score(task, requests, wrong) <= 0.35


def test_blank_answers_score_zero(task: OcrTask, requests: list[OcrRequest]) -> None:
    assert mean_score(task, requests, [OcrResponse(text="")] * len(requests)) == 0.0
    assert task.score(requests[0], [None], [0.1]) == [0.0]


def test_copied_answers_score_low(
    task: OcrTask, requests: list[OcrRequest], honest: list[OcrResponse]
) -> None:
    """A miner that replays a real reading of another image (a cache, or a copy of another miner's)."""
    shifted = honest[1:] + honest[:1]
    assert mean_score(task, requests, shifted) <= 0.35


def test_rendering_from_a_guessed_seed_scores_low(task: OcrTask, requests: list[OcrRequest]) -> None:
    """A miner that knows the renderer but not the secret regenerates other words."""
    guessed = [OcrResponse(text=compose(guessed_truth(task, request)).text) for request in requests]
    assert mean_score(task, requests, guessed) <= 0.35


def test_the_text_is_not_in_the_request(task: OcrTask, requests: list[OcrRequest]) -> None:
    for request in requests:
        text = task.truth(request)
        assert text is not None
        # Only an id and pixels travel: no field, PNG text chunk or metadata holds the words.
        assert set(request.model_dump()) == {"id", "image"}
        png = base64.b64decode(request.image)
        assert not any(word.encode() in png for word in re.findall(r"[A-Za-z]{4,}", text))
        assert not png_text_chunks(request.image)
        assert not another_key_opens(task, request)


def test_requests_fit_the_miner_body_limit(requests: list[OcrRequest]) -> None:
    limit = load_settings().miner.max_body_bytes
    assert max(len(r.model_dump_json()) for r in requests) < limit


async def test_organic_requests_are_scored_against_the_reference_reading(task: OcrTask) -> None:
    """A user's image: no truth, so the validator's own tesseract reading is the yardstick."""
    rng = random.Random(11)
    page = compose(rng)
    organic = OcrRequest(image=encode_png(render(page, rng)))
    assert task.truth(organic) is None
    reading = await make_handler({})(organic)
    assert task.score(organic, [reading, OcrResponse(text="")], [0.1, 0.1]) == [1.0, 0.0]
    # An id that looks like a challenge but was not made with the key is organic too.
    assert task.truth(organic.model_copy(update={"id": random_id()})) is None


async def test_garbage_miner_answers_no_valid_response(task: OcrTask, requests: list[OcrRequest]) -> None:
    await check_garbage_miner(task, requests[0])


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("not base64!", "base64"),
        (base64.b64encode(b"GIF89a........................").decode(), "not a PNG"),
    ],
)
def test_bad_images_are_refused_with_a_reason(image: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        OcrRequest(image=image)


def test_oversized_images_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("L", (4000, 8), 255).save(buffer, format="PNG")
    with pytest.raises(ValidationError, match="each side must be"):
        OcrRequest(image=base64.b64encode(buffer.getvalue()).decode())


def test_a_missing_engine_or_language_fails_at_start_up_with_the_setting_named() -> None:
    with pytest.raises(TesseractUnavailable, match="ocr_tesseract_cmd"):
        TesseractReader.load("/nonexistent/tesseract", "eng")
    with pytest.raises(TesseractUnavailable, match="ocr_languages"):
        TesseractReader.load("tesseract", "eng+xyz")
