"""The ``image`` example: images from a diffusion pipeline, scored by reproducing them."""
