"""What a weight commit carries: the hash of a hash commit, and the payload of a timelocked one.

Hash commit-reveal (``commit_weights`` then ``reveal_weights``): the runtime hashes the SCALE encoding of
``(account, netuid_index, uids, values, salt, version_key)`` with BlakeTwo256 and compares it with the
committed hash. ``netuid_index`` is the netuid for mechanism 0 (and on runtimes without mechanisms) and
``mechid * 4096 + netuid`` otherwise. A single byte out of place makes every reveal fail with
``InvalidRevealCommitHashNotMatch``, so the encoding is written out here and checked against the codec
and a real runtime in the tests.

Timelocked commits (``commit_timelocked_weights``): the weights are encrypted to a future drand round by
``bittensor-drand``; the chain decrypts and applies them itself, no reveal extrinsic is needed.

Also the legacy (modulo) epoch arithmetic both schemes depend on. Pure, no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import bittensor_drand
from bittensor_wallet import Keypair

__all__ = [
    "DEFAULT_COMMIT_REVEAL_VERSION",
    "MAX_TIMELOCKED_COMMIT_BYTES",
    "MECHANISM_STRIDE",
    "EpochSchedule",
    "epoch_index",
    "hash_commit",
    "legacy_epoch_schedule",
    "make_salt",
    "netuid_index",
    "reveal_window",
    "scale_compact",
    "timelocked_commit",
    "tlock_payload",
]

MECHANISM_STRIDE = 4096
"""``GLOBAL_MAX_SUBNET_COUNT``: storage index of (netuid, mechid) is ``mechid * 4096 + netuid``."""
DEFAULT_COMMIT_REVEAL_VERSION = 4
"""``CommitRevealWeightsVersion`` of current runtimes; read the storage value where it exists."""

MAX_TIMELOCKED_COMMIT_BYTES = 5000
"""``MAX_CRV3_COMMIT_SIZE_BYTES``: the bound on the commit argument (about 1,100 weights)."""

_U16 = 0xFFFF
_U64 = (1 << 64) - 1


# -- SCALE ---------------------------------------------------------------------------------------------


def scale_compact(n: int) -> bytes:
    """SCALE ``Compact<u*>``: the length prefix of every ``Vec``."""
    if n < 0:
        raise ValueError("compact integers are unsigned")
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 0b01).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 0b10).to_bytes(4, "little")
    body = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(body) - 4) << 2) | 0b11]) + body


def _u16(n: int) -> bytes:
    if not 0 <= n <= _U16:
        raise ValueError(f"{n} does not fit in u16")
    return n.to_bytes(2, "little")


def _u64(n: int) -> bytes:
    if not 0 <= n <= _U64:
        raise ValueError(f"{n} does not fit in u64")
    return n.to_bytes(8, "little")


def _vec_u16(items: Sequence[int]) -> bytes:
    return scale_compact(len(items)) + b"".join(_u16(int(i)) for i in items)


def _vec_u8(data: bytes) -> bytes:
    return scale_compact(len(data)) + bytes(data)


# -- hash commit-reveal ----------------------------------------------------------------------------------


def netuid_index(netuid: int, mechid: int | None = None) -> int:
    """The storage index the runtime keys weights, ``LastUpdate`` and commit hashes by."""
    index = netuid if not mechid else mechid * MECHANISM_STRIDE + netuid
    if not 0 <= netuid < MECHANISM_STRIDE or index > _U16:
        raise ValueError(f"no storage index for netuid {netuid} mechanism {mechid}")
    return index


def make_salt(length: int = 8) -> list[int]:
    """A fresh random salt (u16 values): without it, a commit of common weights could be guessed."""
    return [secrets.randbelow(_U16 + 1) for _ in range(length)]


def hash_commit(
    *,
    account: bytes,
    netuid: int,
    uids: list[int],
    values: list[int],
    salt: list[int],
    version_key: int,
    mechid: int | None = None,
) -> str:
    """``0x``-hex BlakeTwo256 of what ``reveal_weights`` will hash: commit this, reveal the same inputs.

    ``account`` is the hotkey's 32-byte public key (the runtime's ``AccountId32``); ``values`` are the
    u16 weights exactly as they will be revealed (``convert_weights`` output).
    """
    if len(account) != 32:
        raise ValueError(f"account must be a 32-byte public key, got {len(account)} bytes")
    if len(uids) != len(values):
        raise ValueError(f"{len(uids)} uids but {len(values)} values")
    encoded = (
        bytes(account)
        + _u16(netuid_index(netuid, mechid))
        + _vec_u16(uids)
        + _vec_u16(values)
        + _vec_u16(salt)
        + _u64(version_key)
    )
    return "0x" + hashlib.blake2b(encoded, digest_size=32).hexdigest()


# -- epochs ------------------------------------------------------------------------------------------


def epoch_index(netuid: int, tempo: int, block: int) -> int:
    """The legacy epoch counter: ``(block + netuid + 1) // (tempo + 1)``."""
    return (block + netuid + 1) // (tempo + 1)


def reveal_window(netuid: int, tempo: int, reveal_period: int, commit_block: int) -> tuple[int, int]:
    """First and last block of the epoch in which a hash commit made at ``commit_block`` may be revealed.

    A reveal before the window fails (``RevealTooEarly``); after it the commit is expired.
    """
    reveal_epoch = epoch_index(netuid, tempo, commit_block) + reveal_period
    first = max(reveal_epoch * (tempo + 1) - (netuid + 1), 0)
    return first, first + tempo


@dataclass(frozen=True, slots=True)
class EpochSchedule:
    """The subnet's epoch state that timelocked commits are scheduled from (storage items of that name)."""

    last_epoch_block: int
    subnet_epoch_index: int
    blocks_since_last_step: int
    pending_epoch_at: int = 0


def legacy_epoch_schedule(netuid: int, tempo: int, block: int) -> EpochSchedule:
    """The schedule of a runtime without stateful epochs, where an epoch runs at the blocks with
    ``(block + netuid + 1) % (tempo + 1) == tempo``; seeded as the runtime's own migration to stateful
    epochs seeds it. Used when ``LastEpochBlock`` and its companions are not in storage."""
    if tempo <= 0:
        raise ValueError("tempo must be positive: the subnet runs no epochs")
    remainder = (block + netuid + 1) % (tempo + 1)
    return EpochSchedule(
        last_epoch_block=max(block - remainder, 0),  # next epoch at last_epoch_block + tempo
        subnet_epoch_index=epoch_index(netuid, tempo, block),
        blocks_since_last_step=(remainder + 1) % (tempo + 1),
    )


# -- timelocked commits --------------------------------------------------------------------------------


def tlock_payload(*, hotkey: bytes, uids: Sequence[int], values: Sequence[int], version_key: int) -> bytes:
    """The plaintext the chain decrypts at the reveal round: SCALE ``(Vec<u8>, Vec<u16>, Vec<u16>, u64)``."""
    return _vec_u8(hotkey) + _vec_u16(uids) + _vec_u16(values) + _u64(version_key)


def timelocked_commit(
    *,
    hotkey: bytes,
    uids: Sequence[int],
    values: Sequence[int],
    version_key: int,
    tempo: int,
    current_block: int,
    netuid: int,
    reveal_period_epochs: int,
    block_time: float = 12.0,
    schedule: EpochSchedule | None = None,
) -> tuple[bytes, int]:
    """``(commit, reveal_round)`` for ``commit_timelocked_weights``.

    ``schedule`` is the subnet's epoch state read from storage (``LastEpochBlock``, ``SubnetEpochIndex``,
    ``BlocksSinceLastStep``, ``PendingEpochAt``) on runtimes that keep it; without it the legacy modulo
    schedule of ``netuid`` and ``tempo`` is assumed. ``hotkey`` is the 32-byte public key.
    """
    if len(uids) != len(values):
        raise ValueError(f"{len(uids)} uids but {len(values)} values")
    if reveal_period_epochs < 1:
        raise ValueError("reveal_period_epochs must be at least 1")
    state = schedule or legacy_epoch_schedule(netuid, tempo, current_block)
    for value in (*uids, *values):
        _u16(int(value))
    commit, reveal_round = bittensor_drand.get_encrypted_commit_v2(
        uids=[int(u) for u in uids],
        weights=[int(v) for v in values],
        version_key=int(version_key),
        last_epoch_block=state.last_epoch_block,
        pending_epoch_at=state.pending_epoch_at,
        subnet_epoch_index=state.subnet_epoch_index,
        tempo=int(tempo),
        blocks_since_last_step=state.blocks_since_last_step,
        current_block=int(current_block),
        subnet_reveal_period_epochs=int(reveal_period_epochs),
        block_time=float(block_time),
        hotkey=bytes(hotkey),
    )
    if len(commit) > MAX_TIMELOCKED_COMMIT_BYTES:
        raise ValueError(
            f"{len(uids)} weights make a {len(commit)}-byte commit; the runtime takes at most "
            f"{MAX_TIMELOCKED_COMMIT_BYTES}"
        )
    return bytes(commit), int(reveal_round)


@dataclass(frozen=True)
class PendingReveal:
    """A hash commit waiting for its reveal window: what a client must keep, since the chain keeps only
    the hash. Holds the signing keypair, so it is never logged."""

    keypair: Keypair = field(repr=False)
    netuid: int
    mechid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    salt: tuple[int, ...]
    version_key: int
    commit_block: int
    first_block: int
    last_block: int
    digest: str = ""
    """A short fingerprint of the committed weights, for logs and attempt records."""
