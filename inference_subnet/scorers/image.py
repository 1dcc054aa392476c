"""Image comparisons: pixel fidelity (PSNR) and structural similarity (SSIM), and a [0, 1] blend of both.

Built for reproduce-and-compare scoring of generated images, where the honest answer differs from the
validator's own only by floating-point noise (a different CPU thread count moves a few pixels by one
level: PSNR far above 40 dB), while another seed, a blank or a random image is a different picture
altogether (PSNR near 10 dB, SSIM near 0). Arrays are ``H x W`` or ``H x W x C``, any numeric dtype,
in the 0-255 range (``peak`` otherwise).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    if x.ndim not in (2, 3) or x.size == 0:
        raise ValueError(f"expected an H x W or H x W x C image, got shape {x.shape}")
    return x, y


def psnr(a: ArrayLike, b: ArrayLike, *, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    x, y = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _box_mean(image: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """Mean over every ``size x size`` window (valid positions only), by summed-area table."""
    table = np.pad(image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    total = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return total / (size * size)


def ssim(a: ArrayLike, b: ArrayLike, *, peak: float = 255.0, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) over ``window``-sized boxes, averaged over channels;
    in [-1, 1], 1 for identical images. Images smaller than the window use one window of their size."""
    x, y = _pair(a, b)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    size = max(1, min(window, x.shape[0], x.shape[1]))
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for channel in range(x.shape[2]):
        p, q = x[..., channel], y[..., channel]
        mu_p, mu_q = _box_mean(p, size), _box_mean(q, size)
        var_p = _box_mean(p * p, size) - mu_p**2
        var_q = _box_mean(q * q, size) - mu_q**2
        cov = _box_mean(p * q, size) - mu_p * mu_q
        index = ((2 * mu_p * mu_q + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_q**2 + c1) * (var_p + var_q + c2))
        values.append(float(index.mean()))
    return float(np.mean(values))


def image_similarity(
    answer: ArrayLike,
    reference: ArrayLike,
    *,
    floor_db: float = 20.0,
    full_db: float = 40.0,
    peak: float = 255.0,
) -> float:
    """Agreement in [0, 1]: the mean of a PSNR term (0 at ``floor_db``, 1 from ``full_db``) and SSIM
    (negative counts as 0). Noise-level differences score 1; images of a different shape score 0."""
    if not full_db > floor_db:
        raise ValueError(f"full_db ({full_db}) must be above floor_db ({floor_db})")
    if np.shape(answer) != np.shape(reference):
        return 0.0
    db = psnr(answer, reference, peak=peak)
    fidelity = 1.0 if db >= full_db else max(0.0, (db - floor_db) / (full_db - floor_db))
    structure = max(0.0, min(1.0, ssim(answer, reference, peak=peak)))
    return 0.5 * fidelity + 0.5 * structure
