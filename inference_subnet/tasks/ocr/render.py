"""The validator's side of OCR: text it chooses, rendered into a noisy, slightly rotated image.

Words are made up (syllables) and digit groups, so neither a dictionary nor a language model can fill in
what the pixels do not show: a miner has to read. Fonts are the TrueType fonts installed on the machine,
found at run time (DejaVu on Debian), never shipped with the code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
_SKIP = ("ExtraLight", "Math", "Symbol", "Emoji", "Dingbat")
"""Fonts that would make the text unreadable or draw no Latin letters."""

# fmt: off
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "st", "tr")
# fmt: on
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "s", "t", "m", "nd", "st", "x")

MAX_WIDTH = 480
"""Widest line of text in pixels; images stay small enough for a CPU miner and a 1 MiB body."""


class NoFontError(RuntimeError):
    """No usable TrueType font on this machine."""


@lru_cache(maxsize=1)
def find_fonts() -> tuple[Path, ...]:
    """Installed TrueType fonts suitable for Latin text, sorted (the same order in every process)."""
    found = sorted(
        path
        for folder in FONT_DIRS
        if folder.is_dir()
        for path in folder.rglob("*.ttf")
        if not any(skip in path.name for skip in _SKIP)
    )
    if not found:
        raise NoFontError(
            f"no TrueType font found under {', '.join(map(str, FONT_DIRS))}: install one "
            "(Debian: apt-get install fonts-dejavu-core)"
        )
    return tuple(found)


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word of one to three syllables, sometimes capitalised."""
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 3)))
    word += rng.choice(_CODAS)
    return word.capitalize() if rng.random() < 0.25 else word


def token(rng: random.Random) -> str:
    """A word, or (one time in four) a group of three to five digits."""
    if rng.random() < 0.25:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 5)))
    return pseudo_word(rng)


@dataclass(frozen=True)
class Page:
    """What the validator renders: the text (the truth) and how it looks."""

    lines: tuple[str, ...]
    font: Path
    size: int
    ink: int
    paper: int
    noise: float
    angle: float
    blur: float

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def write(rng: random.Random) -> tuple[str, ...]:
    """The text of a page: two or three lines of 12 to 30 characters. It depends on ``rng`` alone (no font
    metrics), so any validator process recomputes it from the same seed."""
    lines = []
    for _ in range(rng.randint(2, 3)):
        target = rng.randint(12, 30)
        words = [token(rng)]
        while len(" ".join(words)) < target and len(words) < 5:
            words.append(token(rng))
        lines.append(" ".join(words))
    return tuple(lines)


def compose(rng: random.Random) -> Page:
    """The text from :func:`write`, then its looks: a font and a size that fits :data:`MAX_WIDTH`."""
    from PIL import ImageFont

    lines = write(rng)
    fonts = find_fonts()
    font_path = fonts[rng.randrange(len(fonts))]
    size = rng.randint(15, 30)
    while (
        size > 10
        and max(ImageFont.truetype(str(font_path), size).getlength(line) for line in lines) > MAX_WIDTH
    ):
        size -= 1
    return Page(
        lines=lines,
        font=font_path,
        size=size,
        ink=rng.randint(0, 70),
        paper=rng.randint(190, 250),
        noise=rng.uniform(4.0, 24.0),
        angle=rng.uniform(-4.0, 4.0),
        blur=rng.choice((0.0, 0.0, 0.6, 1.0)),
    )


def render(page: Page, rng: random.Random) -> Image.Image:
    """``page`` drawn in grey levels, rotated, blurred and with Gaussian noise from ``rng``."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(page.font), page.size)
    spacing = page.size // 3
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
        (0, 0), page.text, font=font, spacing=spacing
    )
    margin = page.size
    image = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), page.paper)
    ImageDraw.Draw(image).multiline_text(
        (margin - left, margin - top), page.text, font=font, fill=page.ink, spacing=spacing
    )
    image = image.rotate(page.angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=page.paper)
    if page.blur:
        image = image.filter(ImageFilter.GaussianBlur(page.blur))
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, page.noise, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
