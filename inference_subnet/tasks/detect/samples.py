"""Labelled samples: human excerpts and machine text of the same lengths, for validators and miners alike.

Machine text comes from two writers: the n-gram model trained on the human corpus, and the ``llm``
example's causal LM (``examples.llm_model``) continuing the first words of a human paragraph. Every sample
is 30 to 80 words, cut the same way for both classes, so length and layout say nothing about the label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from inference_subnet.tasks.detect.corpus import load_paragraphs
from inference_subnet.tasks.detect.ngram import NGramModel

if TYPE_CHECKING:
    from inference_subnet.tasks.llm.model import TextGenerator

MIN_WORDS, MAX_WORDS = 30, 80
PROMPT_WORDS = 6
"""Human words the LLM continues from."""
LLM_SHARE = 0.25
"""Share of machine samples written by the LLM (the rest by the n-gram model). Each LLM sample costs
the validator some decoding inside ``synthesize`` (about a tenth of a second with the tiny default model),
so it stays a minority."""
LLM_CALLS = 3
"""Most decoding calls for one LLM sample."""


@dataclass
class Sources:
    """The human corpus and the two machine writers."""

    paragraphs: list[str]
    ngram: NGramModel
    llm: TextGenerator

    def human(self, words: int, rng: random.Random) -> str:
        """The first ``words`` words of a human paragraph that has at least that many."""
        while True:
            paragraph = self.paragraphs[rng.randrange(len(self.paragraphs))].split()
            if len(paragraph) >= words:
                return " ".join(paragraph[:words])

    def machine(self, words: int, rng: random.Random) -> str:
        """About ``words`` words from the LLM (an :data:`LLM_SHARE` of the time) or else the n-gram model."""
        if rng.random() < LLM_SHARE:
            return self.continuation(words, rng)
        return self.ngram.generate(words, rng)

    def continuation(self, words: int, rng: random.Random) -> str:
        """The LLM continuing the first words of a human paragraph, cut at ``words`` words. A model may
        stop early: it is asked to go on (a bounded number of times), and a sample that stays short is
        kept short rather than padded with another writer's words."""
        text = " ".join(self.paragraphs[rng.randrange(len(self.paragraphs))].split()[:PROMPT_WORDS])
        seed = rng.getrandbits(31)
        for attempt in range(LLM_CALLS):
            text += self.llm.generate(text, max_new_tokens=2 * words, seed=seed + attempt)
            if len(text.split()) >= words:
                break
        return " ".join(text.split()[:words])

    def sample(self, machine: bool, rng: random.Random) -> str:
        words = rng.randint(MIN_WORDS, MAX_WORDS)
        return self.machine(words, rng) if machine else self.human(words, rng)


def draw_labels(count: int, rng: random.Random) -> list[bool]:
    """Which of ``count`` samples are machine-written (``True``): half of them, in random places. Drawn
    before any text, so the labels follow from the generator's seed alone."""
    labels = [i < count // 2 for i in range(count)]
    rng.shuffle(labels)
    return labels


@lru_cache(maxsize=1)
def load_sources() -> Sources:
    """This process's sources, per ``examples.detect_corpus_dirs`` and ``examples.llm_model`` (loaded once;
    blocking: the first call reads the corpus or its cache, trains the n-gram model and loads the LLM)."""
    from inference_subnet.tasks.tiny import cache_root, example_settings

    settings = example_settings()
    paragraphs = load_paragraphs(settings.detect_corpus_dirs, cache_root(settings))
    try:
        from inference_subnet.tasks.llm.model import load_text_generator

        llm = load_text_generator()
    except ImportError as exc:
        raise ImportError(
            f"the detect example writes machine text with the llm example's model ({exc.name} is missing): "
            "pip install 'inference-subnet[detect,llm]'"
        ) from exc
    return Sources(paragraphs=paragraphs, ngram=NGramModel(paragraphs), llm=llm)
