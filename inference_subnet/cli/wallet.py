"""`inference-subnet wallet ...`: development keys in the standard bittensor wallet layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_subnet.chain.wallet import (
    CRYPTO_TYPES,
    WalletError,
    coldkeypub_file,
    create_wallet,
    hotkey_file,
    load_coldkeypub,
    load_hotkey,
)
from inference_subnet.cli.common import fail, settings

app = typer.Typer(help="Create and inspect wallets (bittensor layout).", no_args_is_help=True)

NameOpt = Annotated[str | None, typer.Option("--name", help="Wallet (coldkey) name; default: setting wallet.name.")]
HotkeyOpt = Annotated[str | None, typer.Option("--hotkey", help="Hotkey name; default: setting wallet.hotkey.")]
PathOpt = Annotated[Path | None, typer.Option("--path", help="Wallets root folder; default: setting wallet.path.")]


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
    typer.echo(f"coldkey  {coldkey.ss58_address}  ({coldkeypub_file(cfg.path, cfg.name)})")
    typer.echo(f"hotkey   {hot.ss58_address}  ({hotkey_file(cfg.path, cfg.name, cfg.hotkey)})")


@app.command("show")
def show(name: NameOpt = None, hotkey: HotkeyOpt = None, path: PathOpt = None) -> None:
    """Print the wallet's public addresses and file locations (never a secret)."""
    cfg = settings(wallet={"name": name, "hotkey": hotkey, "path": path}).wallet
    try:
        coldkey = load_coldkeypub(cfg.path, cfg.name)
        hot = load_hotkey(cfg.path, cfg.name, cfg.hotkey)
    except WalletError as exc:
        fail(f"--name/--hotkey/--path: {exc}")
    scheme = {v: k for k, v in CRYPTO_TYPES.items()}.get(hot.crypto_type, str(hot.crypto_type))
    typer.echo(f"wallet   {cfg.name} ({cfg.path})")
    typer.echo(f"coldkey  {coldkey}")
    typer.echo(f"hotkey   {cfg.hotkey}  {hot.ss58_address}  [{scheme}]")
