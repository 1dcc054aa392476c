"""A miner operator's own handler (``--handler module:factory`` / ``miner.handlers``): a module outside the
package serves a real miner process, the framework's behaviours wrap it, and a bad path is one line naming
the flag and the real cause."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import pytest
from conftest import free_port
from test_miner_processes import post_fresh, setup_subnet, signed
from typer.testing import CliRunner

from inference_subnet.cli.main import app
from inference_subnet.miner.process import MinerProcess

BACKEND = '''
"""An operator's backend: answers from a "model server" (here: a constant table) instead of computing."""

def make(options):
    offset = int(options.get("offset", 0))

    async def handle(request):
        return {"result": 1000 + offset + request.a}

    return handle


not_a_factory = 42
'''


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``operator_backend`` in its own folder, importable by this process and by child processes."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "operator_backend.py").write_text(textwrap.dedent(BACKEND))
    (folder / "broken_backend.py").write_text("import no_such_dependency_xyz\n\ndef make(options):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder


async def test_a_miner_process_serves_a_handler_from_a_module_outside_the_package(
    tmp_path: Path, backend: Path, redis_url: str
) -> None:
    miner, validator, _, metagraph = setup_subnet(tmp_path)
    env = {
        "REDIS_URL": redis_url,
        "ISN_SUBNET_NAME": f"handler{free_port()}",
        "PYTHONPATH": os.pathsep.join([str(backend), os.environ.get("PYTHONPATH", "")]),
    }
    common = {"wallet_path": tmp_path / "wallets", "wallet_name": "miner", "metagraph_file": metagraph}
    own = MinerProcess(port=free_port(), env=env, extra_args=["--handler", "operator_backend:make"], **common)
    wrong = MinerProcess(port=free_port(), env=env, behaviour="wrong",
                         extra_args=["--handler", "arithmetic=operator_backend:make"], **common)
    default = MinerProcess(port=free_port(), env=env, **common)
    procs = [own.start(), wrong.start(), default.start()]
    try:
        await asyncio.gather(*(p.wait_ready_async() for p in procs))
        body = b'{"op":"add","a":20,"b":22}'
        answers = [await post_fresh(p.url, body, signed(validator, miner.ss58_address, body)) for p in procs]
        assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
        # The operator's handler answers, not the task's default_handler; the framework's `wrong`
        # behaviour wraps it (Task.corrupt's default moves the integer); the default stays the default.
        assert [r.json() for r in answers] == [{"result": 1020}, {"result": 1021}, {"result": 42}]
    finally:
        for p in procs:
            p.stop()


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("no_such_module_abc:make", "cannot import module no_such_module_abc: No module named 'no_such_module_abc'"),
        ("broken_backend:make", "cannot import module broken_backend: No module named 'no_such_dependency_xyz'"),
        ("operator_backend:missing", "module operator_backend has no attribute 'missing'"),
        ("operator_backend:not_a_factory", "is a int, not a callable factory"),
        ("operator_backend", "is not [TASK=]module:factory"),
        ("image=operator_backend:make", "image is not a served task"),
    ],
)
def test_a_bad_handler_is_one_line_naming_the_flag_and_the_cause(
    tmp_path: Path, backend: Path, handler: str, message: str
) -> None:
    _, _, _, metagraph = setup_subnet(tmp_path)
    args = ["miner", "--wallet-path", str(tmp_path / "wallets"), "--wallet-name", "miner",
            "--metagraph-file", str(metagraph), "--handler", handler]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --handler"), result.output
    assert message in " ".join(result.output.split()), result.output


def test_a_bare_handler_path_needs_a_task_name_when_several_tasks_are_served(tmp_path: Path, backend: Path) -> None:
    _, _, _, metagraph = setup_subnet(tmp_path)
    args = ["miner", "--wallet-path", str(tmp_path / "wallets"), "--wallet-name", "miner",
            "--metagraph-file", str(metagraph), "--task", "arithmetic", "--task", "test_gateway_helpers:CountingTask",
            "--handler", "operator_backend:make"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--handler: 'operator_backend:make' names no task and this miner serves arithmetic, counting" in (
        " ".join(result.output.split()))


def test_the_setting_names_the_factory_per_task(tmp_path: Path, backend: Path) -> None:
    """``miner.handlers`` in the TOML file is read like the flag, and checked like it."""
    _, _, _, metagraph = setup_subnet(tmp_path)
    config = tmp_path / "miner.toml"
    config.write_text('[miner.handlers]\narithmetic = "operator_backend:missing"\n')
    args = ["--config", str(config), "miner", "--wallet-path", str(tmp_path / "wallets"), "--wallet-name",
            "miner", "--metagraph-file", str(metagraph)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--handler" in result.output and "has no attribute 'missing'" in result.output
