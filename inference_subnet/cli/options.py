"""The wallet and chain flags every command shares, spelled once.

The canonical spelling is the bittensor SDK's (``--wallet.name``, ``--wallet.hotkey``, ``--wallet.path``,
``--subtensor.network``, ``--netuid``): it is what operators type for every other subnet's miner. btcli's
spellings (``--wallet-name``, ``--wallet_name``, ``--name``, ``--hotkey``, ``--network``,
``--subtensor.chain_endpoint``) are the same options under other names, so they set the same setting
(``wallet.name``, ``wallet.hotkey``, ``wallet.path``, ``chain.network``, ``chain.netuid``). A flag given
twice under two names keeps the last value, as click does for any option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from inference_subnet.logs import LogFormat

WALLET_NAME_FLAGS = ("--wallet.name", "--wallet-name", "--wallet_name", "--name")
WALLET_HOTKEY_FLAGS = ("--wallet.hotkey", "--wallet-hotkey", "--wallet_hotkey", "--hotkey")
WALLET_PATH_FLAGS = ("--wallet.path", "--wallet-path", "--wallet_path")
NETWORK_FLAGS = ("--subtensor.network", "--network", "--subtensor.chain_endpoint")
NETUID_FLAGS = ("--netuid",)

WALLET_FLAGS = "--wallet.name/--wallet.hotkey/--wallet.path"
"""How an error about the wallet names the flags that choose it."""

def _also(flags: tuple[str, ...]) -> str:
    """The aliases, in the help text: a narrow terminal cuts the option column short."""
    return f" Also {', '.join(flags[1:])}." if len(flags) > 1 else ""


WalletNameOpt = Annotated[
    str | None,
    typer.Option(*WALLET_NAME_FLAGS,
                 help="Wallet (coldkey) name; default: setting wallet.name." + _also(WALLET_NAME_FLAGS)),
]
WalletHotkeyOpt = Annotated[
    str | None,
    typer.Option(*WALLET_HOTKEY_FLAGS,
                 help="Hotkey name; default: setting wallet.hotkey." + _also(WALLET_HOTKEY_FLAGS)),
]
WalletPathOpt = Annotated[
    Path | None,
    typer.Option(*WALLET_PATH_FLAGS,
                 help="Wallets root folder; default: setting wallet.path." + _also(WALLET_PATH_FLAGS)),
]
NETWORK_HELP = "finney, test, local or a ws:// / wss:// URL; default: setting chain.network." + _also(
    NETWORK_FLAGS
)
NetworkOpt = Annotated[str | None, typer.Option(*NETWORK_FLAGS, help=NETWORK_HELP)]
NetuidOpt = Annotated[int | None, typer.Option(*NETUID_FLAGS, help="Subnet; default: setting chain.netuid.")]

def wallet_overrides(name: str | None, hotkey: str | None, path: Path | None) -> dict[str, Any]:
    """The ``wallet`` settings layer of the wallet flags (unset flags leave lower layers in force)."""
    return {"name": name, "hotkey": hotkey, "path": path}


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="Log lines as `text` or `json` (one object a line); default: setting log_format.",
    ),
]
"""For the long-running commands (miner, validator, gateway): their logs are what operators collect."""
