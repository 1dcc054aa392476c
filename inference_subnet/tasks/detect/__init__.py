"""The AI-content detection example: the validator mixes human documentation with n-gram and LLM text;
the miner scores each text with a classifier on sentence embeddings trained at start-up.

Install with ``pip install 'inference-subnet[detect]'`` (the validator also uses the ``llm`` example's
model to write machine text: ``pip install 'inference-subnet[detect,llm]'``).
"""

from inference_subnet.tasks.detect.task import DetectRequest, DetectResponse, DetectTask

__all__ = ["DetectRequest", "DetectResponse", "DetectTask"]
