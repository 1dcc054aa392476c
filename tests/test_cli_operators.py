"""The CLI as Bittensor operators use it: btcli/SDK flag spellings on every command, `--version`, `config
show` without secrets, quiet key commands. (Encrypted hotkeys: test_wallet_encrypted.py; log streams:
test_log_streams.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from conftest import free_port
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.cli import common
from inference_subnet.cli.main import app
from inference_subnet.cli.options import (
    NETUID_FLAGS,
    NETWORK_FLAGS,
    WALLET_HOTKEY_FLAGS,
    WALLET_NAME_FLAGS,
    WALLET_PATH_FLAGS,
)
from inference_subnet.redaction import redact_url
from inference_subnet.settings import Settings

FLAGS = {
    "wallet_name": WALLET_NAME_FLAGS,
    "wallet_hotkey": WALLET_HOTKEY_FLAGS,
    "wallet_path": WALLET_PATH_FLAGS,
    "network": NETWORK_FLAGS,
    "netuid": NETUID_FLAGS,
}
"""Each shared option (by its parameter name) and every spelling it must accept."""

# Every command that takes a wallet, a network or a netuid, with the arguments it needs besides them.
COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("miner",): [],
    ("validator", "run"): [],
    ("validator", "service"): ["weights"],
    ("gateway", "run"): [],
    ("chain", "metagraph"): [],
    ("chain", "hyperparameters"): [],
    ("chain", "serve-axon"): ["--ip", "203.0.113.7", "--port", "8091"],
    ("chain", "set-weights"): ["--uids", "1", "--weights", "1"],
    ("wallet", "create"): [],
    ("wallet", "show"): [],
    ("wallet", "password-env"): [],
}
VALUES = {"wallet_name": "opname", "wallet_hotkey": "ophot", "wallet_path": "/srv/op-wallets",
          "network": "ws://127.0.0.1:9", "netuid": "23"}


def _leaves(group: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every command under ``group`` by its path (typer vendors its own click: duck-typed)."""
    if hasattr(group, "commands"):
        out: dict[tuple[str, ...], Any] = {}
        for name, command in group.commands.items():
            out |= _leaves(command, (*prefix, name))
        return out
    return {prefix: group}


def _shared_params(command: Any) -> dict[str, Any]:
    return {p.name: p for p in command.params if p.param_type_name == "option" and p.name in FLAGS}


def test_the_table_names_every_command_that_takes_a_wallet_network_or_netuid() -> None:
    taking = {path for path, command in _leaves(typer.main.get_command(app)).items() if _shared_params(command)}
    assert taking == set(COMMANDS)


def test_every_shared_option_accepts_every_spelling() -> None:
    for path, command in _leaves(typer.main.get_command(app)).items():
        for name, option in _shared_params(command).items():
            assert set(FLAGS[name]) <= set(option.opts), (path, name, option.opts)
            assert option.opts[0] == FLAGS[name][0], f"{path}: {name} is spelt {option.opts[0]} first"


class _Loaded(Exception):
    """Stops a command once its settings are loaded, carrying them."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("settings loaded")
        self.settings = settings


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a command up to its settings: the Settings its flags produced."""
    real = common.load_settings

    def capture(*args: Any, **overrides: Any) -> Settings:
        raise _Loaded(real(*args, **overrides))

    monkeypatch.setattr(common, "load_settings", capture)
    for name in list(os.environ):
        if name.startswith("ISN_") and name not in ("ISN_CONFIG",):
            monkeypatch.delenv(name)

    def run(args: list[str]) -> Settings:
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, _Loaded), (args, result.output, result.exception)
        return result.exception.settings

    return run


SPELLINGS = max(len(flags) for flags in FLAGS.values())


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
@pytest.mark.parametrize("spelling", range(SPELLINGS))
def test_each_spelling_lands_in_the_same_setting(loaded: Any, path: tuple[str, ...], spelling: int) -> None:
    command = _leaves(typer.main.get_command(app))[path]
    taken = _shared_params(command)
    args = [*path, *COMMANDS[path]]
    for name in taken:
        flags = FLAGS[name]
        flag = flags[spelling % len(flags)]
        args += [f"{flag}={VALUES[name]}"] if spelling % 2 else [flag, VALUES[name]]
    cfg = loaded(args)
    landed = {
        "wallet_name": cfg.wallet.name, "wallet_hotkey": cfg.wallet.hotkey, "wallet_path": str(cfg.wallet.path),
        "network": cfg.chain.network, "netuid": str(cfg.chain.netuid),
    }
    assert {name: landed[name] for name in taken} == {name: VALUES[name] for name in taken}


def test_wallet_commands_keep_their_old_path_flag(loaded: Any) -> None:
    assert str(loaded(["wallet", "show", "--path", "/srv/old"]).wallet.path) == "/srv/old"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISN_", "BT_PW_"))}
    clean.pop("REDIS_URL", None)
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "inference_subnet.cli.main", *args], env={**clean, **(env or {})}, text=True,
        capture_output=True, timeout=120, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def test_btcli_spellings_reach_the_wallet_files_of_a_real_process(tmp_path: Path) -> None:
    create_wallet(tmp_path, "op", "hot")
    shown = run_cli("wallet", "show", "--wallet.path", str(tmp_path), "--wallet.name", "op", "--wallet.hotkey", "hot")
    assert shown.returncode == 0, shown.stderr
    assert f"wallet   op ({tmp_path})" in shown.stdout
    out = run_cli("miner", "--wallet.path", str(tmp_path), "--wallet_name", "op", "--wallet-hotkey", "nohot",
                  "--subtensor.chain_endpoint", f"ws://127.0.0.1:{free_port()}", "--netuid", "3")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: --wallet.name/--wallet.hotkey/--wallet.path: hotkey file not found: "
                           f"{tmp_path}/op/hotkeys/nohot")


# -- --version ----------------------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == f"inference-subnet {version('inference-subnet')}\n"


# -- config show --------------------------------------------------------------------------------------


SECRETS = ("hunter2redis", "pg-s3cret", "b4se-pass", "node-pass", "sk-live-123", "chal-secret-0123456789abcdef012345")


def test_config_show_masks_every_secret() -> None:
    env = {
        "REDIS_URL": "redis://default:hunter2redis@127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql+asyncpg://isn:pg-s3cret@db.internal:5432/isn",
        "ISN_BUILDER__BASE_URL": "https://me:b4se-pass@llm.internal/v1",
        "ISN_BUILDER__API_KEY": "sk-live-123",
        "ISN_CHAIN__NETWORK": "wss://op:node-pass@node.internal:443",
        "ISN_CHAIN__FALLBACK_ENDPOINTS": '["wss://op:node-pass@backup.internal:443"]',
        "ISN_VALIDATOR__CHALLENGE_SECRET": "chal-secret-0123456789abcdef012345",
    }
    out = run_cli("config", "show", env=env)
    assert out.returncode == 0, out.stderr
    for secret in SECRETS:
        assert secret not in out.stdout and secret not in out.stderr
    shown = json.loads(out.stdout)
    assert shown["redis_url"] == "redis://***@127.0.0.1:6379/0"
    assert shown["database_url"] == "postgresql+asyncpg://***@db.internal:5432/isn"
    assert shown["builder"]["base_url"] == "https://***@llm.internal/v1"
    assert shown["chain"]["network"] == "wss://***@node.internal:443"
    assert shown["chain"]["fallback_endpoints"] == ["wss://***@backup.internal:443"]
    assert shown["builder"]["api_key"] == shown["validator"]["challenge_secret"] == "**********"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://***@h:1/0"),
        ("redis+cluster://u:pw@h:1,h:2", "redis+cluster://***@h:1,h:2"),
        ("postgresql://h/db?user=a&password=pw&sslmode=require",
         "postgresql://h/db?user=a&password=***&sslmode=require"),
        ("redis://:a/b?c@h/0", "redis://***@h/0"),  # unencoded "/" and "?" in the password
        ("sqlite+aiosqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("wss://entrypoint-finney.opentensor.ai:443", "wss://entrypoint-finney.opentensor.ai:443"),
        ("finney", "finney"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- quiet key commands -------------------------------------------------------------------------------


def test_key_commands_print_only_what_they_are_for(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/keys.db"
    created = run_cli("gateway", "keys", "create", "--name", "app", "--database-url", db)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"isn_[A-Za-z0-9_-]{20,}\n", created.stdout), created.stdout
    assert re.fullmatch(r"created key 1 \(app, isn_\S+\.\.\.\): 60/min, 8 concurrent\. Store it now: it cannot "
                        r"be shown again\.\n", created.stderr), created.stderr

    listed = run_cli("gateway", "keys", "list", "--json", "--database-url", db)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)] == ["app"]

    debug = run_cli("--debug", "gateway", "keys", "list", "--json", "--database-url", db)
    assert debug.returncode == 0 and "alembic" in debug.stderr  # --debug shows what is kept quiet
    assert json.loads(debug.stdout)[0]["name"] == "app"  # and never on stdout
