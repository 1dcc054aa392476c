"""docs/writing-a-subnet.md is true: its files, written into an empty folder, make a subnet whose Python
blocks run, whose `task check` commands pass, whose own tests pass, and whose package declares a task the
framework loads."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inference_subnet.cli.main import app
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import ENTRY_POINT_GROUP, load_task

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "writing-a-subnet.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, file name or None, code) of every fenced block, in order."""
    found = []
    for language, info, code in BLOCK.findall(GUIDE.read_text()):
        name = re.search(r"file=(\S+)", info)
        found.append((language, name.group(1) if name else None, code))
    return found


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder holding every file the guide names, importable like the project's own folder."""
    for _, name, code in blocks():
        if name is not None:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module in [m for m in sys.modules if m == "piglatin" or m.startswith("piglatin.")]:
        del sys.modules[module]


def test_the_guide_names_its_files() -> None:
    names = {name for _, name, _ in blocks() if name}
    assert {"piglatin/task.py", "piglatin/miner.py", "tests/test_piglatin.py", "pyproject.toml"} <= names


def test_every_python_block_runs(project: Path) -> None:
    snippets = [code for language, name, code in blocks() if language == "python" and name is None]
    assert len(snippets) >= 2
    for code in snippets:
        exec(compile(code, str(GUIDE), "exec", dont_inherit=True), {"__name__": "guide"})  # noqa: S102


def test_the_task_check_commands_pass(project: Path) -> None:
    commands = [
        shlex.split(line)
        for language, _, code in blocks() if language == "bash"
        for line in code.splitlines() if line.startswith("inference-subnet task check")
    ]
    assert commands
    for command in commands:
        result = CliRunner().invoke(app, command[1:], env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        assert "all checks passed" in result.output


def test_the_localnet_command_names_a_task_that_loads(project: Path) -> None:
    lines = [line for language, _, code in blocks() if language == "bash"
             for line in code.splitlines() if "inference-subnet localnet" in line]
    assert lines
    task = shlex.split(lines[0])[shlex.split(lines[0]).index("--task") + 1]
    assert load_task(task).name == "piglatin"


def test_the_operators_handler_builds(project: Path) -> None:
    handler = load_handler(load_task("piglatin.task:PigLatinTask"), {}, "piglatin.remote:make_handler")
    assert callable(handler)


def test_the_projects_own_tests_pass(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_package_declares_its_task_under_the_entry_point(project: Path) -> None:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert load_task(declared["piglatin"]).name == "piglatin"
