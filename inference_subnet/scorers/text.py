"""Text and value comparisons: exact, numeric, token overlap, edit-distance error rates, vector similarity."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def exact_match(answer: object, reference: object, *, normalise: bool = False) -> float:
    """1 when equal, else 0. ``normalise`` compares strings case- and whitespace-insensitively."""
    if normalise and isinstance(answer, str) and isinstance(reference, str):
        return float(" ".join(answer.split()).casefold() == " ".join(reference.split()).casefold())
    return float(answer == reference)


def numeric_tolerance(answer: float, reference: float, *, abs_tol: float = 0.0, rel_tol: float = 1e-9) -> float:
    """1 within tolerance, else 0; NaN and infinities never match."""
    if not (math.isfinite(answer) and math.isfinite(reference)):
        return 0.0
    return float(math.isclose(answer, reference, rel_tol=rel_tol, abs_tol=abs_tol))


def _edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance, two rows of memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def char_error_rate(hypothesis: str, reference: str) -> float:
    """Edits to turn ``hypothesis`` into ``reference``, per reference character (can exceed 1)."""
    if not reference:
        return float(bool(hypothesis))
    return _edit_distance(hypothesis, reference) / len(reference)


def word_error_rate(hypothesis: str, reference: str) -> float:
    """Word-level edits per reference word (can exceed 1)."""
    ref = reference.split()
    if not ref:
        return float(bool(hypothesis.split()))
    return _edit_distance(hypothesis.split(), ref) / len(ref)


def token_f1(answer: str, reference: str) -> float:
    """Bag-of-words F1 (the SQuAD measure): partial credit for overlapping words, in any order."""
    a, r = answer.casefold().split(), reference.casefold().split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def token_match_rate(answer: Sequence[object], reference: Sequence[object]) -> float:
    """Share of positions where two token sequences agree, over the longer one: for seeded or greedy
    decoding, where an honest miner reproduces the reference token for token."""
    longest = max(len(answer), len(reference))
    if longest == 0:
        return 1.0
    return sum(1 for x, y in zip(answer, reference) if x == y) / longest


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of the angle between two vectors, clipped to [0, 1] (opposite directions score 0)."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} and {len(b)}")
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0.0 or not math.isfinite(norm):
        return 0.0
    return min(1.0, max(0.0, dot / norm))
