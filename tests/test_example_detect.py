"""The AI-content detection example with real models: the validator mixes documentation from this machine
with n-gram and LLM text; a classifier on MiniLM embeddings tells them apart, lazy and wrong miners do
not, and the labels never travel in the request."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from examples_helpers import another_key_opens, answer_all, guessed_truth, mean_score, synthetic

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import load_task
from inference_subnet.protocol.challenge import ChallengeKey
from inference_subnet.tasks.detect import DetectRequest, DetectResponse, DetectTask
from inference_subnet.tasks.detect import embedder as embedder_module
from inference_subnet.tasks.detect.embedder import EmbedderUnavailable, load_embedder
from inference_subnet.tasks.detect.handler import make_handler
from inference_subnet.tasks.detect.samples import (
    MAX_WORDS,
    MIN_WORDS,
    PROMPT_WORDS,
    draw_labels,
    load_sources,
)
from inference_subnet.tasks.detect.task import SAMPLES, UNLABELLED_QUALITY, detection_quality

ROUNDS = 12
TRAIN = 96
"""Samples per class for the test miner: enough for the method, quick to train."""


@pytest.fixture(scope="module")
def task() -> DetectTask:
    return DetectTask(ChallengeKey(b"detect-test-secret-0123456789"))


@pytest.fixture(scope="module")
def requests(task: DetectTask) -> list[DetectRequest]:
    return synthetic(task, ROUNDS, seed=4242)


@pytest.fixture(scope="module")
async def honest(requests: list[DetectRequest]) -> list[DetectResponse]:
    return await answer_all(make_handler({"train_samples": TRAIN}), requests)


def test_registered_by_name() -> None:
    assert isinstance(load_task("detect"), DetectTask)


def test_synthesis_is_reproducible(task: DetectTask, requests: list[DetectRequest]) -> None:
    again = random.Random(4242)
    assert task.synthesize(again) == requests[0]


def test_requests_mix_both_writers_at_equal_lengths(task: DetectTask, requests: list[DetectRequest]) -> None:
    for request in requests:
        labels = task.labels(request)
        assert labels is not None and sum(labels) == SAMPLES // 2
        for text in request.texts:
            assert text == " ".join(text.split())  # no layout that could give the writer away
            assert len(text.split()) <= MAX_WORDS
    human = [len(t.split()) for r in requests for t, m in zip(r.texts, task.labels(r) or []) if not m]
    assert min(human) >= MIN_WORDS


async def test_honest_embedding_classifier_scores_high(
    task: DetectTask, requests: list[DetectRequest], honest: list[DetectResponse]
) -> None:
    assert mean_score(task, requests, honest) >= 0.7


async def test_wrong_miner_with_flipped_probabilities_scores_low(
    task: DetectTask, requests: list[DetectRequest]
) -> None:
    wrong = await answer_all(load_handler(task, {"behaviour": "wrong", "train_samples": TRAIN}), requests)
    assert mean_score(task, requests, wrong) <= 0.3


@pytest.mark.parametrize("constant", [0.0, 0.5, 1.0])
def test_constant_answers_score_zero(
    task: DetectTask, requests: list[DetectRequest], constant: float
) -> None:
    lazy = [DetectResponse(probabilities=[constant] * SAMPLES)] * len(requests)
    assert mean_score(task, requests, lazy) == 0.0


def test_copied_answers_score_low(
    task: DetectTask, requests: list[DetectRequest], honest: list[DetectResponse]
) -> None:
    assert mean_score(task, requests, honest[1:] + honest[:1]) <= 0.35


def test_labels_from_a_guessed_seed_score_low(task: DetectTask, requests: list[DetectRequest]) -> None:
    guessed = [
        DetectResponse(probabilities=[float(m) for m in draw_labels(SAMPLES, guessed_truth(task, r))])
        for r in requests
    ]
    assert mean_score(task, requests, guessed) <= 0.35


def test_malformed_answers_score_zero(task: DetectTask, requests: list[DetectRequest]) -> None:
    assert task.score(requests[0], [DetectResponse(probabilities=[0.9] * 3), None], [0.2, 0.2]) == [0.0, 0.0]


def test_the_labels_are_not_in_the_request(task: DetectTask, requests: list[DetectRequest]) -> None:
    for request in requests:
        assert set(request.model_dump()) == {"id", "texts"}
        assert not another_key_opens(task, request)


def test_organic_requests_have_no_labels_to_score_against(
    task: DetectTask, requests: list[DetectRequest]
) -> None:
    organic = DetectRequest(texts=list(requests[0].texts))
    assert task.labels(organic) is None
    good = DetectResponse(probabilities=[0.1] * SAMPLES)
    assert task.score(organic, [good, DetectResponse(probabilities=[])], [0.2, 0.2]) == [
        UNLABELLED_QUALITY,
        0.0,
    ]


def test_quality_is_one_for_a_perfect_detector_and_zero_for_an_inverted_one() -> None:
    labels = [True, False, True, False]
    assert detection_quality([0.9, 0.1, 0.8, 0.2], labels) == 1.0
    assert detection_quality([0.1, 0.9, 0.2, 0.8], labels) == 0.0


def test_the_human_corpus_is_read_from_this_machine() -> None:
    sources = load_sources()
    assert len(sources.paragraphs) > 500
    # Nothing of it is shipped: the package holds code only.
    package = Path(__file__).resolve().parents[1] / "inference_subnet" / "tasks" / "detect"
    assert {p.suffix for p in package.iterdir() if p.is_file()} == {".py"}


def test_machine_writers_write_new_text() -> None:
    sources = load_sources()
    rng = random.Random(8)
    corpus = "\n".join(sources.paragraphs)
    generated = [sources.ngram.generate(40, rng) for _ in range(30)]
    assert sum(text in corpus for text in generated) <= 1
    continuation = sources.continuation(40, rng)
    # The model continues the raw text, so its first piece may glue onto the last word of the opening.
    opening = " ".join(continuation.split()[: PROMPT_WORDS - 1])
    assert any(p.startswith(opening) for p in sources.paragraphs) and continuation not in corpus


def test_the_packaged_embedder_is_checked_against_its_pinned_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "PACKAGED_SHA256", "0" * 64)
    with pytest.raises(EmbedderUnavailable, match="sha256"):
        load_embedder()
