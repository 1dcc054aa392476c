"""The ready scorers: checked against independent implementations (scikit-learn) and by their properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from inference_subnet.scorers import (
    Box,
    accuracy,
    brier_quality,
    char_error_rate,
    cosine_similarity,
    exact_match,
    iou,
    latency_quality,
    matched_f1,
    matched_precision_recall,
    numeric_tolerance,
    reliability,
    roc_auc,
    token_f1,
    token_match_rate,
    word_error_rate,
)


def test_exact_and_numeric() -> None:
    assert exact_match("Paris", "paris") == 0.0
    assert exact_match(" Paris ", "paris", normalise=True) == 1.0
    assert numeric_tolerance(1.0001, 1.0, abs_tol=1e-3) == 1.0
    assert numeric_tolerance(1.1, 1.0, abs_tol=1e-3) == 0.0
    assert numeric_tolerance(math.nan, math.nan, abs_tol=1.0) == 0.0


def test_error_rates_count_edits_per_reference_unit() -> None:
    assert char_error_rate("hello", "hello") == 0.0
    assert char_error_rate("helo", "hello") == pytest.approx(0.2)
    assert char_error_rate("", "abcd") == 1.0
    assert char_error_rate("abcdefgh", "ab") == 3.0  # insertions can exceed 1
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(0.25)
    assert char_error_rate("", "") == 0.0 and char_error_rate("x", "") == 1.0


def test_token_overlap_and_match_rate() -> None:
    assert token_f1("the cat sat", "cat sat the") == 1.0
    assert token_f1("a b", "c d") == 0.0
    assert token_f1("the cat", "the cat sat down") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_match_rate([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert token_match_rate([1, 2], [1, 2, 3, 4]) == 0.5


def test_cosine_similarity() -> None:
    assert cosine_similarity([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [0, 1]) == 0.0
    assert cosine_similarity([1, 0], [-1, 0]) == 0.0
    assert cosine_similarity([0, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError, match="length"):
        cosine_similarity([1], [1, 2])


def test_iou_and_matching() -> None:
    a = Box(0, 0, 10, 10, "face")
    assert iou(a, a) == 1.0
    assert iou(a, Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(a, Box(20, 20, 30, 30)) == 0.0
    truth = [Box(0, 0, 10, 10, "face"), Box(50, 50, 70, 70, "square")]
    assert matched_precision_recall(truth, truth) == (1.0, 1.0)
    # A duplicate prediction of one object does not count twice.
    p, r = matched_precision_recall([truth[0], truth[0]], truth)
    assert (p, r) == (0.5, 0.5)
    # The right place with the wrong label is a miss unless labels are ignored.
    wrong_label = [Box(0, 0, 10, 10, "square")]
    assert matched_precision_recall(wrong_label, truth[:1]) == (0.0, 0.0)
    assert matched_precision_recall(wrong_label, truth[:1], match_labels=False) == (1.0, 1.0)
    assert matched_f1([], truth) == 0.0
    assert matched_precision_recall([], []) == (1.0, 1.0)


@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=40))
def test_roc_auc_equals_scikit_learn(pairs: list[tuple[float, bool]]) -> None:
    probabilities = [p for p, _ in pairs]
    labels = [y for _, y in pairs]
    if len(set(labels)) < 2:
        assert roc_auc(probabilities, labels) == 0.5
    else:
        assert roc_auc(probabilities, labels) == pytest.approx(roc_auc_score(labels, probabilities))


def test_accuracy_and_brier() -> None:
    assert accuracy(["a", "b", "c"], ["a", "x", "c"]) == pytest.approx(2 / 3)
    assert brier_quality([1.0, 0.0], [True, False]) == 1.0
    assert brier_quality([0.5, 0.5], [True, False]) == 0.75
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])


def test_latency_and_reliability_terms() -> None:
    assert latency_quality(0.5, target=1.0, timeout=3.0) == 1.0
    assert latency_quality(2.0, target=1.0, timeout=3.0) == pytest.approx(0.5)
    assert latency_quality(3.0, target=1.0, timeout=3.0) == 0.0
    assert latency_quality(math.nan, target=1.0, timeout=3.0) == 0.0
    with pytest.raises(ValueError, match="below timeout"):
        latency_quality(1.0, target=3.0, timeout=1.0)
    assert reliability(0, 0) == 0.5
    assert reliability(10, 10) == pytest.approx(11 / 12)
    with pytest.raises(ValueError):
        reliability(3, 2)
