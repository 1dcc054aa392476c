"""Where log lines go, as pm2 and Docker collect them: a service's INFO on stdout, warnings and errors on
stderr, one timestamp a line, `--log-format json` one object a line (uvicorn's own loggers included)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from conftest import free_port
from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet

TIMESTAMP = r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d{3}"
EMIT = textwrap.dedent(
    """
    import logging, sys
    from inference_subnet.logs import setup_logging
    setup_logging("INFO", sys.argv[1], split=sys.argv[2] == "split")
    logging.getLogger("svc").info("serving on %s", "redis://u:hunter2@h:1/0")
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
    logging.getLogger("svc").warning("slow miner")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("svc").exception("scoring failed")
    """
)


def emit(log_format: str, split: str = "split") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", EMIT, log_format, split], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_text_lines_split_by_level_with_one_timestamp() -> None:
    out = emit("text")
    assert out.returncode == 0, out.stderr
    info = out.stdout.splitlines()
    assert [re.sub(rf"^{TIMESTAMP} ", "", line) for line in info] == [
        "INFO svc: serving on redis://***@h:1/0",
        "INFO uvicorn.error: Uvicorn running",
    ]  # the quiet library (alembic) is not there; the URL password is masked
    warning, error, *trace = out.stderr.splitlines()
    assert re.fullmatch(rf"{TIMESTAMP} WARNING svc: slow miner", warning)
    assert re.fullmatch(rf"{TIMESTAMP} ERROR svc: scoring failed", error)
    assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "ZeroDivisionError: division by zero"
    for line in info + [warning, error]:
        assert len(re.findall(TIMESTAMP, line)) == 1, line


def test_json_one_object_a_line_split_by_level() -> None:
    out = emit("json")
    assert out.returncode == 0, out.stderr
    info = [json.loads(line) for line in out.stdout.splitlines()]
    problems = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in info] == [
        ("INFO", "svc", "serving on redis://***@h:1/0"), ("INFO", "uvicorn.error", "Uvicorn running"),
    ]
    assert [(r["level"], r["message"]) for r in problems] == [("WARNING", "slow miner"), ("ERROR", "scoring failed")]
    for record in info + problems:
        assert set(record) <= {"time", "level", "logger", "message", "exception"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert "exception" not in problems[0]
    assert problems[1]["exception"].startswith("Traceback") and "ZeroDivisionError" in problems[1]["exception"]


def test_one_shot_commands_keep_stdout_for_their_result() -> None:
    out = emit("text", split="no")
    assert out.stdout == ""
    assert "INFO svc: serving on" in out.stderr and "WARNING svc: slow miner" in out.stderr


def test_a_miner_under_a_supervisor(tmp_path: Path, redis_url: str) -> None:
    """A real miner with --log-format json: its start-up (ours and uvicorn's) on stdout, its warning (the
    hotkey is not in the metagraph) on stderr, every line one JSON object."""
    create_wallet(tmp_path / "wallets", "miner", "default")
    metagraph = tmp_path / "metagraph.json"
    metagraph.write_text(Metagraph(netuid=1, block=1, neurons=(
        Neuron(uid=0, hotkey="5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM",
               coldkey="5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM", stake=1.0, validator_permit=True,
               registration_block=1),
    )).to_json())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISN_")}
    env |= {"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"logs{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference_subnet.cli.main", "miner", "--log-format", "json", "--host", "127.0.0.1",
         "--port", str(port), "--wallet.path", str(tmp_path / "wallets"), "--wallet.name", "miner",
         "--metagraph-file", str(metagraph)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/capacity", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.communicate(timeout=10)
        time.sleep(1.0)  # the unregistered-hotkey warning follows the first metagraph read
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    info = [json.loads(line) for line in stdout.splitlines()]
    problems = [json.loads(line) for line in stderr.splitlines()]
    assert info and {r["level"] for r in info} <= {"INFO", "DEBUG"}
    assert {r["level"] for r in problems} <= {"WARNING", "ERROR", "CRITICAL"}
    loggers = {r["logger"] for r in info}
    assert "inference_subnet.cli.miner" in loggers and "uvicorn.error" in loggers, loggers
    assert any("not registered" in r["message"] or "not in the metagraph" in r["message"] for r in problems), problems
    for record in info + problems:
        assert {"time", "level", "logger", "message"} <= set(record)
