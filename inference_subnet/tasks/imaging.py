"""Images on the wire: base64 PNG inside JSON, checked before any decoder sees more than a header.

The OCR and vision examples send one small image per request. A request is checked by its model, so a
miner or gateway rejects a bad image with a 422 naming the problem (not base64, not a PNG, too large)
instead of failing inside a handler; the pixel cap also keeps a decompression bomb out.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

if TYPE_CHECKING:
    from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 2048
"""Largest width or height accepted, in pixels."""
MAX_B64_CHARS = 1_000_000
"""Largest base64 string accepted: keeps a request under the default 1 MiB body limit of miners."""


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header, without decoding it; ``ValueError`` when it is no PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_png_b64(value: str) -> str:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image must be base64 (standard alphabet, padded)") from None
    width, height = png_size(data)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"image is {width}x{height}; each side must be 1..{MAX_SIDE} pixels")
    return value


PngBase64 = Annotated[
    str,
    Field(max_length=MAX_B64_CHARS, description="A PNG image, base64-encoded."),
    AfterValidator(_check_png_b64),
]
"""A request field holding one PNG image as base64, validated on arrival."""


def encode_png(image: Image.Image) -> str:
    """``image`` as base64 PNG (maximum compression: requests travel more often than they are made)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(value: str) -> Image.Image:
    """A checked base64 PNG (see :data:`PngBase64`) as a loaded PIL image."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(value)))
    image.load()
    return image
