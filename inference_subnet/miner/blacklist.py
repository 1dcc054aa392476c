"""Who may call this miner: a pure decision from the metagraph, made before any signature work.

Checking the claimed hotkey against the full metagraph is a dict lookup; verifying a signature is the most
expensive step of a request. Refusing unknown callers first keeps floods from unregistered keys cheap. The
claim is not trusted yet: a caller that passes here still has to prove the hotkey with its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inference_subnet.chain.types import Metagraph

RefusalCode = Literal["not_registered", "no_validator_permit", "low_stake"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a caller is refused; ``reason`` is safe to send back."""

    code: RefusalCode
    reason: str


def check_caller(
    metagraph: Metagraph,
    hotkey: str,
    *,
    require_validator_permit: bool = True,
    min_stake: float = 0.0,
) -> Refusal | None:
    """``None`` when the hotkey may call; otherwise the first rule it breaks."""
    neuron = metagraph.by_hotkey.get(hotkey)
    if neuron is None:
        return Refusal("not_registered", f"hotkey is not registered on subnet {metagraph.netuid}")
    if require_validator_permit and not neuron.validator_permit:
        return Refusal("no_validator_permit", "hotkey has no validator permit")
    if neuron.stake < min_stake:
        return Refusal("low_stake", f"stake {neuron.stake:g} is below the minimum {min_stake:g}")
    return None
