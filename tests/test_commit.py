"""Commit encodings: our SCALE bytes against the codec, and the current runtime's call shapes (spec 461)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from async_substrate_interface.types import _decode_option_opaque_metadata, _decode_v15_metadata
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st
from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from inference_subnet.chain.commit import (
    DEFAULT_COMMIT_REVEAL_VERSION,
    EpochSchedule,
    epoch_index,
    hash_commit,
    legacy_epoch_schedule,
    make_salt,
    netuid_index,
    reveal_window,
    scale_compact,
    timelocked_commit,
    tlock_payload,
)
from inference_subnet.chain.weights import convert_weights

METADATA_461 = Path(__file__).resolve().parents[2] / "shared" / "chain" / "metadata-v15-spec461.hex"
DRAND_QUICKNET_GENESIS = 1692803367  # public quicknet chain info: genesis_time; period 3 s
DRAND_PERIOD = 3
ALICE = Keypair.create_from_uri("//Alice")

u16s = st.lists(st.integers(min_value=0, max_value=0xFFFF), max_size=80)


@pytest.fixture(scope="module")
def runtime_461():
    """(runtime config, metadata) of a current runtime, decoded offline as the chain README describes."""
    raw = bytes.fromhex(METADATA_461.read_text().strip().removeprefix("0x"))
    rc = RuntimeConfigurationObject(ss58_format=42)
    rc.update_type_registry(load_type_registry_preset("core"))
    metadata = _decode_v15_metadata(_decode_option_opaque_metadata(raw), runtime_config=rc)
    rc.add_portable_registry(metadata)
    return rc, metadata


@pytest.fixture(scope="module")
def codec():
    rc = RuntimeConfigurationObject(ss58_format=42)
    rc.update_type_registry(load_type_registry_preset("core"))
    return rc


# -- SCALE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**32, 2**64 - 1])
def test_compact_matches_codec(codec, n: int) -> None:
    assert scale_compact(n) == bytes(codec.create_scale_object("Compact<u128>").encode(n).data)


@settings(max_examples=150, deadline=None)
@given(uids=u16s, values=u16s, salt=u16s, version_key=st.integers(min_value=0, max_value=2**64 - 1),
       netuid=st.integers(min_value=0, max_value=4095))
def test_hash_commit_matches_codec_encoding(codec, uids, values, salt, version_key, netuid) -> None:
    """The runtime hashes ``(AccountId, u16, Vec<u16>, Vec<u16>, Vec<u16>, u64)`` with BlakeTwo256."""
    values = (values + [0] * len(uids))[: len(uids)]
    encoded = codec.create_scale_object("(AccountId, u16, Vec<u16>, Vec<u16>, Vec<u16>, u64)").encode(
        (ALICE.ss58_address, netuid, uids, values, salt, version_key))
    expected = "0x" + hashlib.blake2b(bytes(encoded.data), digest_size=32).hexdigest()
    assert hash_commit(account=ALICE.public_key, netuid=netuid, uids=uids, values=values, salt=salt,
                       version_key=version_key) == expected


def test_mechanism_hash_uses_the_storage_index(codec) -> None:
    args = {"account": ALICE.public_key, "uids": [0, 1], "values": [65535, 9], "salt": [1, 2, 3], "version_key": 0}
    assert hash_commit(netuid=5, mechid=0, **args) == hash_commit(netuid=5, **args)
    encoded = codec.create_scale_object("(AccountId, u16, Vec<u16>, Vec<u16>, Vec<u16>, u64)").encode(
        (ALICE.ss58_address, 2 * 4096 + 5, [0, 1], [65535, 9], [1, 2, 3], 0))
    expected = "0x" + hashlib.blake2b(bytes(encoded.data), digest_size=32).hexdigest()
    assert hash_commit(netuid=5, mechid=2, **args) == expected
    assert hash_commit(netuid=5, mechid=2, **args) != hash_commit(netuid=5, **args)
    assert netuid_index(5, 2) == 8197
    with pytest.raises(ValueError):
        netuid_index(5, 16)  # beyond u16


def test_hash_commit_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        hash_commit(account=b"short", netuid=1, uids=[1], values=[1], salt=[1], version_key=0)
    with pytest.raises(ValueError):
        hash_commit(account=ALICE.public_key, netuid=1, uids=[1, 2], values=[1], salt=[1], version_key=0)
    with pytest.raises(ValueError):
        hash_commit(account=ALICE.public_key, netuid=1, uids=[70000], values=[1], salt=[1], version_key=0)


def test_salt_is_fresh_u16() -> None:
    salts = [make_salt() for _ in range(20)]
    assert all(len(s) == 8 and all(0 <= v <= 0xFFFF for v in s) for s in salts)
    assert len({tuple(s) for s in salts}) == 20


# -- epochs ------------------------------------------------------------------------------------------


def test_reveal_window_matches_runtime_formula() -> None:
    # netuid 1, tempo 10: epoch index (block + 2) // 11; a commit at block 5 (epoch 0) reveals in epoch 1
    assert epoch_index(1, 10, 8) == 0 and epoch_index(1, 10, 9) == 1
    assert reveal_window(1, 10, 1, 5) == (9, 19)
    assert reveal_window(1, 10, 2, 5) == (20, 30)


@given(netuid=st.integers(0, 64), tempo=st.integers(1, 400), period=st.integers(1, 4),
       commit_block=st.integers(0, 100_000))
def test_reveal_window_is_exactly_the_reveal_epoch(netuid, tempo, period, commit_block) -> None:
    first, last = reveal_window(netuid, tempo, period, commit_block)
    target = epoch_index(netuid, tempo, commit_block) + period
    assert epoch_index(netuid, tempo, first) == target == epoch_index(netuid, tempo, last)
    assert epoch_index(netuid, tempo, first - 1) < target
    assert epoch_index(netuid, tempo, last + 1) > target
    assert first > commit_block


@given(netuid=st.integers(0, 64), tempo=st.integers(1, 400), block=st.integers(0, 100_000))
def test_legacy_schedule_points_at_the_next_legacy_epoch(netuid, tempo, block) -> None:
    schedule = legacy_epoch_schedule(netuid, tempo, block)
    next_epoch = schedule.last_epoch_block + tempo
    runs = [b for b in range(block, block + tempo + 1) if (b + netuid + 1) % (tempo + 1) == tempo]
    if schedule.last_epoch_block > 0:
        assert next_epoch == runs[0]
    assert 0 <= schedule.blocks_since_last_step <= tempo
    assert schedule.subnet_epoch_index == epoch_index(netuid, tempo, block)


# -- timelocked commits --------------------------------------------------------------------------------


def test_tlock_payload_matches_codec(codec) -> None:
    payload = tlock_payload(hotkey=ALICE.public_key, uids=[0, 7], values=[65535, 300], version_key=12)
    expected = codec.create_scale_object("(Vec<u8>, Vec<u16>, Vec<u16>, u64)").encode(
        ("0x" + ALICE.public_key.hex(), [0, 7], [65535, 300], 12))
    assert payload == bytes(expected.data)


def test_timelocked_commit_shape_and_round() -> None:
    """The ciphertext wraps exactly our plaintext (constant overhead) and targets the next reveal epoch."""
    overheads = set()
    for n in (1, 5, 64, 256):
        uids, values = convert_weights(range(n), [float(i + 1) for i in range(n)], n_neurons=n,
                                       max_weight_limit=1.0)
        before = time.time()
        commit, reveal_round = timelocked_commit(
            hotkey=ALICE.public_key, uids=uids, values=values, version_key=3, tempo=360,
            current_block=10_000, netuid=1, reveal_period_epochs=1)
        after = time.time()
        plain = tlock_payload(hotkey=ALICE.public_key, uids=uids, values=values, version_key=3)
        overheads.add(len(commit) - len(plain))
        # legacy schedule: netuid 1 at block 10_000 has its next epoch 105 blocks ahead (10_002 % 361 = 255)
        blocks_ahead = 360 - (10_000 + 1 + 1) % 361
        low = (before + blocks_ahead * 12.0 - DRAND_QUICKNET_GENESIS) // DRAND_PERIOD
        high = (after + (blocks_ahead + 10) * 12.0 - DRAND_QUICKNET_GENESIS) // DRAND_PERIOD
        assert low <= reveal_round <= high
        assert len(commit) <= 5000
    assert len(overheads) == 1 and overheads.pop() > 96  # one G2 header plus the AEAD framing


def test_timelocked_reveal_period_moves_the_round_by_one_tempo() -> None:
    common = {"hotkey": ALICE.public_key, "uids": [1], "values": [65535], "version_key": 0, "tempo": 360,
                  "current_block": 5_000, "netuid": 2}
    _, one = timelocked_commit(reveal_period_epochs=1, **common)
    _, two = timelocked_commit(reveal_period_epochs=2, **common)
    assert abs((two - one) - 360 * 12 // DRAND_PERIOD) <= 1
    _, fast = timelocked_commit(reveal_period_epochs=1, block_time=0.25, **common)
    assert fast < one
    # the storage schedule, when given, wins over the legacy one
    _, later = timelocked_commit(reveal_period_epochs=1, schedule=EpochSchedule(
        last_epoch_block=5_000, subnet_epoch_index=9, blocks_since_last_step=0), **common)
    assert later > one


def test_timelocked_commit_rejects_bad_input() -> None:
    common = {"hotkey": ALICE.public_key, "version_key": 0, "tempo": 360, "current_block": 1, "netuid": 1}
    with pytest.raises(ValueError):
        timelocked_commit(uids=[1, 2], values=[1], reveal_period_epochs=1, **common)
    with pytest.raises(ValueError):
        timelocked_commit(uids=[1], values=[1], reveal_period_epochs=0, **common)
    with pytest.raises(ValueError):
        timelocked_commit(uids=list(range(1500)), values=[1] * 1500, reveal_period_epochs=1, **common)


# -- the current runtime's calls (spec 461 metadata) -------------------------------------------------


def encode_call(runtime_461, function: str, args: dict) -> bytes:
    rc, metadata = runtime_461
    call = rc.create_scale_object("Call", metadata=metadata)
    return bytes(call.encode({"call_module": "SubtensorModule", "call_function": function,
                              "call_args": args}).data)


def decode_call(runtime_461, data: bytes) -> dict:
    rc, metadata = runtime_461
    call = rc.create_scale_object("Call", data=ScaleBytes(data), metadata=metadata)
    decoded = call.decode()
    return {"function": decoded["call_function"], **{a["name"]: a["value"] for a in decoded["call_args"]}}


def call_index(runtime_461, function: str) -> bytes:
    """(pallet index, call variant index) read from the metadata's own declarations."""
    _, metadata = runtime_461
    body = metadata.value[1]["V15"]
    pallet = next(p for p in body["pallets"] if p["name"] == "SubtensorModule")
    call_type = body["types"]["types"][pallet["calls"]["ty"]]["type"]
    variant = next(v for v in call_type["def"]["variant"]["variants"] if v["name"] == function)
    return bytes([pallet["index"], variant["index"]])


def test_commit_timelocked_weights_encodes_on_current_runtime(runtime_461) -> None:
    uids, values = convert_weights(range(8), [1, 2, 3, 4, 5, 6, 7, 8], n_neurons=8, max_weight_limit=0.5)
    commit, reveal_round = timelocked_commit(
        hotkey=ALICE.public_key, uids=uids, values=values, version_key=0, tempo=360, current_block=1234,
        netuid=7, reveal_period_epochs=1)
    data = encode_call(runtime_461, "commit_timelocked_weights", {
        "netuid": 7, "commit": "0x" + commit.hex(), "reveal_round": reveal_round,
        "commit_reveal_version": DEFAULT_COMMIT_REVEAL_VERSION})
    assert data == (call_index(runtime_461, "commit_timelocked_weights") + (7).to_bytes(2, "little")
                    + scale_compact(len(commit)) + commit + reveal_round.to_bytes(8, "little")
                    + DEFAULT_COMMIT_REVEAL_VERSION.to_bytes(2, "little"))
    back = decode_call(runtime_461, data)
    assert back["function"] == "commit_timelocked_weights"
    assert (back["netuid"], back["reveal_round"], back["commit_reveal_version"]) == (7, reveal_round, 4)


def test_commit_timelocked_mechanism_weights_encodes(runtime_461) -> None:
    commit, reveal_round = timelocked_commit(
        hotkey=ALICE.public_key, uids=[0, 1], values=[65535, 100], version_key=0, tempo=99,
        current_block=500, netuid=3, reveal_period_epochs=2)
    data = encode_call(runtime_461, "commit_timelocked_mechanism_weights", {
        "netuid": 3, "mecid": 1, "commit": "0x" + commit.hex(), "reveal_round": reveal_round,
        "commit_reveal_version": 4})
    assert data == (call_index(runtime_461, "commit_timelocked_mechanism_weights") + (3).to_bytes(2, "little")
                    + bytes([1]) + scale_compact(len(commit)) + commit + reveal_round.to_bytes(8, "little")
                    + (4).to_bytes(2, "little"))
    back = decode_call(runtime_461, data)
    assert (back["netuid"], back["mecid"], back["reveal_round"]) == (3, 1, reveal_round)


def test_set_mechanism_weights_encodes_on_current_runtime(runtime_461) -> None:
    uids, values = convert_weights([4, 9, 2], [0.5, 0.25, 0.25], n_neurons=10, max_weight_limit=1.0)
    data = encode_call(runtime_461, "set_mechanism_weights", {
        "netuid": 12, "mecid": 1, "dests": uids, "weights": values, "version_key": 5})
    vec = lambda xs: scale_compact(len(xs)) + b"".join(x.to_bytes(2, "little") for x in xs)
    assert data == (call_index(runtime_461, "set_mechanism_weights") + (12).to_bytes(2, "little") + bytes([1])
                    + vec(uids) + vec(values) + (5).to_bytes(8, "little"))
    back = decode_call(runtime_461, data)
    assert back == {"function": "set_mechanism_weights", "netuid": 12, "mecid": 1, "dests": uids,
                    "weights": values, "version_key": 5}


def test_hash_commit_and_reveal_calls_encode_on_current_runtime(runtime_461) -> None:
    salt = make_salt()
    digest = hash_commit(account=ALICE.public_key, netuid=4, uids=[1, 2], values=[65535, 7], salt=salt,
                         version_key=0)
    data = encode_call(runtime_461, "commit_weights", {"netuid": 4, "commit_hash": digest})
    assert data == call_index(runtime_461, "commit_weights") + (4).to_bytes(2, "little") + bytes.fromhex(digest[2:])
    reveal = decode_call(runtime_461, encode_call(runtime_461, "reveal_weights", {
        "netuid": 4, "uids": [1, 2], "values": [65535, 7], "salt": salt, "version_key": 0}))
    assert reveal["salt"] == salt and reveal["values"] == [65535, 7]
