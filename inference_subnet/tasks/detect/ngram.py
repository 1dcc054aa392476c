"""A word-level Markov model trained on the human corpus: the simplest machine that writes "like" it.

Order three (two words of context) reads locally fluent, but on a corpus this small most two-word contexts
have a single continuation, and following them would copy a human paragraph word for word; the model then
falls back to one word of context, so what it writes is new text in the corpus's own vocabulary and style.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise


class NGramModel:
    """Trigram counts with a bigram fallback, over whitespace-separated words (punctuation kept on)."""

    def __init__(self, paragraphs: Sequence[str]) -> None:
        trigrams: dict[tuple[str, str], list[str]] = defaultdict(list)
        bigrams: dict[str, list[str]] = defaultdict(list)
        starts: list[tuple[str, str]] = []
        for paragraph in paragraphs:
            words = paragraph.split()
            if len(words) < 3:
                continue
            starts.append((words[0], words[1]))
            for a, b, c in zip(words, words[1:], words[2:]):
                trigrams[(a, b)].append(c)
            for a, b in pairwise(words):
                bigrams[a].append(b)
        if not starts:
            raise ValueError("the n-gram model needs paragraphs of three words or more")
        self._trigrams = dict(trigrams)
        self._bigrams = dict(bigrams)
        self._starts = starts

    def _next(self, a: str, b: str, rng: random.Random) -> str | None:
        choices = self._trigrams.get((a, b))
        if choices is None or len(set(choices)) < 2:
            choices = self._bigrams.get(b)
        return rng.choice(choices) if choices else None

    def generate(self, words: int, rng: random.Random) -> str:
        """``words`` words, starting like a paragraph of the corpus and restarting at a dead end."""
        out = list(self._starts[rng.randrange(len(self._starts))])
        while len(out) < words:
            following = self._next(out[-2], out[-1], rng)
            if following is None:
                out.extend(self._starts[rng.randrange(len(self._starts))])
            else:
                out.append(following)
        return " ".join(out[:words])
