"""From a spec (and from shipped examples) to a subnet setting weights, the way an owner would go:
``inference-subnet new``, install the project into a fresh virtual environment, ``make test`` (green), then
``make localnet`` on the in-memory chain with honest and faulty miners.

The fresh environment sees this framework through a ``.pth`` file rather than a reinstall (its heavy
dependencies are already here); the generated project itself is installed into it, so its tasks are found
through its ``inference_subnet.tasks`` entry points exactly as after a ``pip install``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "examples" / "specs"
LOCALNET_SECONDS = 30


class FreshVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
        (site,) = root.glob("lib/python*/site-packages")
        framework_site = sysconfig.get_paths()["purelib"]
        (site / "inference_subnet_framework.pth").write_text(f"import site; site.addsitedir({framework_site!r})\n")
        self.python = str(root / "bin" / "python")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env |= {"ISN_LOG_LEVEL": "WARNING", "COLUMNS": "120"}

    def run(self, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def new(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        done = self.run(self.python, "-m", "inference_subnet.cli.main", "new", *args, cwd=cwd, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def install(self, project: Path) -> None:
        done = self.run(self.python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
                        str(project), cwd=project, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        (self.root / ".installed").touch()  # `make setup` is done: the Makefile's targets run as they are

    def make(self, target: str, project: Path, *, args: str = "", timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.run("make", "-s", target, f"VENV={self.root}", f"ARGS={args}", cwd=project, timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return FreshVenv(tmp_path_factory.mktemp("venv") / "env")


def localnet(venv: FreshVenv, project: Path, work: Path) -> tuple[dict, float]:
    """``make localnet`` for a bounded time; the report and when the command started."""
    report = work / "report.json"
    started = time.monotonic()
    done = venv.make("localnet", project, args=f"--duration {LOCALNET_SECONDS} --no-live --report {report} "
                                               f"--workdir {work / 'run'}", timeout=LOCALNET_SECONDS + 150)
    output = done.stdout + done.stderr
    assert report.is_file(), output[-4000:]
    data = json.loads(report.read_text())
    assert done.returncode == (0 if data["verdict_ok"] else 1), output[-4000:]
    return data, started


def assert_ranked(report: dict) -> None:
    assert report["crashed"] == [], report["crashed"]
    assert any(s["outcome"] == "success" for s in report["weight_sets"]), report["weight_sets"]
    weights = {m["behaviour"]: [] for m in report["miners"]}
    for m in report["miners"]:
        weights[m["behaviour"]].append(report["weights_on_chain"].get(m["hotkey"], 0.0))
    faulty = [w for b, ws in weights.items() if b != "honest" for w in ws]
    assert min(weights["honest"]) > max(faulty), weights
    assert report["verdict_ok"], report["verdict"]


def test_a_two_task_spec_runs_as_a_subnet(venv: FreshVenv, tmp_path: Path) -> None:
    project = tmp_path / "textops"
    command_started = time.monotonic()
    generated = venv.new(str(SPECS / "textops.toml"), "--out", str(project), cwd=tmp_path)
    assert "generated 18 files for task(s) caesar, stats" in " ".join(generated.stderr.split())
    venv.install(project)
    installed = venv.run(venv.python, "-c", "from inference_subnet.protocol.task import load_task; "
                         "print(load_task('caesar').route, load_task('stats').route)", cwd=project, timeout=60)
    assert installed.stdout.split() == ["/tasks/caesar", "/tasks/stats"], installed.stderr

    tests = venv.make("test", project)
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert "10 passed" in tests.stdout

    report, localnet_started = localnet(venv, project, tmp_path)
    assert_ranked(report)
    assert report["organic_ok"] > 0 and report["rounds"] > 0
    first = report["seconds_to_first_weights"]
    assert first is not None
    print(f"\n[textops] generated tests: {tests.stdout.strip().splitlines()[-1]}; "
          f"from `inference-subnet new` to first weights: {localnet_started - command_started + first:.1f}s "
          f"(generate+install+tests {localnet_started - command_started:.1f}s, localnet to weights {first:.1f}s); "
          f"weights {json.dumps({m['behaviour'] + str(m['uid']): round(report['weights_on_chain'].get(m['hotkey'], 0.0), 3) for m in report['miners']})}")


@pytest.mark.parametrize("example", ["arithmetic", "ocr", "llm"])
def test_projects_from_examples_pass_their_tests(venv: FreshVenv, tmp_path: Path, example: str) -> None:
    project = tmp_path / f"from-{example}"
    venv.new("--from-example", example, "--name", f"e2e-{example}", "--out", str(project), cwd=tmp_path)
    venv.install(project)
    tests = venv.make("test", project)
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert "4 passed" in tests.stdout
    print(f"\n[{example}] generated tests: {tests.stdout.strip().splitlines()[-1]}")
    if example == "arithmetic":
        report, _ = localnet(venv, project, tmp_path)
        assert_ranked(report)
        print(f"[{example}] localnet: first weights after {report['seconds_to_first_weights']}s, "
              f"verdict: {report['verdict']}")
