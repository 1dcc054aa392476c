"""``inference-subnet``: one command, a subcommand per role and service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from inference_subnet.cli import chain, config, gateway, localnet, miner, new, validator, wallet
from inference_subnet.cli import llm, simulate, task
from inference_subnet.cli.common import bad_input_message, fail, state


class GuardedGroup(TyperGroup):
    """The root command: an exception that bad input explains (settings, config file, wallet file, task
    name, a file the user named) becomes one line on stderr naming the flag, file, variable or key, with
    exit code 2, instead of a traceback. ``--debug`` shows the traceback instead; program faults always do.

    It sits on the click group, not around ``app()``, so the installed command and typer's ``CliRunner``
    (which calls the click command directly) behave alike."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = None if state.debug else bad_input_message(exc)
            if message is None:
                raise
            fail(message)


app = typer.Typer(
    name="inference-subnet",
    help="Build and run Bittensor inference subnets: miners, validator services, gateway, local subnets.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=GuardedGroup,
)


def _version(value: bool) -> None:
    """``--version``: the installed distribution's version (package metadata), then exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"inference-subnet {version('inference-subnet')}")
        except PackageNotFoundError:
            fail("--version: the inference-subnet distribution is not installed (no package metadata)", code=1)
        raise typer.Exit()


@app.callback()
def _root(
    config_file: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="TOML config file (also ISN_CONFIG).", envvar="ISN_CONFIG"),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback of an error instead of one line, and log at DEBUG "
                     "(with the INFO lines of libraries kept quiet otherwise)."),
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    from inference_subnet.lifecycle import install_stop_signals

    install_stop_signals()  # SIGTERM/SIGHUP unwind like SIGINT: atexit stops an embedded Valkey
    state.config_file = config_file
    state.debug = debug


app.add_typer(wallet.app, name="wallet")
app.add_typer(chain.app, name="chain")
app.add_typer(validator.app, name="validator")
app.add_typer(gateway.app, name="gateway")
app.add_typer(config.app, name="config")
app.add_typer(task.app, name="task")
app.add_typer(llm.app, name="llm")
app.command("miner")(miner.run_miner)
app.command("localnet")(localnet.run_localnet)
app.command("new")(new.run_new)
app.command("simulate")(simulate.run_simulate)

if __name__ == "__main__":
    app()
