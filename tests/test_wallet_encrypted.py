"""Password-protected hotkeys made as btcli makes them (the bittensor SDK's ``create_new_hotkey`` with a
password): ``wallet show`` needs no password; services unlock them from the wallet library's environment
variable, or fail with one line naming it. Each unlock derives the key with Argon2 (seconds), so the
wallet is made once for the module and few tests unlock it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import bittensor
import pytest
from bittensor_wallet import Keyfile

from conftest import free_port
from inference_subnet.chain.wallet import WalletError, load_hotkey, load_hotkey_public, password_variable

PASSWORD = "c0rrect-Horse-battery!"


@pytest.fixture(scope="module")
def wallet(tmp_path_factory: pytest.TempPathFactory) -> bittensor.Wallet:
    root = tmp_path_factory.mktemp("wallets")
    sdk = bittensor.Wallet(name="op", hotkey="hot", path=str(root))
    sdk.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
    sdk.create_new_hotkey(use_password=True, hotkey_password=PASSWORD, overwrite=False, suppress=True)
    assert Keyfile(str(root / "op" / "hotkeys" / "hot")).is_encrypted()
    return sdk


def root_of(wallet: bittensor.Wallet) -> Path:
    return Path(wallet.path).expanduser()


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISN_", "BT_PW_"))}
    return subprocess.run(
        [sys.executable, "-m", "inference_subnet.cli.main", *args], env={**clean, **(env or {})}, text=True,
        capture_output=True, timeout=180, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def flags(wallet: bittensor.Wallet) -> list[str]:
    return ["--wallet.path", str(root_of(wallet)), "--wallet.name", "op", "--wallet.hotkey", "hot"]


def test_show_needs_no_password(wallet: bittensor.Wallet) -> None:
    out = cli("wallet", "show", *flags(wallet))
    assert out.returncode == 0, out.stderr
    assert f"hotkey   hot  {wallet.hotkeypub.ss58_address}  [sr25519, encrypted]" in out.stdout
    assert f"coldkey  {wallet.coldkeypub.ss58_address}" in out.stdout
    public, encrypted = load_hotkey_public(root_of(wallet), "op", "hot")
    assert encrypted and public.ss58_address == wallet.hotkeypub.ss58_address
    with pytest.raises(Exception, match="No private key"):
        public.sign(b"only the public half was read")


def test_without_password_or_terminal_a_service_fails_with_one_line(wallet: bittensor.Wallet) -> None:
    out = cli("miner", *flags(wallet), "--subtensor.network", f"ws://127.0.0.1:{free_port()}")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    variable = password_variable(root_of(wallet) / "op" / "hotkeys" / "hot")
    file = str(root_of(wallet) / "op" / "hotkeys" / "hot")
    assert variable == "BT_PW_" + file.replace("/", "_").replace(".", "_").upper()
    assert line.startswith("error: --wallet.name/--wallet.hotkey/--wallet.path: hotkey file ")
    assert f"is encrypted: set {variable}" in line and "wallet password-env" in line


def test_password_env_prints_the_library_variable_that_unlocks_the_hotkey(wallet: bittensor.Wallet) -> None:
    printed = cli("wallet", "password-env", *flags(wallet), stdin=PASSWORD + "\n")
    assert printed.returncode == 0, printed.stderr
    variable, _, value = printed.stdout.strip().partition("=")
    assert variable == password_variable(root_of(wallet) / "op" / "hotkeys" / "hot")
    assert PASSWORD not in printed.stdout + printed.stderr
    # The value is the library's own encoding (what Keyfile.save_password_to_env returns).
    assert value == Keyfile(str(root_of(wallet) / "op" / "hotkeys" / "hot")).save_password_to_env(PASSWORD)

    # A service started with it unlocks the key and goes on to the chain (unreachable here: exit 2 naming it).
    dead = f"ws://127.0.0.1:{free_port()}"
    out = cli("chain", "serve-axon", "--ip", "203.0.113.7", "--port", "8091", *flags(wallet),
              "--subtensor.network", dead, env={variable: value, "ISN_CHAIN__CALL_TIMEOUT": "2"})
    assert out.returncode == 2
    assert f"--subtensor.network {dead}: chain unreachable" in out.stderr, out.stderr
    assert "encrypted" not in out.stderr and "unlock" not in out.stderr.split("error:")[-1]


def on_terminal(args: list[str], answer: str, timeout: float = 150) -> str:
    """Run the CLI with a pseudo-terminal as its controlling terminal and stdin, answer its password
    prompt, and return everything it wrote there."""
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISN_", "BT_PW_"))}
    proc = subprocess.Popen([sys.executable, "-m", "inference_subnet.cli.main", *args], env=clean,
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    seen, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"password of" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert answered, seen
    return re.sub(r"\x1b\[[0-9;]*m", "", seen.decode(errors="replace"))  # Rich colours a terminal's output


def test_on_a_terminal_the_password_is_asked_and_a_wrong_one_is_one_clear_error(wallet: bittensor.Wallet) -> None:
    seen = on_terminal(["chain", "serve-axon", "--ip", "203.0.113.7", "--port", "8091", *flags(wallet),
                        "--subtensor.network", f"ws://127.0.0.1:{free_port()}"], "not-the-password")
    assert f"password of {root_of(wallet)}/op/hotkeys/hot: " in seen
    assert "not-the-password" not in seen  # not echoed
    assert "error: --wallet.name/--wallet.hotkey/--wallet.path: cannot unlock hotkey file " in seen
    assert "with the password given" in seen


def test_a_wrong_password_in_the_variable_names_it(wallet: bittensor.Wallet) -> None:
    path = root_of(wallet) / "op" / "hotkeys" / "hot"
    variable = password_variable(path)
    with pytest.raises(WalletError, match=f"cannot unlock hotkey file {path} with the password in {variable}"):
        os.environ[variable] = "not base64 at all"  # decoded before any key derivation: fast
        try:
            load_hotkey(root_of(wallet), "op", "hot")
        finally:
            del os.environ[variable]


def test_password_env_refuses_no_password(wallet: bittensor.Wallet) -> None:
    out = cli("wallet", "password-env", *flags(wallet), stdin="\n")
    assert out.returncode == 2 and out.stderr.strip() == "error: stdin: no password given"
