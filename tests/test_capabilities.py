"""Capabilities come from the runtime's own metadata: a current runtime (spec 461) and the live spec-293 one."""

from __future__ import annotations

from pathlib import Path

import pytest
from async_substrate_interface import AsyncSubstrateInterface
from async_substrate_interface.types import _decode_option_opaque_metadata, _decode_v15_metadata
from scalecodec.base import RuntimeConfigurationObject
from scalecodec.type_registry import load_type_registry_preset

from inference_subnet.chain.capabilities import Capabilities, capabilities_from_metadata

METADATA_461 = Path(__file__).resolve().parents[2] / "shared" / "chain" / "metadata-v15-spec461.hex"


@pytest.fixture(scope="module")
def metadata_461():
    """The V15 metadata of a current runtime, decoded offline as the chain README describes."""
    raw = bytes.fromhex(METADATA_461.read_text().strip().removeprefix("0x"))
    rc = RuntimeConfigurationObject(ss58_format=42)
    rc.update_type_registry(load_type_registry_preset("core"))
    metadata = _decode_v15_metadata(_decode_option_opaque_metadata(raw), runtime_config=rc)
    rc.add_portable_registry(metadata)
    return metadata


def test_current_runtime_has_timelocked_and_mechanism_calls(metadata_461) -> None:
    caps = capabilities_from_metadata(metadata_461)
    for call in ("commit_timelocked_weights", "commit_timelocked_mechanism_weights",
                 "set_mechanism_weights", "set_weights", "commit_weights", "reveal_weights"):
        assert caps.has_call("SubtensorModule", call), call
    assert not caps.has_call("SubtensorModule", "commit_crv3_weights")  # removed from current runtimes
    assert caps.has_api("SubnetInfoRuntimeApi", "get_metagraph")
    assert caps.has_api("SubnetInfoRuntimeApi", "get_selective_mechagraph")
    assert not caps.has_api("SubnetInfoRuntimeApi", "no_such_method")
    assert not caps.has_call("NoSuchPallet", "set_weights")


def test_calls_match_what_the_scale_library_resolves(metadata_461) -> None:
    """Our registry walk must name exactly the calls the codec itself would let us compose."""
    caps = capabilities_from_metadata(metadata_461)
    expected = {
        f"{pallet.name}.{call.name}"
        for pallet in metadata_461.pallets
        for call in (pallet.calls or [])
    }
    assert caps.calls == frozenset(expected)
    assert len(caps.calls) > 300


def test_accepts_the_decoded_value_as_well(metadata_461) -> None:
    assert capabilities_from_metadata(metadata_461.value) == capabilities_from_metadata(metadata_461)
    assert capabilities_from_metadata(metadata_461.value[1]["V15"]) == capabilities_from_metadata(metadata_461)


def test_rejects_what_is_not_metadata() -> None:
    with pytest.raises(TypeError):
        capabilities_from_metadata({"V9": {}, "V8": {}})
    with pytest.raises(TypeError):
        capabilities_from_metadata(42)


def test_hand_built_capabilities() -> None:
    caps = Capabilities.of(["SubtensorModule.set_weights"], ["SubnetInfoRuntimeApi.get_metagraph"])
    assert caps.has_call("SubtensorModule", "set_weights")
    assert not caps.has_call("SubtensorModule", "commit_weights")
    assert caps.has_api("SubnetInfoRuntimeApi", "get_metagraph")
    with pytest.raises(AttributeError):
        caps.calls = frozenset()  # type: ignore[misc]


@pytest.mark.chain
async def test_live_spec_293_runtime_lacks_timelocked_and_mechanisms(chain_url: str) -> None:
    async with AsyncSubstrateInterface(chain_url, ss58_format=42) as substrate:
        runtime = await substrate.init_runtime()
        caps = capabilities_from_metadata(runtime)
        assert capabilities_from_metadata(runtime.metadata) == caps
    assert runtime.runtime_version == 293
    assert caps.has_call("SubtensorModule", "set_weights")
    assert caps.has_call("SubtensorModule", "commit_weights")
    assert caps.has_call("SubtensorModule", "reveal_weights")
    assert caps.has_call("SubtensorModule", "serve_axon")
    assert not caps.has_call("SubtensorModule", "commit_timelocked_weights")
    assert not caps.has_call("SubtensorModule", "set_mechanism_weights")
    assert caps.has_api("SubnetInfoRuntimeApi", "get_metagraph")
    assert caps.has_api("SubnetInfoRuntimeApi", "get_selective_metagraph")
    assert not caps.has_api("SubnetInfoRuntimeApi", "get_mechagraph")
