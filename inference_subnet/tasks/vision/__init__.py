"""The object-recognition example: the validator composes scenes of shapes and faces with known boxes; the
miner finds them with OpenCV (a pretrained Haar face cascade and contour analysis).

Install with ``pip install 'inference-subnet[vision]'``.
"""

from inference_subnet.tasks.vision.task import Detection, VisionRequest, VisionResponse, VisionTask

__all__ = ["Detection", "VisionRequest", "VisionResponse", "VisionTask"]
