"""Will this weight set succeed, and by which call? Decided from chain state before anything is signed.

A set the chain refuses costs a fee and, worse, looks like success to a loop that does not read the
events; a timelocked commit from a hotkey without a permit is even accepted and then dropped at reveal.
So every rule the runtime applies to a weight set is checked here first, in the runtime's own order,
and the call is chosen from the subnet's hyperparameters and the calls the runtime declares.

"Too soon" (``WeightsSetRateLimit`` against the caller's ``LastUpdate``) is not a problem: it is the
normal state between two sets, reported with the block at which a set becomes possible.

Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference_subnet.chain.capabilities import Capabilities
from inference_subnet.chain.types import (
    ChainError,
    Hyperparameters,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    WeightPath,
    WeightVecTooShort,
)

__all__ = ["Preflight", "choose_path", "preflight"]

MODULE = "SubtensorModule"
_PLAIN = ("set_weights", "set_mechanism_weights")


@dataclass(frozen=True, slots=True)
class Preflight:
    """The verdict on one intended weight set."""

    path: WeightPath | None
    """The call to submit; ``None`` when the runtime offers none for this subnet's settings."""
    too_soon: bool
    """The rate limit has not elapsed since the caller's last set (an expected outcome)."""
    ready_at_block: int | None
    """When ``too_soon``: the first head block from which a submitted set is accepted. ``None`` otherwise."""
    problem: ChainError | None
    """Why the chain would refuse this set, with the runtime's error name; ``None`` if it would not."""

    @property
    def ok(self) -> bool:
        """Submit now: no problem, not too soon, and a call to submit it with."""
        return self.problem is None and not self.too_soon and self.path is not None

    def raise_for_problem(self) -> None:
        if self.problem is not None:
            raise self.problem

    def error(self) -> ChainError | None:
        """The problem, else a :class:`RateLimited` when too soon, else ``None`` (for callers that raise)."""
        if self.problem is not None:
            return self.problem
        if self.too_soon:
            return RateLimited(
                f"weights were set too recently; a set is possible at block {self.ready_at_block}",
                chain_error="SettingWeightsTooFast" if self.path in _PLAIN else "CommittingWeightsTooFast",
                ready_at_block=self.ready_at_block,
            )
        return None


def choose_path(hyper: Hyperparameters, capabilities: Capabilities, mechid: int = 0) -> WeightPath | None:
    """The call the chain expects for this subnet: plain when commit-reveal is off, else a commit.

    Timelocked commits (revealed by the chain from drand) are preferred to hash commits, which need a
    second extrinsic in the reveal window; hash commits are used only where a runtime has nothing newer.
    Mechanism calls are used for ``mechid > 0``, and for mechanism 0 only if the plain call is missing.
    """
    def has(name: str) -> bool:
        return capabilities.has_call(MODULE, name)

    if not hyper.commit_reveal_enabled:
        if mechid == 0 and has("set_weights"):
            return "set_weights"
        return "set_mechanism_weights" if has("set_mechanism_weights") else None
    if mechid == 0 and has("commit_timelocked_weights"):
        return "commit_timelocked_weights"
    if has("commit_timelocked_mechanism_weights"):
        return "commit_timelocked_mechanism_weights"
    if mechid == 0 and has("commit_weights") and has("reveal_weights"):
        return "commit_weights"
    return None


def preflight(
    *,
    hyper: Hyperparameters,
    block: int,
    caller_uid: int | None,
    caller_permit: bool,
    last_update: int,
    uids: Sequence[int],
    n_neurons: int,
    capabilities: Capabilities,
    mechid: int = 0,
    version_key: int | None = None,
) -> Preflight:
    """Check an intended set against the runtime's rules.

    ``block`` is the chain head: a set submitted now executes in ``block + 1``, and ``ready_at_block``
    is the head from which a submitted set passes the rate limit. ``last_update`` is the caller's
    ``LastUpdate`` for this mechanism (0: never set). ``version_key``
    is what will be submitted; ``None`` means the subnet's own ``weights_version``, which always passes.
    ``caller_permit`` should be true for a subnet owner on runtimes that exempt owners.
    """
    path = choose_path(hyper, capabilities, mechid)
    uid_list = [int(u) for u in uids]
    if caller_uid is None:
        return Preflight(path, False, None, NotRegistered(
            f"the hotkey is not registered on subnet {hyper.netuid}",
            chain_error="HotKeyNotRegisteredInSubNet"))

    # The extrinsic executes in the next block; the runtime compares that block with LastUpdate.
    too_soon = last_update > 0 and block + 1 - last_update < hyper.weights_rate_limit
    ready_at = last_update + hyper.weights_rate_limit - 1 if too_soon else None
    problem = _problem(hyper, path, caller_uid, caller_permit, uid_list, n_neurons, mechid, version_key)
    return Preflight(path, too_soon, ready_at, problem)


def _problem(
    hyper: Hyperparameters,
    path: WeightPath | None,
    caller_uid: int,
    caller_permit: bool,
    uids: list[int],
    n_neurons: int,
    mechid: int,
    version_key: int | None,
) -> ChainError | None:
    netuid = hyper.netuid
    if path is None:
        mode = "commit-reveal" if hyper.commit_reveal_enabled else "plain"
        return ChainError(
            f"the runtime has no call for {mode} weights on subnet {netuid} mechanism {mechid}"
        )
    if version_key is not None and hyper.weights_version and version_key < hyper.weights_version:
        return InvalidWeights(
            f"version key {version_key} is older than the subnet's {hyper.weights_version}",
            chain_error="IncorrectWeightVersionKey",
        )
    self_weight = uids == [caller_uid]
    if not caller_permit and not self_weight:
        return NoValidatorPermit(
            f"uid {caller_uid} has no validator permit on subnet {netuid}", chain_error="NeuronNoValidatorPermit"
        )
    if len(uids) > n_neurons:
        return InvalidWeights(
            f"{len(uids)} weights for a subnet of {n_neurons} uids", chain_error="UidsLengthExceedUidsInSubNet"
        )
    if len(set(uids)) != len(uids):
        return InvalidWeights("duplicate uids in the weight vector", chain_error="DuplicateUids")
    unknown = sorted({u for u in uids if not 0 <= u < n_neurons})
    if unknown:
        return InvalidWeights(
            f"uids not on subnet {netuid} (it has {n_neurons}): {unknown[:10]}",
            chain_error="UidVecContainInvalidOne",
        )
    required = min(hyper.min_allowed_weights, n_neurons)
    if not self_weight and len(uids) < required:
        return WeightVecTooShort(
            f"{len(uids)} weights; subnet {netuid} requires at least {required}",
            chain_error="WeightVecLengthIsLow",
        )
    return None
