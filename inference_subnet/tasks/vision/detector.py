"""The vision miner's detector: OpenCV's pretrained Haar cascade for faces, contour analysis for shapes.

No learned general-purpose detector ships offline, so this is the honest classical pair: the frontal-face
cascade is a real pretrained model (Viola-Jones, trained on photographs of faces, shipped inside
``opencv-python-headless<5``); shapes are found by edges, contours and polygon approximation, which is
what that problem needs. A production subnet would put a learned detector behind the same interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference_subnet.scorers import Box, iou

if TYPE_CHECKING:
    import numpy as np

MIN_AREA = 500.0
"""Contours smaller than this (pixels) are texture or noise, not objects (the smallest shape is ~560)."""


class DetectorUnavailable(LookupError):
    """OpenCV or the cascade file is missing."""


@dataclass(frozen=True)
class Detector:
    """A loaded face cascade plus the shape rules."""

    cascade: Any

    @classmethod
    def load(cls, cascade: str) -> Detector:
        """Load the cascade by file name in ``cv2.data.haarcascades`` or by path; fail with the fix."""
        try:
            import cv2
        except ImportError as exc:
            raise DetectorUnavailable(
                "the vision example needs OpenCV: pip install 'inference-subnet[vision]'"
            ) from exc
        path = Path(cascade)
        if not path.is_file():
            data = getattr(cv2, "data", None)
            if data is None:  # opencv 5 dropped the shipped cascades
                raise DetectorUnavailable(
                    "this OpenCV ships no Haar cascades: pip install 'opencv-python-headless<5'"
                )
            path = Path(data.haarcascades) / cascade
        try:
            classifier = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError):  # a file that is not a cascade makes the loader raise
            classifier = None
        if classifier is None or classifier.empty():
            raise DetectorUnavailable(f"no usable Haar cascade at {path} (examples.vision_face_cascade)")
        return cls(cascade=classifier)

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Every face and shape in an RGB image, as labelled boxes (blocking: run it off the event loop)."""
        faces = self.faces(rgb)
        shapes = [s for s in self.shapes(rgb) if all(iou(s, f) < 0.05 and not _inside(s, f) for f in faces)]
        return faces + shapes

    def faces(self, rgb: np.ndarray) -> list[Box]:
        import cv2

        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        found = self.cascade.detectMultiScale(grey, scaleFactor=1.08, minNeighbors=5, minSize=(40, 40))
        return [Box(float(x), float(y), float(x + w), float(y + h), "face") for x, y, w, h in found]

    def shapes(self, rgb: np.ndarray) -> list[Box]:
        """Closed outlines from colour edges, classified by corners and roundness."""
        import cv2
        import numpy as np

        smooth = cv2.GaussianBlur(rgb, (5, 5), 0)
        edges = np.zeros(rgb.shape[:2], dtype=np.uint8)
        for channel in cv2.split(smooth):
            edges |= cv2.Canny(channel, 40, 120)
        edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        found = []
        for contour in contours:
            hull = cv2.convexHull(contour)
            area = cv2.contourArea(hull)
            if area < MIN_AREA:
                continue
            label = classify(hull)
            if label is not None:
                x, y, w, h = cv2.boundingRect(hull)
                found.append(Box(float(x), float(y), float(x + w), float(y + h), label))
        return found


def classify(hull: np.ndarray) -> str | None:
    """``circle``, ``square``, ``triangle`` or ``None`` for a convex outline."""
    import cv2

    perimeter = cv2.arcLength(hull, True)
    area = cv2.contourArea(hull)
    if perimeter == 0:
        return None
    corners = len(cv2.approxPolyDP(hull, 0.04 * perimeter, True))
    roundness = 4 * math.pi * area / perimeter**2  # 1 for a circle, ~0.79 square, ~0.60 triangle
    if corners == 3:
        return "triangle"
    if corners == 4:
        (_, _), (w, h), _ = cv2.minAreaRect(hull)
        return "square" if min(w, h) / max(w, h) > 0.8 else None
    if roundness > 0.85:
        return "circle"
    return None


def _inside(a: Box, b: Box) -> bool:
    return a.x0 >= b.x0 - 4 and a.y0 >= b.y0 - 4 and a.x1 <= b.x1 + 4 and a.y1 <= b.y1 + 4


@lru_cache(maxsize=1)
def reference_detector() -> Detector:
    """This process's detector, configured by ``examples.vision_face_cascade`` (loaded once)."""
    from inference_subnet.settings import load_settings

    return Detector.load(load_settings().examples.vision_face_cascade)
