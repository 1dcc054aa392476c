"""Offline: metagraph decoding, error mapping, and the call shapes of a current runtime (spec 461).

The spec-293 runtime the tests run on predates timelocked commits and mechanisms; a current runtime's
metadata (``../shared/chain/metadata-v15-spec461.hex``) gives the real types for those, so payloads and calls
are built and decoded with that runtime's own type registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from async_substrate_interface.errors import SubstrateRequestException
from async_substrate_interface.types import Runtime, _decode_option_opaque_metadata, _decode_v15_metadata
from bittensor_wallet import Keypair
from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from inference_subnet.chain import errors
from inference_subnet.chain import metagraph as decode
from inference_subnet.chain.capabilities import capabilities_from_metadata
from inference_subnet.chain.commit import timelocked_commit
from inference_subnet.chain.preflight import choose_path
from inference_subnet.chain.substrate import axon_version, resolve_endpoints, weight_call
from inference_subnet.chain.types import (
    AxonInfo,
    ChainError,
    Hyperparameters,
    InvalidIp,
    InvalidWeights,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
    WeightVecTooShort,
)

METADATA_461 = Path(__file__).resolve().parents[2] / "shared" / "chain" / "metadata-v15-spec461.hex"


@pytest.fixture(scope="module")
def runtime_461() -> Runtime:
    raw = bytes.fromhex(METADATA_461.read_text().strip().removeprefix("0x"))
    rc = RuntimeConfigurationObject(ss58_format=42)
    rc.update_type_registry(load_type_registry_preset("core"))
    metadata = _decode_v15_metadata(_decode_option_opaque_metadata(raw), runtime_config=rc)
    return Runtime(chain="Bittensor", metadata=metadata, type_registry={}, runtime_config=rc,
                   metadata_v15=metadata, runtime_info={"specVersion": 461, "transactionVersion": 1})


def selective_payload(runtime: Runtime, n: int, indexes: list[int]) -> tuple[bytes, list[Keypair]]:
    """A ``get_selective_metagraph`` result of ``n`` neurons, SCALE-encoded with the runtime's own types."""
    fields = decode.output_fields(runtime, "get_selective_metagraph")
    keys = [Keypair.create_from_uri(f"//neuron-{i}") for i in range(n)]
    column: dict[str, list[Any]] = {
        "hotkeys": [k.ss58_address for k in keys],
        "coldkeys": [keys[i % 7].ss58_address for i in range(n)],
        "axons": [
            {"block": 10 + i, "version": 1, "ip": AxonInfo.ip_to_int(f"2001:db8::{i:x}")[0] if i % 2
             else AxonInfo.ip_to_int(f"203.0.113.{i % 250}")[0], "port": 8000 + i, "ip_type": 6 if i % 2 else 4,
             "protocol": 4, "placeholder1": 0, "placeholder2": 0}
            for i in range(n)
        ],
        "active": [True] * n,
        "validator_permit": [i < 64 for i in range(n)],
        "last_update": [1000 + i for i in range(n)],
        "emission": [i * 1_000_000 for i in range(n)],
        "dividends": [i % 65536 for i in range(n)],
        "incentives": [(i * 3) % 65536 for i in range(n)],
        "consensus": [65535] * n,
        "trust": [0] * n,
        "block_at_registration": [500 + i for i in range(n)],
        "total_stake": [(n - i) * 10**9 for i in range(n)],
    }
    value: dict[str, Any] = dict.fromkeys(fields)
    value["netuid"] = 7
    value["block"] = 4242
    for i in indexes:
        if fields[i] in column:
            value[fields[i]] = column[fields[i]]
    output = runtime.runtime_api_map["SubnetInfoRuntimeApi"]["get_selective_metagraph"]["output"]
    obj = runtime.runtime_config.create_scale_object(f"scale_info::{output}")
    return bytes(obj.encode(value).data), keys


# -- metagraph decoding ------------------------------------------------------------------------------


def test_selective_indexes_come_from_the_runtime_type(runtime_461: Runtime) -> None:
    fields = decode.output_fields(runtime_461, "get_selective_metagraph")
    indexes = decode.selective_indexes(fields)
    assert [fields[i] for i in indexes] == sorted(decode.NEURON_FIELDS, key=fields.index)
    assert fields.index("hotkeys") == 52 and fields.index("total_stake") == 69
    # a runtime that inserts a field shifts the indexes: they are never hard-coded
    assert decode.selective_indexes(["netuid", "new_field", *fields[1:]]) == [i + 1 for i in indexes]
    assert decode.selective_indexes(fields, ["block", "not_a_field"]) == [fields.index("block")]


def test_256_neuron_payload_decodes_to_a_metagraph(runtime_461: Runtime) -> None:
    fields = decode.output_fields(runtime_461, "get_selective_metagraph")
    raw, keys = selective_payload(runtime_461, 256, decode.selective_indexes(fields))
    graph = decode.from_runtime(decode.decode_output(runtime_461, "get_selective_metagraph", raw), netuid=7)
    assert len(graph.neurons) == 256 and graph.block == 4242 and graph.netuid == 7
    n5, n6 = graph.by_uid[5], graph.by_uid[6]
    assert n5.hotkey == keys[5].ss58_address and n5.coldkey == keys[5].ss58_address
    assert n5.axon == AxonInfo(ip="2001:db8::5", port=8005, ip_type=6, protocol=4, version=1)
    assert n6.axon == AxonInfo(ip="203.0.113.6", port=8006, ip_type=4, protocol=4, version=1)
    assert n5.stake == 251.0 and n5.emission == 0.005 and n5.registration_block == 505
    assert n5.dividends == pytest.approx(5 / 65535) and n5.consensus == 1.0
    assert n5.validator_permit and not graph.by_uid[200].validator_permit
    assert n5.identity == f"{keys[5].ss58_address}@505"


def test_absent_fields_default_and_none_is_unknown_subnet() -> None:
    graph = decode.from_runtime({"block": 9, "hotkeys": ["a", "b"], "validator_permit": [True]}, netuid=3)
    assert [n.validator_permit for n in graph.neurons] == [True, False]
    assert graph.by_uid[1].axon is None and graph.by_uid[1].stake == 0.0
    with pytest.raises(UnknownSubnet):
        decode.from_runtime(None, netuid=3)


def test_axon_decode() -> None:
    never = {"block": 0, "version": 0, "ip": 0, "port": 0, "ip_type": 0, "protocol": 0}
    assert decode.axon_from_chain(never) is None
    v6 = decode.axon_from_chain({"ip": AxonInfo.ip_to_int("2001:db8::1")[0], "port": 1, "ip_type": 6,
                                 "protocol": 4, "version": 3})
    assert v6 == AxonInfo("2001:db8::1", 1, 6, 4, 3)
    assert decode.axon_from_chain({"ip": 16909060, "port": 8091, "ip_type": 4}) == AxonInfo("1.2.3.4", 8091, 4, 0, 0)


def test_storage_and_runtime_decoders_agree() -> None:
    axon = {"ip": 16909060, "port": 8091, "ip_type": 4, "protocol": 4, "version": 1}
    from_storage = decode.from_storage(
        netuid=2, block=50, hotkeys=["h0", "h1"], coldkeys={"h0": "c", "h1": "c"}, axons={"h0": axon},
        registration_blocks=[4, 7], stake_rao={"h0": 5 * 10**9}, validator_permit=[True], last_update=[49, 7],
    )
    from_runtime = decode.from_runtime(
        {"block": 50, "hotkeys": ["h0", "h1"], "coldkeys": ["c", "c"], "axons": [axon, None],
         "validator_permit": [True, False], "last_update": [49, 7], "block_at_registration": [4, 7],
         "total_stake": [5 * 10**9, 0]}, netuid=2)
    assert from_storage == from_runtime


# -- calls of a current runtime ---------------------------------------------------------------------------


def encode_call(runtime: Runtime, function: str, params: dict[str, Any]) -> dict[str, Any]:
    """Encode a SubtensorModule call with the runtime's types and decode it back."""
    call = runtime.runtime_config.create_scale_object("Call", metadata=runtime.metadata)
    data = call.encode({"call_module": "SubtensorModule", "call_function": function, "call_args": params})
    back = runtime.runtime_config.create_scale_object("Call", data=ScaleBytes(data.data), metadata=runtime.metadata)
    back.decode()
    assert back.value["call_function"] == function
    return {arg["name"]: arg["value"] for arg in back.value["call_args"]}


def test_weight_calls_encode_on_a_current_runtime(runtime_461: Runtime) -> None:
    hotkey = Keypair.create_from_uri("//Alice")
    commit, reveal_round = timelocked_commit(hotkey=hotkey.public_key, uids=[1, 2], values=[65535, 100],
                                             version_key=0, tempo=360, current_block=5_000_000, netuid=7,
                                             reveal_period_epochs=1)
    cases = {
        "set_weights": {"uids": [1, 2], "values": [65535, 100], "version_key": 3},
        "commit_timelocked_weights": {"commit": commit, "reveal_round": reveal_round, "commit_reveal_version": 4},
        "commit_weights": {"commit_hash": "0x" + "ab" * 32},
        "reveal_weights": {"uids": [1, 2], "values": [65535, 100], "salt": [1, 2, 3], "version_key": 3},
    }
    for mechid in (0, 2):
        for path, kwargs in cases.items():
            function, params = weight_call(path, netuid=7, mechid=mechid, **kwargs)  # type: ignore[arg-type]
            assert ("mechanism" in function) == bool(mechid)
            decoded = encode_call(runtime_461, function, params)
            assert decoded["netuid"] == 7
            if mechid:
                assert decoded["mecid"] == mechid
            if "commit" in params and path.startswith("commit_timelocked"):
                assert decoded["commit"] == "0x" + commit.hex()
                assert (decoded["reveal_round"], decoded["commit_reveal_version"]) == (reveal_round, 4)
            if path == "set_weights":
                assert (decoded["dests"], decoded["weights"], decoded["version_key"]) == ([1, 2], [65535, 100], 3)
            if path == "reveal_weights":
                assert decoded["salt"] == [1, 2, 3]
    assert reveal_round > 0 and 0 < len(commit) <= 5000
    with pytest.raises(ValueError):
        weight_call("commit_weights", netuid=1)
    serve = encode_call(runtime_461, "serve_axon", {"netuid": 7, "version": axon_version(), "ip": 1, "port": 80,
                                                   "ip_type": 4, "protocol": 4, "placeholder1": 0, "placeholder2": 0})
    assert serve["version"] == axon_version() == 1000


def test_current_runtime_gets_timelocked_and_mechanism_paths(runtime_461: Runtime) -> None:
    caps = capabilities_from_metadata(runtime_461.metadata)
    hyper = Hyperparameters(netuid=7, tempo=360, weights_rate_limit=100, max_weights_limit=1.0,
                            min_allowed_weights=1, commit_reveal_enabled=True, commit_reveal_period=1,
                            weights_version=0, immunity_period=4096, serving_rate_limit=50, activity_cutoff=5000)
    assert choose_path(hyper, caps) == "commit_timelocked_weights"
    assert choose_path(hyper, caps, mechid=1) == "commit_timelocked_mechanism_weights"
    assert caps.has_api("SubnetInfoRuntimeApi", "get_selective_mechagraph")
    mech_fields = decode.output_fields(runtime_461, "get_selective_mechagraph")
    assert mech_fields == decode.output_fields(runtime_461, "get_selective_metagraph")


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("NotRegistered", NotRegistered), ("HotKeyNotRegisteredInSubNet", NotRegistered),
        ("NeuronNoValidatorPermit", NoValidatorPermit), ("SettingWeightsTooFast", RateLimited),
        ("ServingRateLimitExceeded", RateLimited), ("InvalidIpAddress", InvalidIp),
        ("WeightVecLengthIsLow", WeightVecTooShort), ("IncorrectWeightVersionKey", InvalidWeights),
        ("UidVecContainInvalidOne", InvalidWeights), ("MaxWeightExceeded", InvalidWeights),
        ("SubNetworkDoesNotExist", UnknownSubnet), ("SomethingNew", ChainError),
    ],
)
def test_module_errors_keep_the_chain_name(name: str, cls: type[ChainError]) -> None:
    exc = errors.from_dispatch_error({"type": "Module", "name": name, "docs": ["Some", "docs."]})
    assert type(exc) is cls and exc.chain_error == name
    assert name in str(exc) and "Some docs." in str(exc)


def test_pool_rejections_in_both_node_formats() -> None:
    chopsticks = SubstrateRequestException(
        "{'id': 'x', 'jsonrpc': '2.0', 'error': {'code': 1010, 'message': '{\"invalid\":{\"custom\":11}}'}}")
    node = SubstrateRequestException("{'code': 1010, 'message': 'Invalid Transaction', 'data': 'Custom error: 10'}")
    ip, unregistered = errors.from_request_error(chopsticks), errors.from_request_error(node)
    assert isinstance(ip, InvalidIp) and ip.chain_error == "InvalidIpAddress"
    assert isinstance(unregistered, NotRegistered) and unregistered.chain_error == "HotKeyNotRegisteredInNetwork"
    limited = errors.from_custom_code(6)
    assert isinstance(limited, RateLimited) and limited.chain_error == "RateLimitExceeded"
    assert errors.from_custom_code(77).chain_error == "CustomError77"
    stale = errors.from_request_error(SubstrateRequestException("Subscription x invalid: {'invalid': {'stale': None}}"))
    assert stale.chain_error == "InvalidStale" and "nonce" in str(stale)
    assert errors.from_request_error(SubstrateRequestException("boom")).chain_error is None


def test_resolve_endpoints() -> None:
    assert resolve_endpoints("finney") == ["wss://entrypoint-finney.opentensor.ai:443"]
    assert resolve_endpoints("test", ["local", "ws://10.0.0.1:9944", "local"]) == [
        "wss://test.finney.opentensor.ai:443", "ws://127.0.0.1:9944", "ws://10.0.0.1:9944"]
    with pytest.raises(ValueError, match="unknown network"):
        resolve_endpoints("mainnet")
