"""Ready scorers: pure functions that turn one answer (and a reference) into a quality in [0, 1].

Tasks compose them in ``Task.score``; the subnet builder names them in a spec. None does I/O or needs a
model: a scorer that compares against a reference takes the reference (text, vector, boxes) as input, and
the task computes it however it likes (its own solver, a validator-side model).
"""

from inference_subnet.scorers.classification import accuracy, brier_quality, roc_auc
from inference_subnet.scorers.detection import Box, iou, matched_f1, matched_precision_recall
from inference_subnet.scorers.image import image_similarity, psnr, ssim
from inference_subnet.scorers.latency import latency_quality, reliability
from inference_subnet.scorers.text import (
    char_error_rate,
    cosine_similarity,
    exact_match,
    numeric_tolerance,
    token_f1,
    token_match_rate,
    word_error_rate,
)

__all__ = [
    "Box",
    "accuracy",
    "brier_quality",
    "char_error_rate",
    "cosine_similarity",
    "exact_match",
    "image_similarity",
    "iou",
    "latency_quality",
    "matched_f1",
    "matched_precision_recall",
    "numeric_tolerance",
    "psnr",
    "reliability",
    "roc_auc",
    "ssim",
    "token_f1",
    "token_match_rate",
    "word_error_rate",
]
