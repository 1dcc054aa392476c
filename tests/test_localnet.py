"""``inference-subnet localnet``: the plan and verdict as pure logic, then whole runs as a user starts them,
judged from the JSON report and, on the real runtime, from chain storage read independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_subnet.localnet.plan import judge, plan_miners


def test_plan_mixes_honest_and_faulty_miners_on_the_given_ports() -> None:
    plans = plan_miners([9001, 9002, 9003, 9004])
    assert [p.port for p in plans] == [9001, 9002, 9003, 9004]
    assert [p.behaviour for p in plans] == ["honest", "wrong", "honest", "slow"]
    assert len({p.hotkey_name for p in plans}) == 4


def test_plan_rejects_unknown_behaviours_and_empty_subnets() -> None:
    with pytest.raises(ValueError, match="unknown behaviour"):
        plan_miners([1, 2], ["honest", "lazy"])
    with pytest.raises(ValueError, match="at least one miner"):
        plan_miners([])


def test_verdict_needs_every_honest_miner_above_every_faulty_one() -> None:
    plans = plan_miners([1, 2, 3])  # honest, wrong, honest
    hotkeys = {0: "h0", 1: "w1", 2: "h2"}
    assert judge({"h0": 0.4, "w1": 0.2, "h2": 0.4}, plans, hotkeys).ok
    tie = judge({"h0": 0.4, "w1": 0.3, "h2": 0.3}, plans, hotkeys)
    assert not tie.ok and "does not outweigh" in tie.reason
    assert not judge({}, plans, hotkeys).ok
    assert not judge({"h0": 1.0}, plan_miners([1, 2], ["honest"]), {0: "h0", 1: "h1"}).ok


def run_localnet(tmp_path: Path, *args: str, timeout: float) -> tuple[dict, str]:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "inference_subnet.cli.main", "localnet", "--no-live", "--report", str(report),
           "--workdir", str(tmp_path / "work"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ISN_LOG_LEVEL": "WARNING"})
    output = done.stdout + done.stderr
    assert report.is_file(), output[-3000:]
    data = json.loads(report.read_text())
    assert done.returncode == (0 if data["verdict_ok"] else 1), output[-3000:]
    return data, output


def assert_healthy_subnet(report: dict) -> None:
    assert report["crashed"] == []
    assert any(s["outcome"] == "success" for s in report["weight_sets"]), report["weight_sets"]
    assert report["verdict_ok"], report["verdict"]
    by_behaviour: dict[str, list[float]] = {}
    for miner in report["miners"]:
        by_behaviour.setdefault(miner["behaviour"], []).append(report["weights_on_chain"].get(miner["hotkey"], 0.0))
    assert min(by_behaviour["honest"]) > max(w for b, ws in by_behaviour.items() if b != "honest" for w in ws)
    assert report["organic_ok"] > 0 and report["organic_requests"] >= report["organic_ok"]
    assert sum(m["organic_served"] for m in report["miners"]) == report["organic_ok"]
    assert report["rounds"] > 0


def test_localnet_on_the_in_memory_chain(tmp_path: Path) -> None:
    report, output = run_localnet(tmp_path, "--miners", "4", "--duration", "20", timeout=180)
    assert report["chain"] == "memory" and "in-memory chain" in output
    assert_healthy_subnet(report)


@pytest.mark.chain
async def test_localnet_on_the_real_runtime_sets_weights_read_back_from_storage(
    tmp_path: Path, chain_url: str
) -> None:
    report, output = run_localnet(
        tmp_path, "--chain", "real", "--chain-url", chain_url, "--miners", "4", "--duration", "45", timeout=420
    )
    assert report["chain"] == "real" and report["chain_url"] == chain_url
    assert_healthy_subnet(report)
    assert report["seconds_to_first_weights"] is not None

    from inference_subnet.chain.substrate import MODULE, SubstrateChainClient

    async with SubstrateChainClient(chain_url) as chain:
        netuid = report["netuid"]
        validator_uid = await chain.query(MODULE, "Uids", [netuid, report["validator_hotkey"]])
        stored = await chain.query(MODULE, "Weights", [netuid, validator_uid])
        graph = await chain.metagraph(netuid)
    total = sum(int(value) for _, value in stored)
    from_storage = {graph.by_uid[int(uid)].hotkey: int(value) / total for uid, value in stored}
    assert from_storage == pytest.approx(report["weights_on_chain"])


def test_tasks_flag_takes_a_comma_separated_list_and_names_unknown_tasks() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inference_subnet.cli.main", "localnet", "--tasks", "arithmetic,nope", "--no-live"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "--task: unknown task 'nope'" in done.stdout + done.stderr
