"""Decode what a subtensor node returns into one immutable :class:`Metagraph`. Pure: no I/O.

Three sources, one result, so callers never care which one the runtime offered:

- ``SubnetInfoRuntimeApi.get_selective_metagraph`` (or ``get_selective_mechagraph`` for a mechanism): the
  runtime sends only the fields asked for. The field numbers are read from the runtime's own type
  (``SelectiveMetagraph``), never hard-coded, because new runtimes insert fields;
- ``get_metagraph`` / ``get_mechagraph``: the full struct (older runtimes without the selective call);
- plain storage reads (``Keys``, ``Axons``, ``BlockAtRegistration``...) for runtimes with neither.

Units: stake and emission in TAO (the runtime's rao / 1e9; alpha on dynamic-TAO subnets), trust, consensus,
incentive and dividends as shares in [0, 1] (the chain's u16 / 65535).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from async_substrate_interface.utils.decoding import scale_decode

from inference_subnet.chain.types import RAO_PER_TAO, AxonInfo, Metagraph, Neuron, UnknownSubnet

if TYPE_CHECKING:
    from async_substrate_interface.types import Runtime

SUBNET_API = "SubnetInfoRuntimeApi"

U16_MAX = 65_535

#: The fields of the runtime's (Selective)Metagraph struct a snapshot is built from.
NEURON_FIELDS: tuple[str, ...] = (
    "block",
    "hotkeys",
    "coldkeys",
    "axons",
    "active",
    "validator_permit",
    "last_update",
    "emission",
    "dividends",
    "incentives",
    "consensus",
    "trust",
    "block_at_registration",
    "total_stake",
)

#: Fields the weight preflight needs: far less to send and decode than a whole metagraph.
WEIGHT_STATE_FIELDS: tuple[str, ...] = ("block", "hotkeys", "validator_permit", "last_update")


def selective_indexes(struct_fields: Sequence[str], wanted: Sequence[str] = NEURON_FIELDS) -> list[int]:
    """Positions of ``wanted`` in the runtime's ``SelectiveMetagraph`` field list (its request indexes).

    Fields the runtime does not have are left out: the decoder treats them as absent.
    """
    position = {name: i for i, name in enumerate(struct_fields)}
    return sorted(position[name] for name in wanted if name in position)


def composite_fields(types: Mapping[int, Mapping[str, Any]], type_id: int) -> list[str]:
    """Field names of a struct in a portable type registry, looking through ``Option<...>``."""
    definition = types[type_id]["def"]
    if "variant" in definition:  # Option<T>: the `Some` variant's single field
        some = [v for v in definition["variant"]["variants"] if v["name"] == "Some"]
        if not some:
            raise ValueError(f"type {type_id} is an enum, not an Option")
        return composite_fields(types, some[0]["fields"][0]["type"])
    if "composite" not in definition:
        raise ValueError(f"type {type_id} is not a struct")
    return [field["name"] for field in definition["composite"]["fields"]]


def output_fields(runtime: Runtime, method: str, api: str = SUBNET_API) -> list[str]:
    """Field names of a runtime API method's output struct (e.g. ``SelectiveMetagraph``) in this runtime."""
    registry = runtime.metadata.portable_registry.value["types"]
    types = {int(entry["id"]): entry["type"] for entry in registry}
    return composite_fields(types, int(runtime.runtime_api_map[api][method]["output"]))


def decode_output(runtime: Runtime, method: str, raw: bytes, api: str = SUBNET_API) -> Any:
    """The decoded value of a runtime API call's raw SCALE result (what ``state_call`` returns)."""
    output = runtime.runtime_api_map[api][method]["output"]
    return scale_decode(f"scale_info::{output}", raw, runtime=runtime).value


def axon_from_chain(raw: Mapping[str, Any] | None) -> AxonInfo | None:
    """An ``AxonInfo`` storage value or runtime struct; ``None`` for a neuron that never served."""
    if not raw:
        return None
    ip_type = int(raw.get("ip_type") or 0)
    ip_int = int(raw.get("ip") or 0)
    port = int(raw.get("port") or 0)
    if ip_type == 0 and ip_int == 0 and port == 0:
        return None
    ip_type = 6 if ip_type == 6 else 4
    return AxonInfo(
        ip=AxonInfo.int_to_ip(ip_int, ip_type),
        port=port,
        ip_type=ip_type,
        protocol=int(raw.get("protocol") or 0),
        version=int(raw.get("version") or 0),
    )


def from_runtime(
    value: Mapping[str, Any] | None, *, netuid: int, mechid: int = 0, block: int | None = None
) -> Metagraph:
    """A snapshot from a decoded ``get_(selective_)metagraph``/``mechagraph`` result.

    ``None`` (the runtime's ``Option::None``) means the subnet or mechanism does not exist.
    """
    if value is None:
        what = f"netuid {netuid}" + (f" mechanism {mechid}" if mechid else "")
        raise UnknownSubnet(f"{what} does not exist on this chain", chain_error="SubNetworkDoesNotExist")
    hotkeys: list[str] = list(value.get("hotkeys") or ())
    n = len(hotkeys)
    read_at = int(value["block"]) if value.get("block") is not None else int(block or 0)
    coldkeys = _column(value, "coldkeys", n, "")
    axons = _column(value, "axons", n, None)
    active = _column(value, "active", n, True)
    permits = _column(value, "validator_permit", n, False)
    last_update = _column(value, "last_update", n, 0)
    emission = _column(value, "emission", n, 0)
    dividends = _column(value, "dividends", n, 0)
    incentives = _column(value, "incentives", n, 0)
    consensus = _column(value, "consensus", n, 0)
    trust = _column(value, "trust", n, 0)
    registered = _column(value, "block_at_registration", n, 0)
    stake = _column(value, "total_stake", n, 0)
    neurons = tuple(
        Neuron(
            uid=uid,
            hotkey=hotkeys[uid],
            coldkey=coldkeys[uid],
            stake=_tao(stake[uid]),
            validator_permit=bool(permits[uid]),
            registration_block=int(registered[uid]),
            last_update=int(last_update[uid]),
            active=bool(active[uid]),
            trust=_share(trust[uid]),
            consensus=_share(consensus[uid]),
            incentive=_share(incentives[uid]),
            dividends=_share(dividends[uid]),
            emission=_tao(emission[uid]),
            axon=axon_from_chain(axons[uid]),
        )
        for uid in range(n)
    )
    return Metagraph(netuid=netuid, block=read_at, neurons=neurons, mechid=mechid)


def from_storage(
    *,
    netuid: int,
    block: int,
    hotkeys: Sequence[str],
    coldkeys: Mapping[str, str],
    axons: Mapping[str, Mapping[str, Any] | None],
    registration_blocks: Sequence[int],
    stake_rao: Mapping[str, int],
    active: Sequence[bool] = (),
    validator_permit: Sequence[bool] = (),
    last_update: Sequence[int] = (),
    emission: Sequence[int] = (),
    dividends: Sequence[int] = (),
    incentive: Sequence[int] = (),
    consensus: Sequence[int] = (),
    trust: Sequence[int] = (),
    mechid: int = 0,
) -> Metagraph:
    """A snapshot from raw storage values, for runtimes without the metagraph runtime API.

    ``hotkeys`` and ``registration_blocks`` are indexed by uid; the per-subnet vectors (``Active``,
    ``ValidatorPermit``...) are as stored (indexed by uid, possibly shorter right after a registration).
    """
    n = len(hotkeys)
    value = {
        "block": block,
        "hotkeys": list(hotkeys),
        "coldkeys": [coldkeys.get(h, "") for h in hotkeys],
        "axons": [axons.get(h) for h in hotkeys],
        "active": _pad(active, n, True),
        "validator_permit": _pad(validator_permit, n, False),
        "last_update": _pad(last_update, n, 0),
        "emission": _pad(emission, n, 0),
        "dividends": _pad(dividends, n, 0),
        "incentives": _pad(incentive, n, 0),
        "consensus": _pad(consensus, n, 0),
        "trust": _pad(trust, n, 0),
        "block_at_registration": list(registration_blocks),
        "total_stake": [stake_rao.get(h, 0) for h in hotkeys],
    }
    return from_runtime(value, netuid=netuid, mechid=mechid)


def _column(value: Mapping[str, Any], name: str, n: int, default: Any) -> list[Any]:
    """One per-uid vector, padded when absent or short (a field the runtime did not send)."""
    return _pad(value.get(name) or (), n, default)


def _pad(items: Sequence[Any], n: int, default: Any) -> list[Any]:
    out = list(items[:n])
    if len(out) < n:
        out.extend([default] * (n - len(out)))
    return out


def _tao(rao: Any) -> float:
    return int(rao or 0) / RAO_PER_TAO


def _share(value: Any) -> float:
    return int(value or 0) / U16_MAX
