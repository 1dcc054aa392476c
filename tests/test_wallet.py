"""Wallet files: our development keys in the bittensor layout, read back by us, bittensor_wallet and the
bittensor SDK; wallets written by them read by us; no overwrite; 0600."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import bittensor
import bittensor.http_auth as bt_auth
import pytest
from bittensor_wallet import Keyfile, Keypair, Wallet
from typer.testing import CliRunner

from inference_subnet.chain.wallet import (
    WalletError,
    create_wallet,
    keypair_from_settings,
    load_coldkeypub,
    load_hotkey,
)
from inference_subnet.cli.main import app
from inference_subnet.protocol import btauth
from inference_subnet.settings import load_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_and_load_round_trip(tmp_path: Path) -> None:
    coldkey, hotkey = create_wallet(tmp_path, "w", "h")
    loaded = load_hotkey(tmp_path, "w", "h")
    assert loaded.ss58_address == hotkey.ss58_address != coldkey.ss58_address
    assert load_coldkeypub(tmp_path, "w") == coldkey.ss58_address
    assert hotkey.verify(b"msg", loaded.sign(b"msg"))
    data = json.loads((tmp_path / "w" / "hotkeys" / "h").read_text())
    assert {"secretSeed", "publicKey", "accountId", "ss58Address", "secretPhrase"} <= set(data)
    assert data["ss58Address"] == hotkey.ss58_address
    assert json.loads((tmp_path / "w" / "coldkeypub.txt").read_text())["ss58Address"] == coldkey.ss58_address


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        create_wallet(tmp_path, "w", "h")
    finally:
        os.umask(old)
    wallet = tmp_path / "w"
    for path in [wallet / "coldkey", wallet / "coldkeypub.txt", wallet / "hotkeys" / "h"]:
        assert mode(path) == 0o600, path
    assert mode(wallet) == 0o700 and mode(wallet / "hotkeys") == 0o700


def test_never_overwrites_a_key_file(tmp_path: Path) -> None:
    create_wallet(tmp_path, "w", "h")
    hot = tmp_path / "w" / "hotkeys" / "h"
    before = hot.read_bytes()
    with pytest.raises(WalletError, match=f"hotkey file already exists: {hot}"):
        create_wallet(tmp_path, "w", "h")
    assert hot.read_bytes() == before


def test_second_hotkey_reuses_the_coldkey(tmp_path: Path) -> None:
    coldkey, first = create_wallet(tmp_path, "w", "one")
    cold_bytes = (tmp_path / "w" / "coldkey").read_bytes()
    coldkey2, second = create_wallet(tmp_path, "w", "two", crypto_type=0)
    assert coldkey2.ss58_address == coldkey.ss58_address
    assert (tmp_path / "w" / "coldkey").read_bytes() == cold_bytes
    assert second.crypto_type == 0 and load_hotkey(tmp_path, "w", "two").crypto_type == 0
    assert load_hotkey(tmp_path, "w", "one").ss58_address == first.ss58_address


def test_dev_uris(tmp_path: Path) -> None:
    _, hot = create_wallet(tmp_path, "alice", "default", coldkey_uri="//Alice", hotkey_uri="//Alice")
    assert hot.ss58_address == Keypair.create_from_uri("//Alice").ss58_address


def test_our_wallet_is_read_by_bittensor_wallet_and_the_sdk(tmp_path: Path) -> None:
    coldkey, hotkey = create_wallet(tmp_path, "w", "h")
    theirs = Wallet(name="w", hotkey="h", path=str(tmp_path))
    assert theirs.hotkey.ss58_address == hotkey.ss58_address
    assert theirs.coldkeypub.ss58_address == coldkey.ss58_address
    sdk = bittensor.Wallet(name="w", hotkey="h", path=str(tmp_path))
    headers = bt_auth.sign(sdk, method="POST", path="/tasks/x", body=b"{}", receiver_ss58=coldkey.ss58_address)

    class Store:
        def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
            return True

    caller = btauth.verify(headers, b"{}", method="POST", path="/tasks/x", self_hotkey_ss58=coldkey.ss58_address,
                           nonce_store=Store())
    assert caller.hotkey_ss58 == hotkey.ss58_address


def test_we_read_a_wallet_written_by_bittensor_wallet(tmp_path: Path) -> None:
    theirs = Wallet(name="btw", hotkey="hk", path=str(tmp_path))
    theirs.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
    theirs.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
    assert load_hotkey(tmp_path, "btw", "hk").ss58_address == theirs.hotkey.ss58_address
    assert load_coldkeypub(tmp_path, "btw") == theirs.coldkeypub.ss58_address


def test_we_read_a_wallet_written_by_the_sdk(tmp_path: Path) -> None:
    sdk = bittensor.Wallet(name="sdk", hotkey="hk", path=str(tmp_path))
    sdk.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
    sdk.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
    assert load_hotkey(tmp_path, "sdk", "hk").ss58_address == sdk.hotkey.ss58_address
    assert load_coldkeypub(tmp_path, "sdk") == sdk.coldkeypub.ss58_address


def test_legacy_plain_coldkeypub(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    alice = Keypair.create_from_uri("//Alice").ss58_address
    (folder / "coldkeypub.txt").write_text(alice + "\n")
    assert load_coldkeypub(tmp_path, "old") == alice


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match=f"hotkey file not found: {tmp_path}/nope/hotkeys/h"):
        load_hotkey(tmp_path, "nope", "h")
    with pytest.raises(WalletError, match=f"coldkeypub file not found: {tmp_path}/nope/coldkeypub.txt"):
        load_coldkeypub(tmp_path, "nope")
    broken = tmp_path / "broken" / "hotkeys"
    broken.mkdir(parents=True)
    (broken / "h").write_text("not json at all")
    with pytest.raises(WalletError, match="cannot read hotkey file"):
        load_hotkey(tmp_path, "broken", "h")


OTHER_UID = 4242


def _error_as_another_uid(fn: Callable[[], object]) -> str:
    """The message of the error ``fn()`` raises when run by a uid that does not own the key files.

    Root is never refused by file permissions, so as root ``fn`` runs in a forked child that has dropped to
    ``OTHER_UID``; any other user meets the modes the test set (0000) itself."""
    if os.getuid() != 0:
        try:
            fn()
        except WalletError as exc:
            return f"WalletError: {exc}"
        return "no error"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            try:
                fn()
                message = "no error"
            except WalletError as exc:
                message = f"WalletError: {exc}"
            except BaseException as exc:  # noqa: BLE001  (reported to the parent, which fails on it)
                message = f"{type(exc).__name__}: {exc}"
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_key_files_name_the_owner_and_the_uid() -> None:
    """A service whose uid does not own the 0600 key files (a container's default user and a root-owned
    wallet) stops with one line naming what denies it and both uids, never a PermissionError traceback."""
    # Not under pytest's tmp_path: its parent is private to the user running the tests.
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        _check_unreadable(Path(tmp) / "wallets")


def _check_unreadable(root: Path) -> None:
    root.mkdir(mode=0o755)
    create_wallet(root, "w", "h")
    uid = OTHER_UID if os.getuid() == 0 else os.getuid()
    owner = os.getuid()
    wallet = root / "w"
    hotkey = wallet / "hotkeys" / "h"
    if os.getuid() != 0:
        wallet.chmod(0o000)
    message = _error_as_another_uid(lambda: load_hotkey(root, "w", "h"))
    wallet.chmod(0o700)
    mode_text = "0700" if os.getuid() == 0 else "0000"
    assert message == (
        f"WalletError: cannot read {hotkey}: permission denied on {wallet} (owner uid {owner}, mode "
        f"{mode_text}) for uid {uid}; run as the owner of the key files or give this uid read access"
    )
    # The folders open to everyone, the file still the owner's alone.
    wallet.chmod(0o755)
    hotkey.parent.chmod(0o755)
    if os.getuid() != 0:
        hotkey.chmod(0o000)
    message = _error_as_another_uid(lambda: load_hotkey(root, "w", "h"))
    assert message.startswith(f"WalletError: cannot read {hotkey}: permission denied on {hotkey} (owner uid {owner}")
    assert f"for uid {uid};" in message and "\n" not in message
    (wallet / "coldkeypub.txt").chmod(0o000 if os.getuid() != 0 else 0o600)
    message = _error_as_another_uid(lambda: load_coldkeypub(root, "w"))
    assert message.startswith(f"WalletError: cannot read {wallet / 'coldkeypub.txt'}: permission denied on")


def test_encrypted_hotkey_is_an_error_not_a_prompt(tmp_path: Path) -> None:
    path = tmp_path / "enc" / "hotkeys" / "h"
    path.parent.mkdir(parents=True)
    Keyfile(str(path)).set_keypair(Keypair.create_from_uri("//Enc"), encrypt=True, overwrite=True,
                                   password="a-long-password-1!")
    with pytest.raises(WalletError, match="encrypted"):
        load_hotkey(tmp_path, "enc", "h")


def test_keypair_from_settings(tmp_path: Path) -> None:
    _, hot = create_wallet(tmp_path, "s", "hk")
    settings = load_settings(None, wallet={"path": tmp_path, "name": "s", "hotkey": "hk"})
    assert keypair_from_settings(settings).ss58_address == hot.ss58_address


def test_cli_create_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["wallet", "create", "--name", "cli", "--hotkey", "h", "--path", str(tmp_path)]
    created = runner.invoke(app, args)
    assert created.exit_code == 0, created.output
    hot = load_hotkey(tmp_path, "cli", "h")
    assert hot.ss58_address in created.output
    secret = json.loads((tmp_path / "cli" / "hotkeys" / "h").read_text())
    assert secret["secretPhrase"] not in created.output and secret["secretSeed"] not in created.output

    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert "already exists" in again.output and "--wallet.name/--wallet.hotkey" in again.output

    shown = runner.invoke(app, ["wallet", "show", "--name", "cli", "--hotkey", "h", "--path", str(tmp_path)])
    assert shown.exit_code == 0 and hot.ss58_address in shown.output
    assert secret["secretPhrase"] not in shown.output

    missing = runner.invoke(app, ["wallet", "show", "--name", "nope", "--path", str(tmp_path)])
    assert missing.exit_code == 2 and "not found" in missing.output

    bad = runner.invoke(app, args[:-2] + ["--path", str(tmp_path), "--crypto", "rsa"])
    assert bad.exit_code == 2 and "--crypto" in bad.output
