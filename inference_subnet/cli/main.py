"""``inference-subnet``: one command, a subcommand per role and service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inference_subnet.cli import chain, config, gateway, localnet, miner, new, validator, wallet
from inference_subnet.cli import simulate
from inference_subnet.cli.common import state

app = typer.Typer(
    name="inference-subnet",
    help="Build and run Bittensor inference subnets: miners, validator services, gateway, local subnets.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    config_file: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="TOML config file (also ISN_CONFIG).", envvar="ISN_CONFIG"),
    ] = None,
) -> None:
    state.config_file = config_file


app.add_typer(wallet.app, name="wallet")
app.add_typer(chain.app, name="chain")
app.add_typer(validator.app, name="validator")
app.add_typer(gateway.app, name="gateway")
app.add_typer(config.app, name="config")
app.command("miner")(miner.run_miner)
app.command("localnet")(localnet.run_localnet)
app.command("new")(new.run_new)
app.command("simulate")(simulate.run_simulate)

if __name__ == "__main__":
    app()
