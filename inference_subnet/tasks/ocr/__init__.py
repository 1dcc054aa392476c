"""The OCR example: the validator renders text it chose, a tesseract miner reads it back.

Install with ``pip install 'inference-subnet[ocr]'`` plus the system's tesseract (Debian: ``tesseract-ocr
tesseract-ocr-eng``). The task module imports no imaging library, so a validator that only routes organic
traffic loads it cheaply.
"""

from inference_subnet.tasks.ocr.task import OcrRequest, OcrResponse, OcrTask

__all__ = ["OcrRequest", "OcrResponse", "OcrTask"]
