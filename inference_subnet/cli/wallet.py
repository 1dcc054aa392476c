"""`inference-subnet wallet ...`: development keys in the standard bittensor wallet layout."""

from __future__ import annotations

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
)
from inference_subnet.cli.common import fail, printable, settings
from inference_subnet.settings import WalletSettings

app = typer.Typer(help="Create and inspect wallets (bittensor layout).", no_args_is_help=True)

NameOpt = Annotated[str | None, typer.Option("--name", help="Wallet (coldkey) name; default: setting wallet.name.")]
HotkeyOpt = Annotated[str | None, typer.Option("--hotkey", help="Hotkey name; default: setting wallet.hotkey.")]
PathOpt = Annotated[Path | None, typer.Option("--path", help="Wallets root folder; default: setting wallet.path.")]


def _plain_names(cfg: WalletSettings) -> None:
    """Wallet and hotkey names are plain file names: ``--name ../escape`` would write outside the root."""
    for flag, value, what in (("--name", cfg.name, "wallet"), ("--hotkey", cfg.hotkey, "hotkey")):
        try:
            check_name(value, what)
        except WalletError as exc:
            fail(f"{flag} (wallet.{'name' if what == 'wallet' else 'hotkey'}): {exc}")


@app.command("create")
def create(
    name: NameOpt = None,
    hotkey: HotkeyOpt = None,
    path: PathOpt = None,
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
    cfg = settings(wallet={"name": name, "hotkey": hotkey, "path": path}).wallet
    _plain_names(cfg)
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
        fail(f"--name/--hotkey: {exc}")
    typer.echo(printable(f"coldkey  {coldkey.ss58_address}  ({coldkeypub_file(cfg.path, cfg.name)})"))
    typer.echo(printable(f"hotkey   {hot.ss58_address}  ({hotkey_file(cfg.path, cfg.name, cfg.hotkey)})"))


@app.command("show")
def show(name: NameOpt = None, hotkey: HotkeyOpt = None, path: PathOpt = None) -> None:
    """Print the wallet's public addresses and file locations (never a secret)."""
    cfg = settings(wallet={"name": name, "hotkey": hotkey, "path": path}).wallet
    _plain_names(cfg)
    try:
        coldkey = load_coldkeypub(cfg.path, cfg.name)
        hot = load_hotkey(cfg.path, cfg.name, cfg.hotkey)
    except WalletError as exc:
        fail(f"--name/--hotkey/--path: {exc}")
    scheme = {v: k for k, v in CRYPTO_TYPES.items()}.get(hot.crypto_type, str(hot.crypto_type))
    typer.echo(printable(f"wallet   {cfg.name} ({cfg.path})"))
    typer.echo(f"coldkey  {coldkey}")
    typer.echo(f"hotkey   {cfg.hotkey}  {hot.ss58_address}  [{scheme}]")
