"""``inference-subnet localnet``: the plan and verdict as pure logic, then whole runs as a user starts them,
judged from the JSON report and, on the real runtime, from chain storage read independently."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from inference_subnet.localnet.plan import judge, judge_organic, plan_miners


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


def test_organic_verdict_bounds_what_faulty_miners_answer() -> None:
    assert judge_organic({1: 96, 2: 4}, faulty_uids=[2]).ok  # 4%
    over = judge_organic({1: 90, 2: 6, 3: 4}, faulty_uids=[2, 3])
    assert not over.ok and "10 of 100" in over.reason
    assert not judge_organic({}, faulty_uids=[2]).ok


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
    # Users reach only miners the validator judged good: faulty miners answer at most 5% (the verdict says
    # so too), and the answers users got are graded by the task's scorer, not by HTTP status.
    faulty = sum(m["organic_served"] for m in report["miners"] if m["behaviour"] != "honest")
    assert faulty <= 0.05 * report["organic_ok"], report["miners"]
    bad = sum(m["organic_bad"] for m in report["miners"])
    assert report["organic_good"] == report["organic_ok"] - bad and report["organic_good"] > 0
    assert report["rounds"] > 0
    assert all(m["synthetic_calls"] > 0 for m in report["miners"]), report["miners"]
    assert report["blocks"] == report["head_block"] - report["start_block"] > 0


class Output:
    """A child's merged stdout, read line by line in a thread so the test can wait for a line, bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float, count: int = 1) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout):
                raise AssertionError(f"no {text!r} within {timeout:g}s:\n{self.text[-3000:]}")

    @property
    def text(self) -> str:
        return "".join(self.lines)


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_localnet_on_the_in_memory_chain_reports_its_access_and_keeps_running(tmp_path: Path) -> None:
    """A short run with --keep: the report and summary come first, the subnet stays up and the printed key
    calls the gateway, then Ctrl-C stops every process."""
    report_file = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "inference_subnet.cli.main", "localnet", "--no-live", "--report", str(report_file),
           "--workdir", str(tmp_path / "work"), "--miners", "4", "--duration", "20", "--keep"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ISN_LOG_LEVEL": "WARNING"})
    output = Output(proc)
    try:
        output.wait_for("kept running", timeout=240)
        output.wait_for("API key", timeout=10, count=3)
        report = json.loads(report_file.read_text())
        access = report["access"]
        url, key = access["gateway_url"], access["api_key"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and key.startswith("isn_")
        assert access["dashboard_url"] == f"{url}/dashboard" and access["docs_url"] == f"{url}/docs"
        text = output.text
        # printed before the run (so a user can start at once), in the summary, and again when kept
        for line in (f"gateway    {url}", f"dashboard  {url}/dashboard", f"API key    {key}"):
            assert text.count(line) == 3, (line, text[-3000:])
        assert text.index(f"API key    {key}") < text.index("report written to")
        assert f"curl -H 'Authorization: Bearer {key}'" in text

        # kept running: the printed key works against the gateway, which routes to live miners
        with httpx.Client(base_url=url, timeout=30) as http:
            answer = http.post("/v1/tasks/arithmetic", json={"op": "add", "a": 2, "b": 3},
                               headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            assert isinstance(answer.json()["result"], int) and answer.headers["x-miner-uid"].isdigit()
            assert http.post("/v1/tasks/arithmetic", json={"op": "add", "a": 2, "b": 3}).status_code == 401
            assert http.post("/v1/tasks/arithmetic", json={"op": "add", "a": 2, "b": 3},
                             headers={"Authorization": "Bearer isn_nope"}).status_code == 401
            dashboard = http.get("/dashboard/data").json()
            assert len(dashboard["miners"]) == 5 and http.get("/docs").status_code == 200
        ports = [int(url.rsplit(":", 1)[1])] + [m["port"] for m in report["miners"]]
        assert not any(refuses(port) for port in ports)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == (0 if report["verdict_ok"] else 1), output.text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Ctrl-C stopped the gateway and every miner
    deadline = time.monotonic() + 10
    while not all(refuses(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(refuses(port) for port in ports), [p for p in ports if not refuses(p)]

    assert report["chain"] == "memory" and "in-memory chain" in output.text
    assert_healthy_subnet(report)
    # blocks: every line counts the same thing, the head and how far it moved since the run started
    summary = re.search(r"head block (\d+) \(\+(\d+) in this run\) · rounds (\d+) · synthetic calls (\d+)",
                        output.text)
    assert summary is not None, output.text[-3000:]
    assert [int(g) for g in summary.groups()] == [
        report["head_block"], report["blocks"], report["rounds"], sum(m["synthetic_calls"] for m in report["miners"])]
    status = [(int(h), int(b)) for h, b in re.findall(r"^  head block (\d+) \(\+(\d+) in this run\), rounds",
                                                     output.text, flags=re.MULTILINE)]
    assert len(status) >= 3, output.text[-3000:]  # two in the 20 s run, one at least once kept running
    assert all(h - b == report["start_block"] for h, b in status)
    assert any(h < report["head_block"] for h, _ in status) and status == sorted(status)


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


def importable_from(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules in ``folder`` importable by the child processes localnet starts."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p))


CRASHING_BACKEND = '''
def make(options):
    async def handle(request):
        raise ZeroDivisionError("the model server returned nothing")

    return handle
'''


def test_a_handler_that_raises_is_named_in_the_report_with_its_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every miner runs an operator's handler that raises: the run fails, and the report and summary say why
    (each miner's first logged error), with each miner's whole log in the workdir."""
    (tmp_path / "crashing_backend.py").write_text(CRASHING_BACKEND)
    importable_from(tmp_path, monkeypatch)
    monkeypatch.setenv("ISN_MINER__HANDLERS", json.dumps({"arithmetic": "crashing_backend:make"}))
    report, output = run_localnet(tmp_path, "--miners", "2", "--duration", "4", timeout=240)
    assert not report["verdict_ok"]
    error = "handler of task arithmetic failed: ZeroDivisionError: the model server returned nothing"
    honest = [m for m in report["miners"] if m["behaviour"] == "honest"]
    assert honest and all(m["first_error"] == error for m in honest), report["miners"]
    assert f"honest miners logged errors (miner-0: {error}" in report["verdict"]
    for miner in report["miners"]:
        log_file = tmp_path / "work" / "miners" / f"{miner['name']}.log"
        assert miner["log_file"] == str(log_file)
        assert "Traceback (most recent call last)" in log_file.read_text()
    assert f"miner-0 (honest) first error: {error} (log: {tmp_path / 'work' / 'miners' / 'miner-0.log'})" in output


BROKEN_SCORER = '''
from inference_subnet.tasks.arithmetic import ArithmeticTask


class BrokenScorerTask(ArithmeticTask):
    def score(self, request, responses, timings):
        raise KeyError("reference table")
'''


def test_a_scorer_that_raises_is_named_in_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_scorer.py").write_text(BROKEN_SCORER)
    importable_from(tmp_path, monkeypatch)
    report, output = run_localnet(tmp_path, "--task", "broken_scorer:BrokenScorerTask", "--miners", "2",
                                  "--duration", "4", timeout=240)
    assert not report["verdict_ok"]
    assert report["scoring_error"] == "arithmetic: KeyError: 'reference table'"
    assert "scoring failed (arithmetic: KeyError: 'reference table')" in report["verdict"]
    assert "scoring failed, first: arithmetic: KeyError: 'reference table'" in output
