"""`inference-subnet validator ...`: run every validator service in one process, or one service alone."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from inference_subnet.cli.common import ask_password, fail, settings
from inference_subnet.cli.options import (
    NETWORK_FLAGS,
    NETWORK_HELP,
    WALLET_FLAGS,
    LogFormatOpt,
    NetuidOpt,
    WalletHotkeyOpt,
    WalletNameOpt,
    WalletPathOpt,
    wallet_overrides,
)
from inference_subnet.logs import LogFormat
from inference_subnet.settings import Settings

app = typer.Typer(help="Run the validator's services.", no_args_is_help=True)
log = logging.getLogger(__name__)

SERVICE_NAMES = ("sidecar", "synthesizing", "scoring", "orchestrator", "weights")
"""The same as ``validator.runner.SERVICES`` (kept here so ``--help`` does not import the services)."""

NetworkOpt = Annotated[
    Optional[str],
    typer.Option(*NETWORK_FLAGS, help=NETWORK_HELP.replace("URL;", "URL, or `memory` (demo chain);")),
]
HostOpt = Annotated[Optional[str], typer.Option("--host", help="Interface of the services' HTTP API.")]
PortOpt = Annotated[
    Optional[int],
    typer.Option("--port", help="Port of /health, /ready, /metrics; default: validator.metrics_port "
                 "(validator.sidecar_port for the sidecar alone)."),
]
IpOverrideOpt = Annotated[
    Optional[str],
    typer.Option("--ip-override", help="Reach every miner at this IP (local subnets: the chain refuses 127.0.0.1)."),
]
TaskOpt = Annotated[
    Optional[list[str]], typer.Option("--task", help="Task to validate (repeat); default: validator.tasks.")
]


def _settings(network: str | None, netuid: int | None, wallet_name: str | None, wallet_hotkey: str | None,
              wallet_path: Path | None, ip_override: str | None, task: list[str] | None,
              log_format: LogFormat | None) -> Settings:
    return settings(
        service=True,
        log_format=log_format,
        chain={"network": network, "netuid": netuid, "ip_override": ip_override},
        wallet=wallet_overrides(wallet_name, wallet_hotkey, wallet_path),
        validator={"tasks": task or None},
    )


def _start(names: list[str], cfg: Settings, host: str | None, port: int | None) -> None:
    from inference_subnet.chain.wallet import WalletError, keypair_from_settings
    from inference_subnet.protocol.task import UnknownTask, load_task
    from inference_subnet.validator.runner import MEMORY, NEEDS_CHAIN, run_services

    try:
        keypair = keypair_from_settings(cfg, ask_password=ask_password)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")
    try:
        for name in cfg.validator.tasks:
            load_task(name)
    except UnknownTask as exc:
        fail(f"--task: {exc}")
    if NEEDS_CHAIN & set(names) and cfg.chain.network != MEMORY:
        problem = asyncio.run(_probe_chain(cfg))
        if problem:
            fail(f"--subtensor.network: cannot reach {cfg.chain.network}: {problem}")
    try:
        asyncio.run(run_services(names, cfg, keypair, host=host, port=port))
    except OSError as exc:
        if "cannot listen" in str(exc):
            fail(f"--host/--port: {exc.strerror or exc}")
        raise


async def _probe_chain(cfg: Settings) -> str | None:
    """A clear error at start-up beats a service that logs reconnect attempts forever."""
    from inference_subnet.chain.substrate import SubstrateChainClient
    from inference_subnet.chain.types import ChainError

    client = SubstrateChainClient.from_settings(cfg.chain)
    try:
        await asyncio.wait_for(client.block(), timeout=cfg.chain.call_timeout + 1)
        await client.hyperparameters(cfg.chain.netuid)
        return None
    except (ChainError, OSError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()


@app.command("run")
def run(
    network: NetworkOpt = None,
    netuid: NetuidOpt = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    ip_override: IpOverrideOpt = None,
    task: TaskOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Every validator service (sidecar, synthesizing, scoring, orchestrator, weights) in one process."""
    cfg = _settings(network, netuid, wallet_name, wallet_hotkey, wallet_path, ip_override, task, log_format)
    _start(list(SERVICE_NAMES), cfg, host, port)


@app.command("service")
def service(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}.")],
    network: NetworkOpt = None,
    netuid: NetuidOpt = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    ip_override: IpOverrideOpt = None,
    task: TaskOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """One validator service in this process (the gateway has its own command: `gateway run`)."""
    if name not in SERVICE_NAMES:
        hint = " (the gateway runs with `inference-subnet gateway run`)" if name == "gateway" else ""
        fail(f"NAME: unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}{hint}")
    cfg = _settings(network, netuid, wallet_name, wallet_hotkey, wallet_path, ip_override, task, log_format)
    _start([name], cfg, host, port)
