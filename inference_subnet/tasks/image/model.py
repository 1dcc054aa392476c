"""The diffusion pipeline behind the ``image`` example, for miners and validators alike.

``examples.image_model`` names the pipeline: a hub id or a local path goes to
``DiffusionPipeline.from_pretrained`` unchanged (production, e.g. a text-to-image pipeline); the default,
``inference-subnet/tiny-diffusion``, is a 32x32 ``UNet2DModel`` with a DDIM scheduler, built from a seed into
the model cache on first use and loaded back through the same ``from_pretrained``. Its images are noise; the
reproduce-and-compare scoring is what a subnet does with a real model.

An unconditional pipeline (the tiny one) has no prompt input, so the prompt is folded into its noise seed:
the picture still depends on prompt and seed together, and a miner that ignores either is caught.
Sampling is deterministic (DDIM with ``eta=0``, a private generator per call); what varies between
machines is floating-point noise from the CPU thread count, which the image scorer tolerates.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import inspect
import io
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference_subnet.tasks.tiny import ModelLoader, example_settings, fill_parameters, stable_seed

log = logging.getLogger(__name__)

TINY_DIFFUSION = "inference-subnet/tiny-diffusion"
"""The default model id: built locally, never downloaded."""
_TINY_SEED = 7_000_001
_TINY_SIZE = 32

Image = NDArray[np.uint8]
"""An ``H x W x 3`` RGB image."""


def build_tiny_diffusion(directory: Path) -> None:
    """Write the tiny pipeline to ``directory`` with ``save_pretrained`` (under a second)."""
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    unet = UNet2DModel(
        sample_size=_TINY_SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    fill_parameters(unet, _TINY_SEED)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(directory)


PIPELINES = ModelLoader(TINY_DIFFUSION, "tiny-diffusion-v1", build_tiny_diffusion)


class ImageGenerator:
    """A loaded pipeline. Calls are serialised: a diffusers scheduler keeps per-call state."""

    def __init__(self, pipeline: Any, name: str) -> None:
        self.pipeline = pipeline
        self.name = name
        self.conditional = "prompt" in inspect.signature(pipeline.__call__).parameters
        unet = getattr(pipeline, "unet", None)
        size = getattr(getattr(unet, "config", None), "sample_size", None)
        self.native_size: int | None = size if isinstance(size, int) and not self.conditional else None
        """The only size an unconditional pipeline makes; ``None`` when the caller chooses."""
        self._lock = threading.Lock()

    def generate(self, prompt: str, *, seed: int, steps: int, width: int, height: int) -> Image:
        """The image for (prompt, seed, steps, size), as ``height x width x 3`` uint8."""
        import torch

        if self.native_size is not None and (width, height) != (self.native_size, self.native_size):
            side = self.native_size
            raise ValueError(f"model {self.name} makes {side}x{side} images only, not {width}x{height}")
        kwargs: dict[str, Any] = {"num_inference_steps": steps, "output_type": "np"}
        if self.conditional:
            kwargs.update(prompt=prompt, width=width, height=height)
            noise_seed = seed
        else:
            kwargs.update(batch_size=1, eta=0.0)
            noise_seed = stable_seed("image", prompt, seed)
        with self._lock, torch.inference_mode():
            result = self.pipeline(generator=torch.Generator().manual_seed(noise_seed), **kwargs)
        pixels = np.asarray(result.images[0], dtype=np.float32)
        return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def load_image_generator(model: str | None = None) -> ImageGenerator:
    """The pipeline for ``model`` (default: ``examples.image_model``), loaded once per process. Blocking:
    call it off the event loop."""
    name = model or example_settings().image_model

    def open_pipeline(location: str) -> ImageGenerator:
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        # Without accelerate, say so up front instead of letting diffusers warn on every load.
        pipeline = DiffusionPipeline.from_pretrained(
            location, low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None
        )
        pipeline.set_progress_bar_config(disable=True)
        log.info("loaded image pipeline %s", name)
        return ImageGenerator(pipeline, name)

    return PIPELINES.load(name, open_pipeline)


# -- the wire format: base64 PNG (lossless, so a validator compares exact pixels) -------------------------


def encode_png(image: Image) -> str:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class BadImage(ValueError):
    """A response's image is not a readable PNG of the requested size."""


def decode_png(data: str, *, width: int, height: int) -> Image:
    """The RGB pixels of a base64 PNG, checked to be ``width x height`` (a bomb's header is read, not its
    pixels, before the size check)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
        with PILImage.open(io.BytesIO(raw)) as image:
            if image.format != "PNG":
                raise BadImage(f"expected a PNG, got {image.format}")
            if image.size != (width, height):
                raise BadImage(f"expected {width}x{height}, got {image.size[0]}x{image.size[1]}")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise BadImage(f"not a readable PNG: {type(exc).__name__}") from None
