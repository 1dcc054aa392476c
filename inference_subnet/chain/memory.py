"""A whole subtensor, in memory: the ``ChainClient`` for unit tests of other packages and the zero-setup demo.

It applies the rules the runtime applies, through the same code the Substrate client uses before it
submits (:func:`preflight`, :func:`convert_weights`, :func:`hash_commit`), so a test that passes here
fails here for the same reasons it would on chain: unregistered hotkey, no validator permit, rate limit
(a ``too_soon`` outcome, not an error), too few weights, commit-reveal with the reveal after the period.

What it simplifies, on purpose:
- Every extrinsic is included in a new block at once (like the dev chain, which builds a block per
  transaction). ``advance(n)`` builds empty blocks.
- Stake and validator permits are what the test sets (``register``, ``set_stake``, ``set_validator_permit``);
  no emission or epoch scoring runs.
- Timelocked commits are kept in clear and applied at the first block of the reveal epoch, where the
  runtime would decrypt them; nothing is encrypted.
- Epochs follow the legacy schedule: epoch index ``(block + netuid + 1) // (tempo + 1)``.

Use::

    chain = MemoryChainClient()
    chain.create_subnet(1, weights_rate_limit=100)
    chain.register(1, validator_hotkey, coldkey, stake=1000.0, validator_permit=True)
    chain.register(1, miner_hotkey, coldkey)
    attempt = await chain.set_weights(validator_hotkey, 1, [1], [1.0])  # outcome "success"
    chain.weights(1)  # {0: {1: 1.0}}
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from bittensor_wallet import Keypair

from inference_subnet.chain.attempts import AttemptRecorder, float_digest
from inference_subnet.chain.capabilities import Capabilities
from inference_subnet.chain.commit import PendingReveal, epoch_index, hash_commit, make_salt, reveal_window
from inference_subnet.chain.preflight import preflight
from inference_subnet.chain.types import (
    AxonInfo,
    ChainError,
    ExtrinsicReceipt,
    Hyperparameters,
    InvalidWeights,
    Metagraph,
    Neuron,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
    WeightAttempt,
    WeightPath,
    WeightVecTooShort,
    axon_endpoint,
)
from inference_subnet.chain.weights import (
    convert_weights,
    limit_to_u16,
    weights_digest,
    within_max_weight_limit,
)

__all__ = ["CURRENT_RUNTIME", "DEFAULT_HYPERPARAMETERS", "MemoryChainClient"]

MODULE = "SubtensorModule"
CURRENT_RUNTIME = Capabilities.of(
    [f"{MODULE}.{name}" for name in (
        "set_weights", "set_mechanism_weights", "commit_weights", "reveal_weights", "commit_mechanism_weights",
        "reveal_mechanism_weights", "commit_timelocked_weights", "commit_timelocked_mechanism_weights",
        "serve_axon", "burned_register", "add_stake",
    )],
    ["SubnetInfoRuntimeApi.get_metagraph", "SubnetInfoRuntimeApi.get_selective_metagraph"],
)
"""What a current runtime offers; pass another :class:`Capabilities` to play an older one."""

DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "tempo": 360,
    "weights_rate_limit": 100,
    "max_weights_limit": 1.0,
    "min_allowed_weights": 1,
    "commit_reveal_enabled": False,
    "commit_reveal_period": 1,
    "weights_version": 0,
    "immunity_period": 4096,
    "serving_rate_limit": 50,
    "activity_cutoff": 5000,
    "max_validators": 64,
}
"""Mainnet's shapes, except commit-reveal (off, so weights read back at once) and one weight minimum."""

MAX_UNREVEALED_COMMITS = 10
_PLAIN: tuple[WeightPath, ...] = ("set_weights", "set_mechanism_weights")
_TIMELOCKED: tuple[WeightPath, ...] = ("commit_timelocked_weights", "commit_timelocked_mechanism_weights")


@dataclass
class _Slot:
    hotkey: str
    coldkey: str
    stake: float
    validator_permit: bool
    registration_block: int
    axon: AxonInfo | None = None
    axon_block: int = 0


@dataclass(frozen=True)
class _Timelocked:
    hotkey: str
    mechid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    version_key: int
    reveal_epoch: int


@dataclass(frozen=True)
class _HashCommit:
    hash: str
    commit_block: int
    first_block: int
    last_block: int


@dataclass
class _Subnet:
    hyper: Hyperparameters
    max_uids: int
    mechanisms: int
    slots: list[_Slot] = field(default_factory=list)
    weights: dict[int, dict[int, list[tuple[int, int]]]] = field(default_factory=dict)
    last_update: dict[int, dict[int, int]] = field(default_factory=dict)
    hash_commits: dict[tuple[str, int], deque[_HashCommit]] = field(default_factory=dict)
    timelocked: list[_Timelocked] = field(default_factory=list)

    def uid_of(self, hotkey: str) -> int | None:
        for uid, slot in enumerate(self.slots):
            if slot.hotkey == hotkey:
                return uid
        return None


class MemoryChainClient:
    """A subtensor in memory behind the :class:`~inference_subnet.chain.types.ChainClient` interface."""

    def __init__(
        self,
        *,
        capabilities: Capabilities = CURRENT_RUNTIME,
        start_block: int = 1,
        max_attempts_kept: int = 10_000,
    ) -> None:
        self.capabilities = capabilities
        self._block = start_block
        self._subnets: dict[int, _Subnet] = {}
        self._attempts: deque[WeightAttempt] = deque(maxlen=max_attempts_kept)
        self._pending: list[PendingReveal] = []
        self._tick = asyncio.Event()
        self._closed = False
        self._extrinsics = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- building a subnet (what sudo and the owner do on a dev chain) ----------------------------------

    def create_subnet(
        self, netuid: int | None = None, *, max_uids: int = 256, mechanisms: int = 1, **hyper: Any
    ) -> Hyperparameters:
        """A new subnet with :data:`DEFAULT_HYPERPARAMETERS` overridden by ``hyper``; ``netuid`` defaults to
        the next free one (root, 0, is never used)."""
        if netuid is None:
            netuid = max(self._subnets, default=0) + 1
        if netuid in self._subnets:
            raise ChainError(f"subnet {netuid} already exists", chain_error="SubnetAlreadyExists")
        params = {**DEFAULT_HYPERPARAMETERS, **hyper}
        unknown = set(params) - {f.name for f in dataclasses.fields(Hyperparameters)}
        if unknown:
            raise TypeError(f"unknown hyperparameters: {sorted(unknown)}")
        created = Hyperparameters(netuid=netuid, **params)
        self._subnets[netuid] = _Subnet(hyper=created, max_uids=max_uids, mechanisms=mechanisms)
        return created

    def set_hyperparameters(self, netuid: int, **changes: Any) -> Hyperparameters:
        """Change hyperparameters (sudo / subnet owner)."""
        subnet = self._subnet(netuid)
        subnet.hyper = dataclasses.replace(subnet.hyper, **changes)
        return subnet.hyper

    def register(
        self,
        netuid: int,
        hotkey: Keypair | str,
        coldkey: Keypair | str,
        *,
        stake: float = 0.0,
        validator_permit: bool = False,
        uid: int | None = None,
    ) -> int:
        """Register a hotkey in a new block; returns its uid.

        A full subnet replaces the neuron with the least stake, outside the immunity period when any is
        (as pruning does); ``uid`` forces which one. A replaced uid starts fresh: new hotkey and
        registration block, no weights, no axon, no last update. The same hotkey registering again
        after being replaced gets a new registration block, hence a new identity.
        """
        subnet = self._subnet(netuid)
        hotkey_ss58, coldkey_ss58 = _ss58(hotkey), _ss58(coldkey)
        if subnet.uid_of(hotkey_ss58) is not None:
            raise ChainError(f"{hotkey_ss58} is already registered on subnet {netuid}",
                             chain_error="HotKeyAlreadyRegisteredInSubNet")
        block = self._include()
        slot = _Slot(hotkey_ss58, coldkey_ss58, float(stake), validator_permit, registration_block=block)
        if uid is None and len(subnet.slots) < subnet.max_uids:
            subnet.slots.append(slot)
            return len(subnet.slots) - 1
        if uid is None:
            uid = self._to_prune(subnet, block)
        elif not 0 <= uid < len(subnet.slots):
            raise ChainError(f"uid {uid} is not on subnet {netuid}", chain_error="UidVecContainInvalidOne")
        self._forget(subnet, uid)
        subnet.slots[uid] = slot
        return uid

    def set_stake(self, netuid: int, hotkey: Keypair | str, stake: float) -> None:
        self._slot(netuid, hotkey).stake = float(stake)

    def set_validator_permit(self, netuid: int, hotkey: Keypair | str, permit: bool = True) -> None:
        self._slot(netuid, hotkey).validator_permit = permit

    def advance(self, blocks: int = 1) -> int:
        """Build ``blocks`` empty blocks (timelocked commits reveal on the way); returns the new head."""
        if blocks < 0:
            raise ValueError("blocks must be >= 0")
        for _ in range(blocks):
            self._next_block()
        self._wake()
        return self._block

    def weights(self, netuid: int, mechid: int = 0) -> dict[int, dict[int, float]]:
        """Weights on chain, as shares of each setter's row: ``{setter uid: {uid: share}}``."""
        rows = self._subnet(netuid).weights.get(mechid, {})
        out: dict[int, dict[int, float]] = {}
        for setter, row in rows.items():
            total = sum(v for _, v in row)
            out[setter] = {u: v / total for u, v in row} if total else {}
        return out

    def raw_weights(self, netuid: int, mechid: int = 0) -> dict[int, list[tuple[int, int]]]:
        """Weights exactly as stored: ``{setter uid: [(uid, u16 value), ...]}``."""
        return {k: list(v) for k, v in self._subnet(netuid).weights.get(mechid, {}).items()}

    def pending_reveals(self) -> Sequence[PendingReveal]:
        """Hash commits waiting for their reveal window."""
        return tuple(self._pending)

    # -- ChainClient ---------------------------------------------------------------------------------------

    async def block(self) -> int:
        return self._block

    async def blocks(self) -> AsyncIterator[int]:
        """Every new block number, in order, none skipped; ends when the client is closed."""
        seen = self._block
        while not self._closed:
            if self._block > seen:
                seen += 1
                yield seen
                continue
            await self._tick.wait()

    async def metagraph(self, netuid: int, mechid: int = 0) -> Metagraph:
        subnet = self._subnet(netuid)
        self._check_mechanism(subnet, netuid, mechid)
        updates = subnet.last_update.get(mechid, {})
        neurons = tuple(
            Neuron(
                uid=uid, hotkey=s.hotkey, coldkey=s.coldkey, stake=s.stake, validator_permit=s.validator_permit,
                registration_block=s.registration_block, last_update=updates.get(uid, 0),
                active=self._block - updates.get(uid, s.registration_block) <= subnet.hyper.activity_cutoff,
                axon=s.axon,
            )
            for uid, s in enumerate(subnet.slots)
        )
        return Metagraph(netuid=netuid, block=self._block, neurons=neurons, mechid=mechid)

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        return self._subnet(netuid).hyper

    async def serve_axon(
        self, keypair: Keypair, netuid: int, ip: str, port: int, protocol: int = 4
    ) -> ExtrinsicReceipt:
        subnet = self._subnet(netuid)
        uid = subnet.uid_of(keypair.ss58_address)
        if uid is None:
            raise NotRegistered(f"{keypair.ss58_address} is not registered on subnet {netuid}",
                                chain_error="HotKeyNotRegisteredInNetwork")
        ip_int, ip_type = axon_endpoint(ip, port)
        slot = subnet.slots[uid]
        limit = subnet.hyper.serving_rate_limit
        if limit and slot.axon_block and self._block + 1 - slot.axon_block < limit:
            ready = slot.axon_block + limit - 1
            raise RateLimited(f"axon served at block {slot.axon_block}; serve again from block {ready}",
                              chain_error="ServingRateLimitExceeded", ready_at_block=ready)
        block = self._include()
        slot.axon = AxonInfo(ip=AxonInfo.int_to_ip(ip_int, ip_type), port=port, ip_type=ip_type, protocol=protocol)
        slot.axon_block = block
        return self._receipt(block, "AxonServed")

    async def set_weights(
        self,
        keypair: Keypair,
        netuid: int,
        uids: Sequence[int],
        weights: Sequence[float],
        *,
        version_key: int | None = None,
        mechid: int = 0,
    ) -> WeightAttempt:
        requested = tuple(int(u) for u in uids)
        record = AttemptRecorder(self._attempts, block=self._block, netuid=netuid, mechid=mechid, uids=requested,
                                  digest=float_digest(requested, weights))
        try:
            subnet = self._subnet(netuid)
            self._check_mechanism(subnet, netuid, mechid)
        except ChainError as exc:
            record.failed(exc)
            raise
        hyper = subnet.hyper
        caller = subnet.uid_of(keypair.ss58_address)
        version = hyper.weights_version if version_key is None else int(version_key)

        def check(candidate: Sequence[int]):  # the chain's rules, on the vector as it stands
            return preflight(
                hyper=hyper, block=self._block, caller_uid=caller,
                caller_permit=caller is not None and subnet.slots[caller].validator_permit,
                last_update=subnet.last_update.get(mechid, {}).get(caller, 0) if caller is not None else 0,
                uids=candidate, n_neurons=len(subnet.slots), capabilities=self.capabilities, mechid=mechid,
                version_key=version,
            )

        verdict = check(requested)
        record.path = verdict.path
        try:
            verdict.raise_for_problem()
            if verdict.too_soon:
                return record.too_soon(verdict.ready_at_block)
            dest, values = convert_weights(
                requested, weights, n_neurons=len(subnet.slots), max_weight_limit=hyper.max_weights_limit,
                min_allowed_weights=hyper.min_allowed_weights, self_uid=caller,
            )
            record.uids, record.digest = tuple(dest), weights_digest(dest, values)
            check(dest).raise_for_problem()
            if caller is None or verdict.path is None:  # preflight reports both as problems
                raise ChainError("no way to set these weights")
            block = self._apply_weights(subnet, keypair, caller, verdict.path, mechid, dest, values, version)
        except ChainError as exc:
            record.failed(exc)
            raise
        record.block = block
        return record.success(self._receipt(block, "WeightsSet").extrinsic_hash)

    def weight_attempts(self) -> Sequence[WeightAttempt]:
        return tuple(self._attempts)

    async def reveal_pending(self) -> list[WeightAttempt]:
        """Reveal every hash commit whose window is open, drop (and record) those that expired.

        The same duty as the Substrate client's: the runtime only checks the hash, the validator must
        come back with the inputs inside the window.
        """
        made: list[WeightAttempt] = []
        for pending in list(self._pending):
            executes_in = self._block + 1
            if executes_in < pending.first_block:
                continue
            self._pending.remove(pending)
            record = AttemptRecorder(self._attempts, block=self._block, netuid=pending.netuid, mechid=pending.mechid,
                                      uids=pending.uids, digest=weights_digest(pending.uids, pending.values),
                                      path="reveal_weights")
            try:
                if executes_in > pending.last_block:
                    raise ChainError(f"commit of block {pending.commit_block} expired at block {pending.last_block}",
                                     chain_error="ExpiredWeightCommit")
                block = self._reveal(pending)
            except ChainError as exc:
                made.append(record.failed(exc))
                continue
            record.block = block
            made.append(record.success(self._receipt(block, "WeightsRevealed").extrinsic_hash))
        return made

    async def close(self) -> None:
        self._closed = True
        self._wake()

    # -- the runtime's side ------------------------------------------------------------------------------

    def _apply_weights(
        self, subnet: _Subnet, keypair: Keypair, uid: int, path: WeightPath, mechid: int,
        dest: list[int], values: list[int], version: int,
    ) -> int:
        hyper = subnet.hyper
        hotkey = keypair.ss58_address
        if path in _PLAIN:
            block = self._include()
            subnet.weights.setdefault(mechid, {})[uid] = list(zip(dest, values))
        elif path in _TIMELOCKED:
            waiting = [c for c in subnet.timelocked if c.hotkey == hotkey and c.mechid == mechid]
            if len(waiting) >= MAX_UNREVEALED_COMMITS:
                raise ChainError("too many unrevealed commits", chain_error="TooManyUnrevealedCommits")
            block = self._include()
            reveal_epoch = epoch_index(hyper.netuid, hyper.tempo, block) + hyper.commit_reveal_period
            subnet.timelocked.append(_Timelocked(hotkey, mechid, tuple(dest), tuple(values), version, reveal_epoch))
        elif path == "commit_weights":
            commits = subnet.hash_commits.setdefault((hotkey, mechid), deque())
            self._drop_expired(commits)
            if len(commits) >= MAX_UNREVEALED_COMMITS:
                raise ChainError("too many unrevealed commits", chain_error="TooManyUnrevealedCommits")
            salt = make_salt()
            block = self._include()
            first, last = reveal_window(hyper.netuid, hyper.tempo, hyper.commit_reveal_period, block)
            digest = hash_commit(account=keypair.public_key, netuid=hyper.netuid, uids=dest, values=values,
                                 salt=salt, version_key=version, mechid=mechid or None)
            commits.append(_HashCommit(digest, block, first, last))
            self._pending.append(PendingReveal(keypair, hyper.netuid, mechid, tuple(dest), tuple(values),
                                               tuple(salt), version, block, first, last))
        else:
            raise ChainError(f"unsupported weight path {path!r}")
        subnet.last_update.setdefault(mechid, {})[uid] = block
        return block

    def _reveal(self, pending: PendingReveal) -> int:
        """``reveal_weights``: the hash must match a live commit; then the plain set rules apply."""
        subnet = self._subnet(pending.netuid)
        hotkey = pending.keypair.ss58_address
        if not subnet.hyper.commit_reveal_enabled:
            raise ChainError("commit-reveal is disabled on this subnet", chain_error="CommitRevealDisabled")
        commits = subnet.hash_commits.get((hotkey, pending.mechid), deque())
        self._drop_expired(commits, at=self._block + 1)
        digest = hash_commit(account=pending.keypair.public_key, netuid=pending.netuid, uids=list(pending.uids),
                             values=list(pending.values), salt=list(pending.salt), version_key=pending.version_key,
                             mechid=pending.mechid or None)
        position = next((i for i, c in enumerate(commits) if c.hash == digest), None)
        if position is None:
            raise ChainError("no commit matches the revealed weights", chain_error="InvalidRevealCommitHashNotMatch")
        uid = subnet.uid_of(hotkey)
        if uid is None:
            raise NotRegistered(f"{hotkey} is no longer registered", chain_error="HotKeyNotRegisteredInSubNet")
        self._check_revealed_set(subnet, uid, list(pending.uids), list(pending.values))
        for _ in range(position + 1):
            commits.popleft()
        block = self._include()
        subnet.weights.setdefault(pending.mechid, {})[uid] = list(zip(pending.uids, pending.values))
        return block

    def _check_revealed_set(self, subnet: _Subnet, uid: int, uids: list[int], values: list[int]) -> None:
        """The plain-set checks the runtime runs again when committed weights are applied."""
        n = len(subnet.slots)
        self_weight = uids == [uid]
        if not subnet.slots[uid].validator_permit and not self_weight:
            raise NoValidatorPermit(f"uid {uid} has no validator permit", chain_error="NeuronNoValidatorPermit")
        if len(set(uids)) != len(uids):
            raise InvalidWeights("duplicate uids", chain_error="DuplicateUids")
        if any(not 0 <= u < n for u in uids):
            raise InvalidWeights("uids not on the subnet", chain_error="UidVecContainInvalidOne")
        if self_weight:
            return
        if len(uids) < min(subnet.hyper.min_allowed_weights, n):
            raise WeightVecTooShort("too few weights", chain_error="WeightVecLengthIsLow")
        if not within_max_weight_limit(values, limit_to_u16(subnet.hyper.max_weights_limit)):
            raise InvalidWeights("a weight exceeds the max weight limit", chain_error="MaxWeightExceeded")

    def _next_block(self) -> int:
        self._block += 1
        for subnet in self._subnets.values():
            if subnet.timelocked:
                self._reveal_timelocked(subnet)
        return self._block

    def _reveal_timelocked(self, subnet: _Subnet) -> None:
        """Apply the commits whose reveal epoch has come; like the runtime, drop those that no longer pass."""
        hyper = subnet.hyper
        now = epoch_index(hyper.netuid, hyper.tempo, self._block)
        due = [c for c in subnet.timelocked if c.reveal_epoch <= now]
        if not due:
            return
        subnet.timelocked = [c for c in subnet.timelocked if c.reveal_epoch > now]
        for commit in due:
            uid = subnet.uid_of(commit.hotkey)
            if uid is None or commit.mechid >= subnet.mechanisms:
                continue
            try:
                self._check_revealed_set(subnet, uid, list(commit.uids), list(commit.values))
            except ChainError:
                continue
            subnet.weights.setdefault(commit.mechid, {})[uid] = list(zip(commit.uids, commit.values))

    def _include(self) -> int:
        """An extrinsic: a new block is built and the call runs in it."""
        block = self._next_block()
        self._wake()
        return block

    def _wake(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _drop_expired(self, commits: deque[_HashCommit], at: int | None = None) -> None:
        block = self._block if at is None else at
        while commits and commits[0].last_block < block:
            commits.popleft()

    def _to_prune(self, subnet: _Subnet, block: int) -> int:
        immune = subnet.hyper.immunity_period

        def key(uid: int) -> tuple[float, int, int]:
            slot = subnet.slots[uid]
            return slot.stake, slot.registration_block, uid

        uids = range(len(subnet.slots))
        outside = [u for u in uids if block - subnet.slots[u].registration_block >= immune]
        return min(outside or uids, key=key)

    def _forget(self, subnet: _Subnet, uid: int) -> None:
        old = subnet.slots[uid].hotkey
        for rows in subnet.weights.values():
            rows.pop(uid, None)
        for updates in subnet.last_update.values():
            updates.pop(uid, None)
        subnet.timelocked = [c for c in subnet.timelocked if c.hotkey != old]
        for key in [k for k in subnet.hash_commits if k[0] == old]:
            del subnet.hash_commits[key]

    def _subnet(self, netuid: int) -> _Subnet:
        try:
            return self._subnets[netuid]
        except KeyError:
            raise UnknownSubnet(f"subnet {netuid} does not exist", chain_error="SubNetworkDoesNotExist") from None

    def _slot(self, netuid: int, hotkey: Keypair | str) -> _Slot:
        subnet = self._subnet(netuid)
        uid = subnet.uid_of(_ss58(hotkey))
        if uid is None:
            raise NotRegistered(f"{_ss58(hotkey)} is not registered on subnet {netuid}",
                                chain_error="HotKeyNotRegisteredInSubNet")
        return subnet.slots[uid]

    @staticmethod
    def _check_mechanism(subnet: _Subnet, netuid: int, mechid: int) -> None:
        if not 0 <= mechid < subnet.mechanisms:
            raise ChainError(f"subnet {netuid} has no mechanism {mechid}", chain_error="MechanismDoesNotExist")

    def _receipt(self, block: int, event: str) -> ExtrinsicReceipt:
        self._extrinsics += 1
        seed = f"{block}:{self._extrinsics}:{event}".encode()
        return ExtrinsicReceipt(
            extrinsic_hash="0x" + hashlib.blake2b(seed, digest_size=32).hexdigest(),
            block_hash="0x" + hashlib.blake2b(str(block).encode(), digest_size=32).hexdigest(),
            events=(f"{MODULE}.{event}",),
        )


def _ss58(key: Keypair | str) -> str:
    return key if isinstance(key, str) else key.ss58_address
