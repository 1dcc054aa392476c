"""The object-recognition example with real OpenCV detection: an honest miner finds the shapes and faces
the validator placed, lazy and wrong miners do not, and the boxes never travel in the request."""

from __future__ import annotations

import base64
import random
from pathlib import Path

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
from pydantic import ValidationError

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import load_task
from inference_subnet.settings import load_settings
from inference_subnet.protocol.challenge import ChallengeKey
from inference_subnet.tasks.imaging import encode_png
from inference_subnet.tasks.vision import Detection, VisionRequest, VisionResponse, VisionTask
from inference_subnet.tasks.vision.detector import Detector, DetectorUnavailable
from inference_subnet.tasks.vision.handler import make_handler
from inference_subnet.tasks.vision.scene import boxes, layout, render

ROUNDS = 24


@pytest.fixture(scope="module")
def task() -> VisionTask:
    return VisionTask(ChallengeKey(b"vision-test-secret-0123456789"))


@pytest.fixture(scope="module")
def requests(task: VisionTask) -> list[VisionRequest]:
    return synthetic(task, ROUNDS, seed=77)


@pytest.fixture(scope="module")
async def honest(requests: list[VisionRequest]) -> list[VisionResponse]:
    return await answer_all(make_handler({}), requests)


def test_registered_by_name() -> None:
    assert isinstance(load_task("vision"), VisionTask)


def test_synthesis_is_reproducible(task: VisionTask) -> None:
    assert task.synthesize(random.Random(5)) == task.synthesize(random.Random(5))


def test_scenes_hold_every_kind_of_object(task: VisionTask, requests: list[VisionRequest]) -> None:
    labels = {b.label for r in requests for b in task.truth(r) or []}
    assert labels == {"circle", "square", "triangle", "face"}


async def test_honest_opencv_miner_scores_high(
    task: VisionTask, requests: list[VisionRequest], honest: list[VisionResponse]
) -> None:
    assert mean_score(task, requests, honest) >= 0.85
    # The cascade really finds faces (the portrait pasted into the scenes), not only the shapes.
    found_faces = sum(1 for r in honest for d in r.objects if d.label == "face")
    true_faces = sum(1 for r in requests for b in task.truth(r) or [] if b.label == "face")
    assert true_faces > 0 and found_faces >= 0.75 * true_faces


async def test_wrong_miner_with_random_boxes_scores_low(
    task: VisionTask, requests: list[VisionRequest]
) -> None:
    wrong = await answer_all(load_handler(task, {"behaviour": "wrong", "seed": 3}), requests)
    assert mean_score(task, requests, wrong) <= 0.1


def test_empty_answers_score_zero(task: VisionTask, requests: list[VisionRequest]) -> None:
    assert mean_score(task, requests, [VisionResponse(objects=[])] * len(requests)) == 0.0
    assert task.score(requests[0], [None], [0.05]) == [0.0]


def test_copied_answers_score_low(
    task: VisionTask, requests: list[VisionRequest], honest: list[VisionResponse]
) -> None:
    assert mean_score(task, requests, honest[1:] + honest[:1]) <= 0.15


def test_spraying_boxes_scores_low(task: VisionTask, requests: list[VisionRequest]) -> None:
    """Covering the picture with every label at every place finds everything and is still poor."""
    grid = [
        Detection(label=label, box=(x, y, x + s, y + s))
        for label in ("circle", "square", "triangle", "face")
        for s in (40, 60, 90)
        for x in range(0, 320 - s, 40)
        for y in range(0, 320 - s, 40)
    ][:100]
    assert mean_score(task, requests, [VisionResponse(objects=grid)] * len(requests)) <= 0.15


def test_a_scene_from_a_guessed_seed_scores_low(task: VisionTask, requests: list[VisionRequest]) -> None:
    guessed = [
        VisionResponse(
            objects=[
                Detection(label=b.label, box=(b.x0, b.y0, b.x1, b.y1))  # type: ignore[arg-type]
                for b in boxes(layout(guessed_truth(task, r)))
            ]
        )
        for r in requests
    ]
    assert mean_score(task, requests, guessed) <= 0.15


def test_the_boxes_are_not_in_the_request(task: VisionTask, requests: list[VisionRequest]) -> None:
    for request in requests:
        assert set(request.model_dump()) == {"id", "image"}
        png = base64.b64decode(request.image)
        assert not png_text_chunks(request.image)
        for label in ("circle", "square", "triangle", "face"):
            assert label.encode() not in png
        assert not another_key_opens(task, request)


def test_requests_fit_the_miner_body_limit(requests: list[VisionRequest]) -> None:
    assert max(len(r.model_dump_json()) for r in requests) < load_settings().miner.max_body_bytes


async def test_organic_requests_are_scored_against_the_reference_detector(task: VisionTask) -> None:
    rng = random.Random(9)
    organic = VisionRequest(image=encode_png(render(layout(rng), rng)))
    assert task.truth(organic) is None
    answer = await make_handler({})(organic)
    assert answer.objects
    assert task.score(organic, [answer, VisionResponse(objects=[])], [0.05, 0.05]) == [1.0, 0.0]


async def test_garbage_miner_answers_no_valid_response(task: VisionTask, requests: list[VisionRequest]) -> None:
    await check_garbage_miner(task, requests[0])


@pytest.mark.parametrize(
    "bad",
    [
        {"objects": [{"label": "dog", "box": [0, 0, 10, 10]}]},
        {"objects": [{"label": "face", "box": [0, 0, "nan", 10]}]},
        {"objects": [{"label": "face", "box": [0, 0, 10]}]},
    ],
)
def test_malformed_answers_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        VisionResponse.model_validate(bad)


def test_a_missing_cascade_fails_with_the_setting_named(tmp_path: Path) -> None:
    broken = tmp_path / "cascade.xml"
    broken.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(DetectorUnavailable, match="vision_face_cascade"):
        Detector.load(str(broken))
