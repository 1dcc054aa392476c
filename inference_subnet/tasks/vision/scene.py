"""The validator's side of object recognition: scenes it composes, with every object's box known.

A scene is a 320x320 picture of two to five objects on a textured background: rendered shapes (circle,
square, triangle; any colour, size and rotation) and faces. Faces are crops of the one portrait that ships
with matplotlib (``grace_hopper.jpg``, found at run time, never copied here), scaled, flipped, tilted,
re-lit and blended in with a soft elliptical mask: a real photograph, but always the same face, so the
task measures finding faces more than telling people apart.

The layout (labels and boxes) is drawn first from the generator, the looks after, so the validator
recomputes the boxes from the challenge id without rendering anything.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from inference_subnet.scorers import Box

if TYPE_CHECKING:
    from PIL import Image

SIZE = 320
"""Scene side in pixels: small enough for a CPU miner to answer in tens of milliseconds."""
SHAPES = ("circle", "square", "triangle")
LABELS = (*SHAPES, "face")

PORTRAIT = "grace_hopper.jpg"
PORTRAIT_CROP = (100, 50, 432, 382)
"""The square cut from the 512x600 portrait: the face with a margin."""
FACE_IN_CROP = (55 / 332, 55 / 332, 277 / 332, 277 / 332)
"""Where the face sits in that cut, as fractions: the box OpenCV's frontal-face cascade draws on the
original portrait (x 155, y 105, 222x222), the convention face detectors' boxes follow."""


class SceneSourceError(RuntimeError):
    """The portrait used for faces is not on this machine."""


@dataclass(frozen=True)
class Placed:
    """One object of a scene: its true box, the square it occupies (the whole crop, for a face), and how
    it is drawn (centre, size, rotation in degrees)."""

    box: Box
    area: Box
    centre: tuple[float, float]
    size: float
    angle: float

    @property
    def label(self) -> str:
        return self.box.label


def _polygon(label: str, cx: float, cy: float, side: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square or an equilateral triangle with sides ``side``, centred on (cx, cy)."""
    corners, radius, start = (
        (4, side / math.sqrt(2), 45.0) if label == "square" else (3, side / math.sqrt(3), -90.0)
    )
    return [
        (
            cx + radius * math.cos(math.radians(start + angle + k * 360 / corners)),
            cy + radius * math.sin(math.radians(start + angle + k * 360 / corners)),
        )
        for k in range(corners)
    ]


def _place(label: str, rng: random.Random) -> Placed:
    if label == "face":
        side = rng.randint(84, 140)
        x, y = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
        fx0, fy0, fx1, fy1 = FACE_IN_CROP
        box = Box(x + fx0 * side, y + fy0 * side, x + fx1 * side, y + fy1 * side, label)
        return Placed(
            box, Box(x, y, x + side, y + side), (x + side / 2, y + side / 2), side, rng.uniform(-8.0, 8.0)
        )
    side = rng.randint(34, 70)
    angle = 0.0 if label == "circle" else rng.uniform(0.0, 360.0)
    reach = (
        side / 2 if label == "circle" else side / math.sqrt(2) if label == "square" else side / math.sqrt(3)
    )
    cx, cy = rng.uniform(reach + 2, SIZE - reach - 2), rng.uniform(reach + 2, SIZE - reach - 2)
    if label == "circle":
        box = Box(cx - reach, cy - reach, cx + reach, cy + reach, label)
    else:
        points = _polygon(label, cx, cy, side, angle)
        box = Box(
            min(p[0] for p in points),
            min(p[1] for p in points),
            max(p[0] for p in points),
            max(p[1] for p in points),
            label,
        )
    return Placed(box, box, (cx, cy), side, angle)


def _apart(a: Box, b: Box, gap: float = 10.0) -> bool:
    return a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0


def layout(rng: random.Random) -> tuple[Placed, ...]:
    """Two to five objects that do not touch, at most two of them faces."""
    placed: list[Placed] = []
    for _ in range(rng.randint(2, 5)):
        faces = sum(p.label == "face" for p in placed)
        label = rng.choice(LABELS if faces < 2 else SHAPES)
        for _attempt in range(40):
            candidate = _place(label, rng)
            if all(_apart(candidate.area, p.area) for p in placed):
                placed.append(candidate)
                break
    return tuple(placed)


def boxes(objects: tuple[Placed, ...]) -> list[Box]:
    """The true labelled boxes of a layout."""
    return [p.box for p in objects]


@lru_cache(maxsize=1)
def portrait_crop() -> Image.Image:
    """The face cut from matplotlib's sample portrait (RGB)."""
    from PIL import Image

    try:
        from matplotlib import cbook

        path = cbook.get_sample_data(PORTRAIT, asfileobj=False)
        return Image.open(path).convert("RGB").crop(PORTRAIT_CROP)
    except (ImportError, OSError, ValueError) as exc:
        raise SceneSourceError(
            f"the vision example pastes faces from matplotlib's sample data ({PORTRAIT}): reinstall matplotlib"
        ) from exc


def _background(rng: random.Random) -> Image.Image:
    """A two-colour gradient at a random angle, with soft blotches: texture a shape detector must ignore."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    a = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    b = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    t = np.cos(theta) * xs + np.sin(theta) * ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    blotches = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw, draw_mask = ImageDraw.Draw(blotches), ImageDraw.Draw(mask)
    for _ in range(rng.randint(2, 6)):
        x, y, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(30, 110)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        draw_mask.ellipse((x - r, y - r, x + r, y + r), fill=rng.randint(30, 70))
    soft = ImageFilter.GaussianBlur(18)
    return Image.composite(blotches.filter(soft), image, mask.filter(soft))


def _ink(background: Image.Image, area: Box, rng: random.Random) -> tuple[int, int, int]:
    """A colour that stands out from the background under ``area``: lightness far from it, any hue."""
    import colorsys

    patch = background.crop((int(area.x0), int(area.y0), int(area.x1) + 1, int(area.y1) + 1)).resize((1, 1))
    r, g, b = patch.getpixel((0, 0))[:3]
    lightness = (0.299 * r + 0.587 * g + 0.114 * b) / 255
    target = rng.uniform(0.0, 0.25) if lightness > 0.5 else rng.uniform(0.75, 1.0)
    red, green, blue = colorsys.hls_to_rgb(rng.random(), target, rng.uniform(0.3, 1.0))
    return int(red * 255), int(green * 255), int(blue * 255)


def _paste_face(scene: Image.Image, placed: Placed, rng: random.Random) -> None:
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

    side = int(placed.size)
    face = portrait_crop().resize((side, side), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        face = ImageOps.mirror(face)
    face = ImageEnhance.Brightness(face).enhance(rng.uniform(0.75, 1.25))
    face = ImageEnhance.Contrast(face).enhance(rng.uniform(0.8, 1.2))
    mask = Image.new("L", (side, side), 0)
    inset = side * 0.06
    ImageDraw.Draw(mask).ellipse((inset, inset, side - inset, side - inset), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(side * 0.05))
    face = face.rotate(placed.angle, resample=Image.Resampling.BICUBIC)
    mask = mask.rotate(placed.angle, resample=Image.Resampling.BICUBIC)
    scene.paste(face, (int(placed.area.x0), int(placed.area.y0)), mask)


def render(objects: tuple[Placed, ...], rng: random.Random) -> Image.Image:
    """The scene: background, then each object, then sensor noise, all drawn from ``rng``."""
    import numpy as np
    from PIL import Image, ImageDraw

    scene = _background(rng)
    plain = scene.copy()
    draw = ImageDraw.Draw(scene)
    for placed in objects:
        if placed.label == "face":
            _paste_face(scene, placed, rng)
            continue
        colour = _ink(plain, placed.box, rng)
        if placed.label == "circle":
            draw.ellipse(tuple(placed.box[:4]), fill=colour)
        else:
            draw.polygon(_polygon(placed.label, *placed.centre, placed.size, placed.angle), fill=colour)
    pixels = np.asarray(scene, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(2.0, 9.0), pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
