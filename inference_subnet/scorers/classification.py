"""Labels and probabilities: accuracy, ROC AUC, and a calibrated-probability quality."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predicted: Sequence[object], truth: Sequence[object]) -> float:
    """Share of positions where the prediction equals the label."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labels")
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth) if truth else 1.0


def roc_auc(probabilities: Sequence[float], labels: Sequence[bool]) -> float:
    """Probability that a random positive ranks above a random negative (ties count half): the
    Mann-Whitney form of ROC AUC, exact, no threshold. 0.5 when one class is missing."""
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    positives = [p for p, y in zip(probabilities, labels) if y]
    negatives = [p for p, y in zip(probabilities, labels) if not y]
    if not positives or not negatives:
        return 0.5
    ranked = sorted((p, y) for p, y in zip(probabilities, labels))
    # Average ranks (1-based) over ties, then the rank-sum statistic.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        average = (i + j) / 2 + 1
        rank_sum += average * sum(1 for k in range(i, j + 1) if ranked[k][1])
        i = j + 1
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def brier_quality(probabilities: Sequence[float], labels: Sequence[bool]) -> float:
    """1 minus the Brier score: rewards calibrated confidence, not only the ranking AUC measures."""
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    if not labels:
        return 1.0
    return 1.0 - sum((p - float(y)) ** 2 for p, y in zip(probabilities, labels)) / len(labels)
