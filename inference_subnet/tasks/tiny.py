"""What the model-backed examples share: their settings, the loading of their models (once per process,
in the background for a miner), the deterministic build of the small built-in models, and the speed term
of reproduce-and-compare scoring.

The built-in models (``inference-subnet/tiny-*``) exist so that every example runs where no weights can be
downloaded. They are built from a seed into ``examples.model_cache`` on first use, then loaded back with the
library's own ``from_pretrained``, exactly as a production model id or path would be. Parameters are drawn
with numpy's PCG64 generator rather than torch's, so a miner and a validator on different torch builds
still build the very same weights.

Nothing here imports torch at module import time: a gateway or validator without torch can still load the
example tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from inference_subnet.scorers import latency_quality
from inference_subnet.settings import ExamplesSettings, load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_COMPLETE = ".complete"


def example_settings() -> ExamplesSettings:
    """The ``examples`` section, read the way every process reads its settings (file, environment)."""
    return load_settings().examples


def cache_root(settings: ExamplesSettings) -> Path:
    """The cache directory, expanded and created; refused inside site-packages, which must stay read-only."""
    root = settings.model_cache.expanduser().resolve()
    for key in ("purelib", "platlib"):
        packages = Path(sysconfig.get_paths()[key]).resolve()
        if root == packages or packages in root.parents:
            raise ValueError(f"examples.model_cache must not be inside site-packages ({packages}): {root}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name``, built by ``build(directory)`` if missing. A file lock keeps parallel processes (several
    miner workers starting together) from building it twice; the build goes to a temporary directory that
    is renamed into place only when complete, so a crash never leaves a half-written model behind."""
    from filelock import FileLock

    target = root / name
    if (target / _COMPLETE).exists():
        return target
    with FileLock(str(root / f"{name}.lock"), timeout=600):
        if (target / _COMPLETE).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            build(staging)
            (staging / _COMPLETE).write_text("built\n")
            if target.exists():  # a leftover without its marker: never complete, safe to replace
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("built %s in %s", name, target)
    return target


def fill_parameters(module: Any, seed: int, *, std: float | None = None) -> None:
    """Overwrite every parameter of a torch module with values drawn from numpy's PCG64 with ``seed``:
    normalisation scales 1, biases 0, other weights normal with std ``std`` (default ``1/sqrt(fan_in)``).
    Parameters are visited by name, so the result depends only on the architecture and the seed."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
            lowered = name.lower()
            if name.endswith("bias"):
                values = np.zeros(param.shape, dtype=np.float32)
            elif param.dim() == 1 and any(mark in lowered for mark in ("norm", "ln_")):
                values = np.ones(param.shape, dtype=np.float32)
            else:
                fan_in = int(np.prod(param.shape[1:])) if param.dim() > 1 else int(param.shape[0])
                scale = std if std is not None else 1.0 / max(1.0, fan_in) ** 0.5
                values = rng.normal(0.0, scale, size=tuple(param.shape)).astype(np.float32)
            param.copy_(torch.from_numpy(values))


def set_threads(threads: int) -> None:
    """Pin torch's CPU threads (``examples.threads``); 0 leaves torch's default."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values, equal in every process (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class ProcessCache:
    """Loaded models by key, once per process: a second caller for the same key waits for the first
    load instead of loading again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._loaded: dict[str, Any] = {}

    def get(self, key: str, load: Callable[[], T]) -> T:
        if key in self._loaded:
            return self._loaded[key]  # type: ignore[no-any-return]
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            if key not in self._loaded:
                self._loaded[key] = load()
        return self._loaded[key]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ModelLoader:
    """How one example finds and loads its model: a production hub id or local path goes to the library's
    ``from_pretrained`` unchanged; the built-in ``tiny_id`` is built into ``examples.model_cache`` first.
    Either way a model is loaded once per process."""

    tiny_id: str
    tiny_folder: str
    """The built model's folder in the cache; a new name whenever the build changes."""
    build_tiny: Callable[[Path], None]
    _loaded: ProcessCache = field(default_factory=ProcessCache, init=False, compare=False, repr=False)

    def location(self, model: str, cache: Path | None = None) -> str:
        """What ``from_pretrained`` gets for ``model``: the built folder in ``cache`` (default: the configured
        model cache) for the tiny default, anything else unchanged."""
        if model != self.tiny_id:
            return model
        return str(build_once(cache or cache_root(example_settings()), self.tiny_folder, self.build_tiny))

    def load(self, model: str, open_model: Callable[[str], T]) -> T:
        """``open_model(location)`` for ``model``, once per process, with torch's threads pinned first
        (``examples.threads``). Blocking: call it off the event loop."""

        def load() -> T:
            set_threads(example_settings().threads)
            return open_model(self.location(model))

        return self._loaded.get(model, load)


_LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isn-model-load")


class Preload(Generic[T]):
    """A model a miner handler needs, loaded once per process in a background thread.

    :meth:`ready_if_serving` is what a handler factory calls. Inside a running event loop (a miner worker
    building its app, before it listens) it waits for the load, so a worker opens its port only once it can
    answer: no request queues behind the load or times out during it, and readiness checks mean "ready".
    Outside one (the CLI checking a task before it starts workers) nothing loads; :meth:`get` loads on
    first use. Handlers await :meth:`get`, which never blocks the loop.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._future: Future[T] | None = None
        self._lock = threading.Lock()

    def start(self) -> Future[T]:
        with self._lock:
            if self._future is None:
                self._future = _LOADER.submit(self._load)
            return self._future

    def ready_if_serving(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.start().result()

    async def get(self) -> T:
        return await asyncio.wrap_future(self.start())


def preload_model(options: Mapping[str, Any], load: Callable[[str | None], T]) -> Preload[T]:
    """A model-backed handler's model: ``load(options["model"])`` (``None``: the configured model), loaded
    before the worker listens, so the first request does not wait for it."""
    model: str | None = options.get("model")
    preload = Preload(lambda: load(model))
    preload.ready_if_serving()
    return preload


SPEED_SHARE = 0.2
"""How much of a reproduced answer's quality depends on speed: a correct answer at the timeout keeps
1 - SPEED_SHARE of it."""


def speed_scaled(agreement: float, seconds: float, timeout: float) -> float:
    """``agreement`` with the reference, scaled a little by speed: whole up to a quarter of the timeout,
    ``1 - SPEED_SHARE`` of it at the timeout. Speed only scales, so a fast wrong answer is still worth
    nothing."""
    speed = latency_quality(seconds, target=timeout / 4, timeout=timeout)
    return agreement * (1.0 - SPEED_SHARE + SPEED_SHARE * speed)
