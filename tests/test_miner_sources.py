"""Who may call a miner (pure blacklist decision) and where its metagraph comes from (static, JSON file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_subnet.chain.types import AxonInfo, ChainError, Metagraph, Neuron
from inference_subnet.miner.blacklist import check_caller
from inference_subnet.miner.sources import (
    FileMetagraphSource,
    StaticMetagraphSource,
    source_from_settings,
)
from inference_subnet.settings import load_settings


def _n(uid: int, stake: float, permit: bool) -> Neuron:
    return Neuron(uid=uid, hotkey=f"hk{uid}", coldkey="ck", stake=stake, validator_permit=permit,
                  registration_block=10 + uid, axon=AxonInfo(ip="10.1.2.3", port=8000 + uid))


MG = Metagraph(netuid=3, block=50, neurons=(_n(0, 100.0, True), _n(1, 100.0, False), _n(2, 0.5, True)))


def test_blacklist_rules_in_order() -> None:
    assert check_caller(MG, "hk0", min_stake=1.0) is None
    assert check_caller(MG, "nobody").code == "not_registered"
    assert check_caller(MG, "hk1", min_stake=1.0).code == "no_validator_permit"
    assert check_caller(MG, "hk1", require_validator_permit=False, min_stake=1.0) is None
    refusal = check_caller(MG, "hk2", min_stake=1.0)
    assert refusal.code == "low_stake" and "0.5" in refusal.reason
    assert check_caller(MG, "hk2", min_stake=0.0) is None


async def test_static_source() -> None:
    source = StaticMetagraphSource(MG)
    assert await source.current() is MG
    assert 0 <= source.age_seconds < 5


def write(path: Path, metagraph: Metagraph, mtime: float) -> None:
    path.write_text(metagraph.to_json())
    os.utime(path, (mtime, mtime))


async def test_file_source_reads_reloads_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "metagraph.json"
    write(path, MG, 1_000_000.0)
    source = FileMetagraphSource(path, check_interval=0.0)
    first = await source.current()
    assert first == MG and first.by_hotkey["hk0"].axon == AxonInfo(ip="10.1.2.3", port=8000)
    assert source.age_seconds > 1000  # the file's own age, not the time since we read it

    newer = Metagraph(netuid=3, block=51, neurons=MG.neurons + (_n(3, 7.0, True),))
    write(path, newer, 1_000_100.0)
    assert (await source.current()).block == 51

    path.write_text("{ half written")
    os.utime(path, (1_000_200.0, 1_000_200.0))
    assert (await source.current()).block == 51  # last good snapshot kept

    path.unlink()
    assert (await source.current()).block == 51


async def test_file_source_checks_the_file_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "metagraph.json"
    write(path, MG, 1_000_000.0)
    source = FileMetagraphSource(path, check_interval=3600.0)
    assert (await source.current()).block == 50
    write(path, Metagraph(netuid=3, block=99, neurons=MG.neurons), 1_000_500.0)
    assert (await source.current()).block == 50  # not re-checked inside the interval


async def test_file_source_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="metagraph file not found: .*missing.json"):
        await FileMetagraphSource(tmp_path / "missing.json").current()
    bad = tmp_path / "bad.json"
    bad.write_text('{"netuid": 1}')
    with pytest.raises(ChainError, match="bad.json is not a valid metagraph JSON"):
        FileMetagraphSource(bad).load()


def test_source_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "mg.json"
    path.write_text(MG.to_json())
    source = source_from_settings(load_settings(None, chain={"metagraph_file": path}))
    assert isinstance(source, FileMetagraphSource) and source.path == path
    from inference_subnet.chain.refresh import RefreshingMetagraphSource

    chained = source_from_settings(
        load_settings(None, chain={"network": "ws://127.0.0.1:1", "netuid": 7, "metagraph_refresh_seconds": 3})
    )
    assert isinstance(chained, RefreshingMetagraphSource)
    assert (chained.netuid, chained.interval) == (7, 3)
    assert chained.client.endpoints == ["ws://127.0.0.1:1"]
