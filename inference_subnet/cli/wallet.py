"""`inference-subnet wallet ...`: development keys in the standard bittensor wallet layout."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from inference_subnet.chain.wallet import (
    CRYPTO_TYPES,
    WalletError,
    check_name,
    coldkeypub_file,
    create_wallet,
    hotkey_file,
    load_coldkeypub,
    load_hotkey,
    load_hotkey_public,
    password_variable,
)
from inference_subnet.cli.common import ask_password, console, fail, printable, settings
from inference_subnet.cli.options import (
    WALLET_FLAGS,
    WALLET_PATH_FLAGS,
    WalletHotkeyOpt,
    WalletNameOpt,
    wallet_overrides,
)
from inference_subnet.settings import WalletSettings

app = typer.Typer(help="Create and inspect wallets (bittensor layout).", no_args_is_help=True)

PathOpt = Annotated[
    Path | None,
    typer.Option(*WALLET_PATH_FLAGS, "--path", help="Wallets root folder; default: setting wallet.path. Also "
                 + ", ".join((*WALLET_PATH_FLAGS[1:], "--path")) + "."),
]
"""The wallet commands also take the ``--path`` they always took."""


def _wallet(name: str | None, hotkey: str | None, path: Path | None) -> WalletSettings:
    """The wallet settings, names checked: ``--wallet.name ../escape`` would write outside the root."""
    cfg = settings(wallet=wallet_overrides(name, hotkey, path)).wallet
    for flag, value, what in (("--wallet.name", cfg.name, "wallet"), ("--wallet.hotkey", cfg.hotkey, "hotkey")):
        try:
            check_name(value, what)
        except WalletError as exc:
            fail(f"{flag} ({flag.removeprefix('--')}): {exc}")
    return cfg


@app.command("create")
def create(
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: PathOpt = None,
    crypto: Annotated[str, typer.Option("--crypto", help="Key scheme: sr25519 or ed25519.")] = "sr25519",
    coldkey_uri: Annotated[
        str | None, typer.Option("--coldkey-uri", help="Derive the coldkey from a dev URI, e.g. //Alice.")
    ] = None,
    hotkey_uri: Annotated[
        str | None, typer.Option("--hotkey-uri", help="Derive the hotkey from a dev URI, e.g. //Alice//hot.")
    ] = None,
) -> None:
    """Write unencrypted development keys (files 0600). Never overwrites an existing key file."""
    if crypto not in CRYPTO_TYPES:
        fail(f"--crypto: expected one of {', '.join(CRYPTO_TYPES)}, got {crypto!r}")
    cfg = _wallet(wallet_name, wallet_hotkey, wallet_path)
    try:
        coldkey, hot = create_wallet(
            cfg.path,
            cfg.name,
            cfg.hotkey,
            crypto_type=CRYPTO_TYPES[crypto],
            coldkey_uri=coldkey_uri,
            hotkey_uri=hotkey_uri,
        )
    except WalletError as exc:
        fail(f"--wallet.name/--wallet.hotkey: {exc}")
    typer.echo(printable(f"coldkey  {coldkey.ss58_address}  ({coldkeypub_file(cfg.path, cfg.name)})"))
    typer.echo(printable(f"hotkey   {hot.ss58_address}  ({hotkey_file(cfg.path, cfg.name, cfg.hotkey)})"))


@app.command("show")
def show(
    wallet_name: WalletNameOpt = None, wallet_hotkey: WalletHotkeyOpt = None, wallet_path: PathOpt = None
) -> None:
    """Print the wallet's public addresses and file locations (never a secret; no password needed)."""
    cfg = _wallet(wallet_name, wallet_hotkey, wallet_path)
    try:
        coldkey = load_coldkeypub(cfg.path, cfg.name)
        hot, encrypted = load_hotkey_public(cfg.path, cfg.name, cfg.hotkey)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")
    scheme = {v: k for k, v in CRYPTO_TYPES.items()}.get(hot.crypto_type, str(hot.crypto_type))
    typer.echo(printable(f"wallet   {cfg.name} ({cfg.path})"))
    typer.echo(f"coldkey  {coldkey}")
    kind = f"{scheme}, encrypted" if encrypted else scheme
    typer.echo(printable(f"hotkey   {cfg.hotkey}  {hot.ss58_address}  [{kind}]"))


@app.command("password-env")
def password_env(
    wallet_name: WalletNameOpt = None, wallet_hotkey: WalletHotkeyOpt = None, wallet_path: PathOpt = None
) -> None:
    """Print `VARIABLE=VALUE`: the environment variable that unlocks an encrypted hotkey without a prompt
    (for pm2, systemd, Docker). The password is asked on the terminal, or read from stdin's first line."""
    cfg = _wallet(wallet_name, wallet_hotkey, wallet_path)
    file = hotkey_file(cfg.path, cfg.name, cfg.hotkey)
    typed = ask_password(str(file))
    password = typed if typed is not None else sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("stdin: no password given")
    variable = password_variable(file)
    os.environ.pop(variable, None)  # check the password given, not one already in the environment
    try:
        load_hotkey(cfg.path, cfg.name, cfg.hotkey, ask_password=lambda _path: password)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")
    value = os.environ.get(variable)
    if value is None:  # the file was not encrypted: nothing to unlock
        fail(f"{WALLET_FLAGS}: hotkey file {file} is not encrypted; it needs no password")
    typer.echo(f"{variable}={value}")
    console.print("keep this line as secret as the password: the password can be recovered from it")
