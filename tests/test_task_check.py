"""``inference-subnet task check``: a sound task passes every step; a broken one is shown failing at the
step that broke, with the cause, and the command exits non-zero."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inference_subnet.cli.main import app

BROKEN = '''
import random
from pydantic import BaseModel
from inference_subnet.protocol.task import Task


class Req(BaseModel):
    word: str


class Resp(BaseModel):
    word: str = ""   # a default on every field: garbage validates


class Generous(Task[Req, Resp]):
    """Scores every answer 1.0, so a wrong or missing answer earns as much as an honest one."""

    name = "generous"
    Request = Req
    Response = Resp
    default_handler = "broken_tasks:make_echo"

    def synthesize(self, rng):
        return Req(word=rng.choice(["alpha", "beta"]))

    def score(self, request, responses, timings):
        return [1.0 for _ in responses]


class Crashing(Generous):
    name = "crashing"
    default_handler = "broken_tasks:make_crashing"


class Sleepy(Generous):
    name = "sleepy"
    timeout = 0.2
    default_handler = "broken_tasks:make_sleepy"


def make_echo(options):
    async def handle(request):
        return Resp(word=request.word.upper())
    return handle


def make_crashing(options):
    async def handle(request):
        raise KeyError("model_path")
    return handle


def make_sleepy(options):
    import asyncio

    async def handle(request):
        await asyncio.sleep(5)
    return handle
'''


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "broken_tasks.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["task", "check", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def row(output: str, check: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(f"│ {check} ")]
    return " ".join(line.split())


def test_the_arithmetic_example_passes_every_check() -> None:
    code, output = run("arithmetic", "--requests", "4")
    assert code == 0, output
    assert "all checks passed" in output
    assert "│ handler │ ok │ 4 │" in row(output, "handler")
    assert "wrong 0.00 vs honest 1.00" in row(output, "wrong scores lower")


def test_a_task_that_scores_everything_high_fails_on_wrong_and_garbage(broken: Path) -> None:
    code, output = run("broken_tasks:Generous")
    assert code == 1, output
    assert "FAIL" in row(output, "wrong scores lower") and "wrong 1.00 vs honest 1.00" in output
    assert "FAIL" in row(output, "garbage scores 0") and "garbage 1.00" in output
    assert "FAIL" in row(output, "garbage is refused") and "Resp accepts" in output
    assert "ok" in row(output, "handler")
    assert "FAILED: wrong scores lower, garbage scores 0, garbage is refused" in output


def test_a_crashing_handler_shows_its_error_and_stops_that_requests_steps(broken: Path) -> None:
    code, output = run("broken_tasks:Crashing", "--requests", "2")
    assert code == 1
    assert "FAIL" in row(output, "handler") and "KeyError: 'model_path'" in row(output, "handler")
    assert "not run" in row(output, "honest scores high")
    assert "FAILED: handler, garbage is refused (5 later check(s) not run)" in output


def test_a_handler_past_the_timeout_is_named(broken: Path) -> None:
    code, output = run("broken_tasks:Sleepy", "--requests", "1")
    assert code == 1
    assert "no answer within the task's timeout (0.2s)" in row(output, "handler")


def test_another_handler_can_be_checked(broken: Path) -> None:
    code, output = run("broken_tasks:Crashing", "--handler", "broken_tasks:make_echo")
    assert "ok" in row(output, "handler")  # the echo handler answers; the task's scoring is still broken
    assert code == 1 and "wrong 1.00 vs honest 1.00" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_q:Task"], "TASK: no_such_module_q:Task: cannot import module no_such_module_q"),
        (["arithmetic", "--handler", "broken_tasks:nothing"], "--handler: handler broken_tasks:nothing: module "
                                                               "broken_tasks has no attribute 'nothing'"),
    ],
)
def test_bad_paths_are_one_line_with_exit_2(broken: Path, args: list[str], message: str) -> None:
    code, output = run(*args)
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1 and message in " ".join(output.split())
