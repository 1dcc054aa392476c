"""The OCR engine: tesseract through pytesseract, with its LSTM models from the system.

The "model" is the tesseract binary and its trained data (Debian ``tesseract-ocr`` and
``tesseract-ocr-eng``). :meth:`TesseractReader.load` checks both, so a process without them fails when it
loads the engine, with the package to install, not on its first image. The miner reads with it and the
validator reads organic requests with it (their yardstick).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from inference_subnet.tasks.imaging import decode_png

if TYPE_CHECKING:
    from PIL import Image


class TesseractUnavailable(LookupError):
    """pytesseract, the tesseract binary or a language's trained data is missing."""


@dataclass(frozen=True)
class TesseractReader:
    """One configured tesseract: the command and the languages it reads."""

    command: str
    languages: str

    @classmethod
    def load(cls, command: str, languages: str) -> TesseractReader:
        """Check the engine and its languages now, with the fix in the error when something is missing."""
        try:
            import pytesseract
        except ImportError as exc:
            raise TesseractUnavailable(
                "the ocr example needs pytesseract: pip install 'inference-subnet[ocr]'"
            ) from exc
        pytesseract.pytesseract.tesseract_cmd = command
        try:
            pytesseract.get_tesseract_version()
            installed = set(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError) as exc:
            raise TesseractUnavailable(
                f"tesseract not found at {command!r} (examples.ocr_tesseract_cmd): "
                "apt-get install tesseract-ocr tesseract-ocr-eng"
            ) from exc
        missing = [lang for lang in languages.split("+") if lang not in installed]
        if missing:
            raise TesseractUnavailable(
                f"tesseract has no trained data for {', '.join(missing)} (examples.ocr_languages); installed: "
                f"{', '.join(sorted(installed)) or 'none'}; Debian: apt-get install tesseract-ocr-{missing[0]}"
            )
        # One thread per tesseract process: the miner runs several at once and the cores are shared.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        return cls(command=command, languages=languages)

    def read(self, image_b64: str) -> str:
        """The text in a base64 PNG (blocking: call it from a worker thread).

        A 3x3 median filter first: speckle noise otherwise breaks tesseract's page segmentation and it
        finds no text at all. When it still finds none, the unfiltered image gets a second chance."""
        from PIL import ImageFilter

        image = decode_png(image_b64).convert("L")
        text = self._tesseract(image.filter(ImageFilter.MedianFilter(3)))
        return text or self._tesseract(image)

    def _tesseract(self, image: Image.Image) -> str:
        import pytesseract

        pytesseract.pytesseract.tesseract_cmd = self.command
        # psm 6: one uniform block of text, which is what a line-wrapped snippet is.
        return pytesseract.image_to_string(image, lang=self.languages, config="--psm 6").strip()


@lru_cache(maxsize=1)
def reference_reader() -> TesseractReader:
    """This process's reader, configured by ``examples.ocr_*`` (loaded once)."""
    from inference_subnet.settings import load_settings

    examples = load_settings().examples
    return TesseractReader.load(examples.ocr_tesseract_cmd, examples.ocr_languages)
