"""AI-content detection: say which texts a machine wrote.

A request holds eight texts of 30 to 80 words: four human-written excerpts of documentation on the
validator's machine (:mod:`inference_subnet.tasks.detect.corpus`) and four machine texts (an n-gram model
trained on that documentation, and the ``llm`` example's model continuing a human opening). A miner
answers one probability per text that a machine wrote it.

Ground truth and what a miner can see: the request carries the texts and a challenge id
(:mod:`inference_subnet.protocol.challenge`), never the labels. Which positions are machine-written is drawn
from a generator seeded by an HMAC of the id's nonce under the validator's secret, so the validator
recomputes the labels at scoring time and a miner cannot.

Known limit of this example: the human texts are public documentation. A miner holding the same files
can look an excerpt up and know it is human; a production subnet draws human text from a source miners do
not have (fresh or private writing) through ``examples.detect_corpus_dirs``.

Score: the mean of ``2 * AUC - 1`` (ranking) and ``2 * accuracy - 1`` (at 0.5), each floored at 0, so
chance (random or constant answers) scores about 0 and a perfect detector 1. An organic request has no
labels: a well-formed answer scores 0.5 (evidence that the miner answers, not of how well), a malformed
one 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, Field

from inference_subnet.scorers import accuracy, roc_auc
from inference_subnet.protocol.challenge import ChallengeId, ChallengeTask
from inference_subnet.tasks.detect.samples import draw_labels, load_sources

SAMPLES = 8
UNLABELLED_QUALITY = 0.5

Text = Annotated[str, Field(min_length=1, max_length=4000)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class DetectRequest(BaseModel):
    id: ChallengeId
    texts: list[Text] = Field(min_length=1, max_length=64, description="The texts to judge.")


class DetectResponse(BaseModel):
    probabilities: list[Probability] = Field(
        max_length=64, description="For each text, in order, the probability that a machine wrote it."
    )


def detection_quality(probabilities: Sequence[float], labels: Sequence[bool]) -> float:
    """Mean of the ranking and the thresholded skill above chance, in [0, 1]."""
    if len(probabilities) != len(labels):
        return 0.0
    ranking = max(0.0, 2.0 * roc_auc(probabilities, labels) - 1.0)
    decisions = max(0.0, 2.0 * accuracy([p >= 0.5 for p in probabilities], labels) - 1.0)
    return (ranking + decisions) / 2


class DetectTask(ChallengeTask[DetectRequest, DetectResponse]):
    name = "detect"
    Request = DetectRequest
    Response = DetectResponse
    timeout = 5.0
    capacity_hint = 5000
    """Embedding eight short texts takes the reference miner ~0.1-0.3 s of CPU."""
    default_handler = "inference_subnet.tasks.detect.handler:make_handler"

    def synthesize(self, rng: random.Random) -> DetectRequest:
        """Eight labelled texts. The first call in a process loads the corpus, the n-gram model and the
        LLM (seconds); later calls decode about one LLM continuation each."""
        challenge_id, truth = self.issue(rng)
        labels = draw_labels(SAMPLES, truth)
        sources = load_sources()
        return DetectRequest(id=challenge_id, texts=[sources.sample(machine, truth) for machine in labels])

    def labels(self, request: DetectRequest) -> list[bool] | None:
        """Which texts this validator had a machine write, or ``None`` for a request it did not make."""
        truth = self.open(request.id)
        if truth is None or len(request.texts) != SAMPLES:
            return None
        return draw_labels(SAMPLES, truth)

    def score(
        self, request: DetectRequest, responses: Sequence[DetectResponse | None], timings: Sequence[float]
    ) -> list[float]:
        labels = self.labels(request)
        scores = []
        for response in responses:
            if response is None or len(response.probabilities) != len(request.texts):
                scores.append(0.0)
            elif labels is None:
                scores.append(UNLABELLED_QUALITY)
            else:
                scores.append(detection_quality(response.probabilities, labels))
        return scores
