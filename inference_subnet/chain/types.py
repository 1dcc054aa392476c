"""What the rest of the framework knows of the chain: immutable snapshots, typed errors, one interface.

``ChainClient`` has two implementations behind the same interface: the Substrate client (any subtensor
node, through ``async-substrate-interface``) and an in-memory chain for unit tests and the zero-setup demo.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from bittensor_wallet import Keypair

RAO_PER_TAO = 1_000_000_000


@dataclass(frozen=True, slots=True)
class AxonInfo:
    """Where a neuron serves. ``ip`` is a dotted IPv4 or an IPv6 string; ``0.0.0.0`` when never served."""

    ip: str
    port: int
    ip_type: int = 4
    protocol: int = 4
    version: int = 0

    @property
    def is_served(self) -> bool:
        return self.port != 0 and self.ip not in ("0.0.0.0", "::")

    def url(self, ip_override: str | None = None, scheme: str = "http") -> str:
        host = ip_override or self.ip
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @staticmethod
    def ip_to_int(ip: str) -> tuple[int, int]:
        """(integer, ip_type) as the chain stores an IP."""
        addr = ipaddress.ip_address(ip)
        return int(addr), addr.version

    @staticmethod
    def int_to_ip(value: int, ip_type: int) -> str:
        if ip_type == 6:
            return str(ipaddress.IPv6Address(value))
        return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


@dataclass(frozen=True, slots=True)
class Neuron:
    """One uid of a subnet at one block."""

    uid: int
    hotkey: str
    coldkey: str
    stake: float
    """Stake weight in TAO (alpha stake on dynamic-TAO runtimes)."""
    validator_permit: bool
    registration_block: int
    last_update: int = 0
    active: bool = True
    trust: float = 0.0
    consensus: float = 0.0
    incentive: float = 0.0
    dividends: float = 0.0
    emission: float = 0.0
    axon: AxonInfo | None = None

    @property
    def identity(self) -> str:
        """(hotkey, registration block): the key of every score and quota. A bare uid is never used."""
        return f"{self.hotkey}@{self.registration_block}"


@dataclass(frozen=True)
class Metagraph:
    """A subnet's neurons as read at ``block``."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]
    mechid: int = 0

    @cached_property
    def by_hotkey(self) -> dict[str, Neuron]:
        return {n.hotkey: n for n in self.neurons}

    @cached_property
    def by_uid(self) -> dict[int, Neuron]:
        return {n.uid: n for n in self.neurons}

    @property
    def validators(self) -> list[Neuron]:
        return [n for n in self.neurons if n.validator_permit]

    def to_json(self) -> str:
        return json.dumps(
            {"netuid": self.netuid, "block": self.block, "mechid": self.mechid,
             "neurons": [asdict(n) for n in self.neurons]}
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metagraph:
        neurons = []
        for raw in data["neurons"]:
            raw = dict(raw)
            axon = raw.pop("axon", None)
            neurons.append(Neuron(**raw, axon=AxonInfo(**axon) if axon else None))
        return cls(netuid=data["netuid"], block=data["block"], neurons=tuple(neurons),
                   mechid=data.get("mechid", 0))

    @classmethod
    def from_json(cls, text: str | bytes) -> Metagraph:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    """The subnet parameters the framework acts on."""

    netuid: int
    tempo: int
    weights_rate_limit: int
    max_weights_limit: float
    """Largest share one uid may get, in [0, 1] (the chain stores it as u16)."""
    min_allowed_weights: int
    commit_reveal_enabled: bool
    commit_reveal_period: int
    weights_version: int
    immunity_period: int
    serving_rate_limit: int
    activity_cutoff: int
    max_validators: int = 64


WeightPath = Literal[
    "set_weights", "set_mechanism_weights", "commit_weights", "commit_timelocked_weights",
    "commit_timelocked_mechanism_weights", "reveal_weights",
]


@dataclass(frozen=True, slots=True)
class WeightAttempt:
    """The record of one weight submission, kept so a validator can show and alert on weight health."""

    block: int
    netuid: int
    uids: tuple[int, ...]
    digest: str
    path: WeightPath | None
    outcome: Literal["success", "too_soon", "rejected", "error"]
    extrinsic_hash: str | None = None
    error: str | None = None
    ready_at_block: int | None = None
    mechid: int = 0


@dataclass(frozen=True, slots=True)
class ExtrinsicReceipt:
    """A submitted extrinsic that was included."""

    extrinsic_hash: str
    block_hash: str | None = None
    events: tuple[str, ...] = field(default_factory=tuple)


# -- errors ------------------------------------------------------------------------------------------


class ChainError(Exception):
    """Any failure talking to the chain. ``chain_error`` keeps the runtime's own error name when known."""

    def __init__(self, message: str, *, chain_error: str | None = None):
        super().__init__(message)
        self.chain_error = chain_error


class ChainTimeout(ChainError):
    """A call missed its deadline (dead or half-open socket, overloaded node)."""


class ChainUnavailable(ChainError):
    """No endpoint could be reached."""


class UnknownSubnet(ChainError):
    """The netuid does not exist."""


class NotRegistered(ChainError):
    """The hotkey is not registered on the subnet."""


class NoValidatorPermit(ChainError):
    """The hotkey has no validator permit on the subnet."""


class RateLimited(ChainError):
    """An expected outcome: too soon since the last call of this kind. ``ready_at_block`` says when."""

    def __init__(self, message: str, *, chain_error: str | None = None, ready_at_block: int | None = None):
        super().__init__(message, chain_error=chain_error)
        self.ready_at_block = ready_at_block


class InvalidIp(ChainError):
    """The chain refused the axon IP (e.g. loopback or private addresses)."""


def axon_endpoint(ip: str, port: int) -> tuple[int, int]:
    """(integer IP, ip_type) the way ``serve_axon`` takes them, refused here where the runtime would refuse
    them (not an address, loopback, all-ones, port out of range): a refused extrinsic still costs a fee."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidIp(f"not an IPv4 or IPv6 address: {ip!r} (InvalidIpAddress)",
                        chain_error="InvalidIpAddress") from None
    value = int(addr)
    refused = {4: (0x7F000001, 0xFFFFFFFF), 6: (1, (1 << 128) - 1)}[addr.version]
    if value in refused:
        raise InvalidIp(f"the chain refuses {ip} as an axon address (InvalidIpAddress)",
                        chain_error="InvalidIpAddress")
    if not 0 < port < 65536:
        raise InvalidIp(f"port must be in 1..65535, got {port} (InvalidPort)", chain_error="InvalidPort")
    return value, addr.version


class WeightVecTooShort(ChainError):
    """Fewer weights than the subnet's minimum allowed."""


class InvalidWeights(ChainError):
    """Weights the chain would refuse (unknown uids, wrong lengths, max weight exceeded, version key)."""


class ChainClient(Protocol):
    """The chain as every service sees it."""

    async def block(self) -> int: ...

    def blocks(self) -> AsyncIterator[int]:
        """New block numbers as they are produced (subscription or poll)."""
        ...

    async def metagraph(self, netuid: int, mechid: int = 0) -> Metagraph: ...

    async def hyperparameters(self, netuid: int) -> Hyperparameters: ...

    async def serve_axon(
        self, keypair: Keypair, netuid: int, ip: str, port: int, protocol: int = 4
    ) -> ExtrinsicReceipt: ...

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
        """Clip, normalise, quantise and submit by the path the subnet and runtime call for.

        A too-soon set returns an attempt with ``outcome="too_soon"`` (not an exception); rejected sets raise
        the typed errors above. Every attempt is also kept in ``weight_attempts()``.
        """
        ...

    def weight_attempts(self) -> Sequence[WeightAttempt]: ...

    async def close(self) -> None: ...


class MetagraphSource(Protocol):
    """Where a miner or service gets its current metagraph: a static list, a JSON file, the chain
    (refreshed in the background, last good snapshot kept), or the sidecar's copy in Redis."""

    async def current(self) -> Metagraph:
        """The newest snapshot available; raises :class:`ChainError` only if none was ever read."""
        ...

    @property
    def age_seconds(self) -> float:
        """Seconds since the snapshot was last refreshed successfully."""
        ...
