"""The OCR miner: the tesseract engine (:mod:`.reader`), checked once per process when the handler is built,
so a miner without it fails at start-up with the package to install, not on its first request. Reading runs
in worker threads (tesseract is a subprocess), never on the event loop, at most ``examples.ocr_concurrency``
at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inference_subnet.protocol.task import Handler
from inference_subnet.tasks.ocr.reader import reference_reader
from inference_subnet.tasks.ocr.task import OcrRequest, OcrResponse


def make_handler(options: dict[str, Any]) -> Handler:
    """The reference OCR miner: tesseract, at most ``examples.ocr_concurrency`` reads at a time."""
    from inference_subnet.settings import load_settings

    reader = reference_reader()
    slots = asyncio.Semaphore(load_settings().examples.ocr_concurrency)

    async def handle(request: OcrRequest) -> OcrResponse:
        async with slots:
            text = await asyncio.to_thread(reader.read, request.image)
        return OcrResponse(text=text)

    return handle
