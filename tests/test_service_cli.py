"""`inference-subnet validator run|service` as real processes: start, serve, stop on SIGTERM, clear errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.cli.validator import SERVICE_NAMES
from inference_subnet.validator.runner import SERVICES

SERVING = "serving on http://"


def test_cli_names_match_the_runner() -> None:
    assert SERVICE_NAMES == SERVICES


class Proc:
    """A CLI child process whose readiness is its "serving on" log line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inference_subnet.cli.main", *args], env=env, text=True, bufsize=1,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if SERVING in line:
                self.ready.set()
        self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def env(tmp_path: Path, redis_url: str, keys) -> dict[str, str]:
    create_wallet(tmp_path / "wallets", "val", "default")
    return {**os.environ, "REDIS_URL": redis_url, "ISN_SUBNET_NAME": keys.subnet, "ISN_LOG_LEVEL": "INFO",
            "ISN_WALLET__PATH": str(tmp_path / "wallets"), "ISN_WALLET__NAME": "val"}


async def test_run_serves_and_stops_cleanly_on_sigterm(env: dict[str, str], redis) -> None:
    port = free_port()
    proc = Proc(["validator", "run", "--network", "memory", "--host", "127.0.0.1", "--port", str(port)], env)
    try:
        assert proc.ready.wait(60) and proc.proc.poll() is None, proc.output()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            health = (await http.get("/health")).json()
            assert health["ok"] and set(health["services"]) == set(SERVICES)
            ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text
            instance = health["instance"]
        beats = [k async for k in redis.scan_iter(match=f"isn:{env['ISN_SUBNET_NAME']}:*:heartbeat:{{i:{instance}}}:*")]
        assert len(beats) == len(SERVICES)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.output()
        assert "stopped" in proc.output()
        assert [k async for k in redis.scan_iter(match=f"isn:{env['ISN_SUBNET_NAME']}:*:heartbeat:*")] == []
    finally:
        proc.kill()


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inference_subnet.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_unknown_service_names_the_argument(env: dict[str, str]) -> None:
    out = run_cli(["validator", "service", "gateway"], env)
    assert out.returncode == 2
    assert "NAME: unknown service 'gateway'" in out.stderr and "gateway run" in out.stderr


def test_missing_wallet_names_the_flags(env: dict[str, str], tmp_path: Path) -> None:
    out = run_cli(["validator", "run", "--network", "memory", "--wallet-path", str(tmp_path / "none")], env)
    assert out.returncode == 2 and "--wallet.name/--wallet.hotkey/--wallet.path" in out.stderr


def test_busy_port_names_the_flags(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli(["validator", "service", "synthesizing", "--host", "127.0.0.1", "--port", str(port)], env)
    assert out.returncode == 2 and f"--host/--port: cannot listen on 127.0.0.1:{port}" in out.stderr


def test_unreachable_chain_names_the_flag(env: dict[str, str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    out = run_cli(["validator", "service", "weights", "--network", url], env | {"ISN_CHAIN__CALL_TIMEOUT": "2"})
    assert out.returncode == 2 and f"--subtensor.network: cannot reach {url}" in out.stderr
