"""The detection miner's method: logistic regression on sentence embeddings, trained at start-up.

The miner writes its own training set the way a validator writes challenges (human excerpts from the
machine's documentation, n-gram text, LLM continuations) and fits a scikit-learn logistic regression on
two kinds of features from the sentence embedder:

- the embedding of the whole text (what it is about and how it reads);
- coherence: the cosine similarities between the embeddings of its three thirds, and of each third with
  the whole. A person stays on one subject; a Markov chain drifts from topic to topic within a sentence.
  These lift the held-out AUC against n-gram text from about 0.95 (embedding alone) to about 0.99.

It learns what separates the writers, not the validator's samples: the two never share a text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from inference_subnet.tasks.detect.samples import MAX_WORDS, MIN_WORDS, Sources

LLM_TRAINING_SAMPLES = 16
"""LLM continuations in the training set at most: decoding is the slow part of start-up, and a handful
teaches the classifier what this model's text looks like."""


class MachineTextClassifier:
    """Probability that a text is machine-written."""

    def __init__(self, embedder: Any, model: Any) -> None:
        self.embedder = embedder
        self.model = model

    def embed(self, texts: Sequence[str]) -> Any:
        return self.embedder.encode(
            list(texts),
            batch_size=32,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )

    def features(self, texts: Sequence[str]) -> Any:
        """Per text: its embedding, then the six coherence similarities and their mean of the first three."""
        import numpy as np

        whole = self.embed(texts)
        thirds = []
        for text in texts:
            words = text.split()
            cut = max(1, len(words) // 3)
            thirds += [
                " ".join(words[:cut]) or text,
                " ".join(words[cut : 2 * cut]) or text,
                " ".join(words[2 * cut :]) or text,
            ]
        parts = self.embed(thirds).reshape(len(texts), 3, -1)
        between = np.stack(
            [
                (parts[:, 0] * parts[:, 1]).sum(1),
                (parts[:, 1] * parts[:, 2]).sum(1),
                (parts[:, 0] * parts[:, 2]).sum(1),
            ],
            axis=1,
        )
        with_whole = np.stack([(parts[:, i] * whole).sum(1) for i in range(3)], axis=1)
        return np.hstack([whole, between, with_whole, between.mean(axis=1, keepdims=True)])

    @classmethod
    def train(
        cls, embedder: Any, sources: Sources, per_class: int, rng: random.Random
    ) -> MachineTextClassifier:
        """Fit on ``per_class`` human and ``per_class`` machine samples drawn with ``rng`` (blocking)."""
        from sklearn.linear_model import LogisticRegression

        llm = min(LLM_TRAINING_SAMPLES, per_class // 4)
        human = [sources.human(rng.randint(MIN_WORDS, MAX_WORDS), rng) for _ in range(per_class)]
        machine = [sources.continuation(rng.randint(MIN_WORDS, MAX_WORDS), rng) for _ in range(llm)]
        machine += [
            sources.ngram.generate(rng.randint(MIN_WORDS, MAX_WORDS), rng) for _ in range(per_class - llm)
        ]
        classifier = cls(embedder, None)
        features = classifier.features(human + machine)
        labels = [0] * len(human) + [1] * len(machine)
        classifier.model = LogisticRegression(C=4.0, max_iter=2000).fit(features, labels)
        return classifier

    def predict(self, texts: Sequence[str]) -> list[float]:
        """One probability per text (blocking: run it in a worker thread)."""
        if not texts:
            return []
        return [float(p) for p in self.model.predict_proba(self.features(texts))[:, 1]]
