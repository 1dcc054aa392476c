"""Boxes: intersection over union and IoU-matched precision/recall, for object recognition tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Box(NamedTuple):
    """An axis-aligned box in pixels, ``x0 < x1`` and ``y0 < y1``, with its label."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""


def iou(a: Box, b: Box) -> float:
    """Intersection area over union area; 0 for disjoint or degenerate boxes."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def matched_precision_recall(
    predicted: Sequence[Box], truth: Sequence[Box], *, threshold: float = 0.5, match_labels: bool = True
) -> tuple[float, float]:
    """Greedy one-to-one matching by IoU (highest first), as detection benchmarks do: a prediction counts
    when it overlaps an unmatched true box by at least ``threshold`` (with the same label, by default)."""
    pairs = sorted(
        ((iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)
         if not match_labels or p.label == t.label),
        reverse=True,
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    hits = len(used_p)
    precision = hits / len(predicted) if predicted else float(not truth)
    recall = hits / len(truth) if truth else 1.0
    return precision, recall


def matched_f1(predicted: Sequence[Box], truth: Sequence[Box], **options: object) -> float:
    """Harmonic mean of :func:`matched_precision_recall`: one number that punishes both misses and spam."""
    precision, recall = matched_precision_recall(predicted, truth, **options)  # type: ignore[arg-type]
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
