"""The record of weight attempts that every chain client keeps: one :class:`WeightAttempt` per call, kept in
a bounded history, so "weights silently stopped being set" is always visible (``/ready``, metrics)."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference_subnet.chain.types import ChainError, ChainTimeout, ChainUnavailable, WeightAttempt, WeightPath


@dataclass
class AttemptRecorder:
    """Builds the one :class:`WeightAttempt` of a ``set_weights`` call and keeps it in the client's history."""

    attempts: deque[WeightAttempt]
    netuid: int
    mechid: int
    uids: tuple[int, ...]
    digest: str
    block: int = 0
    path: WeightPath | None = None

    def _keep(self, **kwargs: Any) -> WeightAttempt:
        attempt = WeightAttempt(block=self.block, netuid=self.netuid, uids=self.uids, digest=self.digest,
                                path=self.path, mechid=self.mechid, **kwargs)
        self.attempts.append(attempt)
        return attempt

    def success(self, extrinsic_hash: str | None) -> WeightAttempt:
        return self._keep(outcome="success", extrinsic_hash=extrinsic_hash)

    def too_soon(self, ready_at_block: int | None, error: str | None = None) -> WeightAttempt:
        return self._keep(outcome="too_soon", ready_at_block=ready_at_block, error=error)

    def failed(self, exc: ChainError) -> WeightAttempt:
        outcome = "error" if isinstance(exc, (ChainTimeout, ChainUnavailable)) else "rejected"
        name = f" [{exc.chain_error}]" if exc.chain_error and exc.chain_error not in str(exc) else ""
        return self._keep(outcome=outcome, error=f"{exc}{name}")


def float_digest(uids: Sequence[int], weights: Sequence[float]) -> str:
    """Fingerprint of a request that never reached u16 form (refused before conversion)."""
    payload = json.dumps([list(uids), [float(w) for w in weights]], separators=(",", ":"))
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
