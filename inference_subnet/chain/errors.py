"""Turn what a subtensor node says into the typed errors of :mod:`inference_subnet.chain.types`.

A node refuses an extrinsic in two places, and operators see both:

- in the transaction pool, before inclusion (the runtime's transaction extension validates it): the JSON-RPC
  error 1010 carries ``{"invalid": {"custom": N}}`` (or ``"Custom error: N"``), where ``N`` is subtensor's
  ``CustomTransactionError`` code;
- in the block, as an ``ExtrinsicFailed`` event with a module error such as ``SettingWeightsTooFast``.

Both end up as one exception class per *decision a caller makes* (retry later, register first, fix the
weights...), with the chain's own error name kept in ``chain_error`` so logs and alerts stay searchable.
This module does no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from inference_subnet.chain.types import (
    ChainError,
    InvalidIp,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
    WeightVecTooShort,
)

#: Runtime module error name -> the typed exception a caller acts on.
MODULE_ERRORS: Mapping[str, type[ChainError]] = {
    # registration
    "NotRegistered": NotRegistered,
    "HotKeyNotRegisteredInSubNet": NotRegistered,
    "HotKeyNotRegisteredInNetwork": NotRegistered,
    "HotKeyAccountNotExists": NotRegistered,
    "NonAssociatedColdKey": NotRegistered,
    # permits and stake
    "NeuronNoValidatorPermit": NoValidatorPermit,
    "NotEnoughStakeToSetWeights": NoValidatorPermit,
    # rate limits: expected outcomes, retried later
    "SettingWeightsTooFast": RateLimited,
    "CommittingWeightsTooFast": RateLimited,
    "ServingRateLimitExceeded": RateLimited,
    "TxRateLimitExceeded": RateLimited,
    "NetworkTxRateLimitExceeded": RateLimited,
    "StakingRateLimitExceeded": RateLimited,
    "StakingOperationRateLimitExceeded": RateLimited,
    "TooManyRegistrationsThisBlock": RateLimited,
    "TooManyRegistrationsThisInterval": RateLimited,
    "TooManyUnrevealedCommits": RateLimited,
    "RevealTooEarly": RateLimited,
    # axon
    "InvalidIpAddress": InvalidIp,
    "InvalidIpType": InvalidIp,
    "InvalidPort": InvalidIp,
    # weights
    "WeightVecLengthIsLow": WeightVecTooShort,
    "IncorrectWeightVersionKey": InvalidWeights,
    "UidVecContainInvalidOne": InvalidWeights,
    "MaxWeightExceeded": InvalidWeights,
    "WeightVecNotEqualSize": InvalidWeights,
    "DuplicateUids": InvalidWeights,
    "UidsLengthExceedUidsInSubNet": InvalidWeights,
    "InputLengthsUnequal": InvalidWeights,
    "NoWeightsCommitFound": InvalidWeights,
    "InvalidRevealCommitHashNotMatch": InvalidWeights,
    "ExpiredWeightCommit": InvalidWeights,
    "CommitRevealEnabled": InvalidWeights,
    "CommitRevealDisabled": InvalidWeights,
    "IncorrectCommitRevealVersion": InvalidWeights,
    "InvalidRevealRound": InvalidWeights,
    "TooManyUIDsPerMechanism": InvalidWeights,
    # subnet
    "SubNetworkDoesNotExist": UnknownSubnet,
    "SubnetNotExists": UnknownSubnet,
    "MechanismDoesNotExist": UnknownSubnet,
}

#: subtensor's ``CustomTransactionError`` codes (transaction-pool rejections) -> (name, exception).
CUSTOM_TX_ERRORS: Mapping[int, tuple[str, type[ChainError]]] = {
    0: ("ColdkeyInSwapSchedule", ChainError),
    1: ("StakeAmountTooLow", ChainError),
    2: ("BalanceTooLow", ChainError),
    3: ("SubnetDoesntExist", UnknownSubnet),
    4: ("HotkeyAccountDoesntExist", NotRegistered),
    5: ("NotEnoughStakeToWithdraw", ChainError),
    6: ("RateLimitExceeded", RateLimited),
    7: ("InsufficientLiquidity", ChainError),
    8: ("SlippageTooHigh", ChainError),
    9: ("TransferDisallowed", ChainError),
    10: ("HotKeyNotRegisteredInNetwork", NotRegistered),
    11: ("InvalidIpAddress", InvalidIp),
    12: ("ServingRateLimitExceeded", RateLimited),
    13: ("InvalidPort", InvalidIp),
    14: ("TransactionPriorityTooLow", RateLimited),
    255: ("BadRequest", ChainError),
}

#: What an operator should read, per exception class (the chain's name and docs are appended).
_HINTS: Mapping[type[ChainError], str] = {
    NotRegistered: "the hotkey is not registered on this subnet",
    NoValidatorPermit: "the hotkey has no validator permit on this subnet (stake more, wait for the next epoch)",
    RateLimited: "rate limited: too soon since the last call of this kind",
    InvalidIp: "the chain refused the axon address",
    WeightVecTooShort: "fewer weights than the subnet's minimum allowed",
    InvalidWeights: "the chain refused these weights",
    UnknownSubnet: "the subnet does not exist",
}

_CUSTOM = re.compile(r"""(?i)custom(?:\s*error)?["']?\s*[:=]\s*(\d+)""")
_POOL_KINDS = ("payment", "stale", "future", "badProof", "exhaustsResources", "ancientBirthBlock", "badMandatory")


def from_module_error(name: str, docs: str | list[str] | None = None) -> ChainError:
    """The typed exception for a runtime module error (``ExtrinsicFailed``), keeping its name."""
    cls = MODULE_ERRORS.get(name, ChainError)
    return _build(cls, name, _join(docs))


def from_custom_code(code: int) -> ChainError:
    """The typed exception for a transaction-pool rejection with subtensor's custom code ``code``."""
    name, cls = CUSTOM_TX_ERRORS.get(code, (f"CustomError{code}", ChainError))
    return _build(cls, name, f"rejected by the transaction pool (custom error {code})")


def from_dispatch_error(error: Mapping[str, Any] | None) -> ChainError:
    """The typed exception for the ``error_message`` dict async-substrate-interface gives a failed receipt
    (``{"type": "Module", "name": ..., "docs": [...]}``, or a system error)."""
    if not error:
        return ChainError("extrinsic failed without an error message")
    name = str(error.get("name") or error.get("type") or "Unknown")
    if error.get("type") == "Module":
        return from_module_error(name, error.get("docs"))
    return _build(ChainError, name, _join(error.get("docs")))


def from_request_error(exc: BaseException) -> ChainError:
    """The typed exception for a JSON-RPC error raised while submitting (pool rejection, bad extrinsic)."""
    text = str(exc)
    if "priority is too low" in text.lower() or "toolowpriority" in text.lower().replace(" ", ""):
        return _build(ChainError, "PriorityTooLow", "another transaction with the same nonce is pending")
    if match := _CUSTOM.search(text):
        return from_custom_code(int(match.group(1)))
    for kind in _POOL_KINDS:
        if re.search(rf"""["']?{kind}["']?""", text, re.IGNORECASE):
            return _build(ChainError, f"Invalid{kind[0].upper()}{kind[1:]}", _pool_hint(kind))
    module = _module_error_in(text)
    if module is not None:
        return from_module_error(*module)
    return ChainError(f"chain request failed: {text[:500]}")


def _module_error_in(text: str) -> tuple[str, str] | None:
    """A module error named inside an RPC error text (dry-run style messages), if any."""
    for name in MODULE_ERRORS:
        if re.search(rf"\b{name}\b", text):
            return name, ""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"], _join(data.get("docs"))
    return None


def _pool_hint(kind: str) -> str:
    return {
        "payment": "the signing account cannot pay the transaction fee",
        "stale": "the transaction nonce is already used (another process signs with this key?)",
        "future": "the transaction nonce is ahead of the chain (a previous transaction was dropped)",
        "badProof": "bad signature (wrong network or genesis?)",
    }.get(kind, f"rejected by the transaction pool ({kind})")


def _build(cls: type[ChainError], name: str, detail: str) -> ChainError:
    hint = _HINTS.get(cls, "chain error")
    message = f"{hint} [{name}]" + (f": {detail}" if detail else "")
    return cls(message, chain_error=name)


def _join(docs: str | list[str] | None) -> str:
    if docs is None:
        return ""
    if isinstance(docs, str):
        return docs.strip()
    return " ".join(str(line).strip() for line in docs).strip()
