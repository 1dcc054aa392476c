"""`inference-subnet chain ...`: read a subnet and submit axon and weights, on any subtensor node.

Every failure ends with one line naming what to fix (the flag, the key, the endpoint) and a non-zero exit:
2 for a refusal or bad input, 3 for "too soon" (rate limited: an expected state, retry later).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.substrate import SubstrateChainClient
from inference_subnet.chain.types import (
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    InvalidIp,
    InvalidWeights,
    Metagraph,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    UnknownSubnet,
    WeightAttempt,
    WeightVecTooShort,
)
from inference_subnet.chain.wallet import WalletError, load_hotkey
from inference_subnet.cli.common import ask_password, fail, settings
from inference_subnet.cli.options import (
    WALLET_FLAGS,
    NetuidOpt,
    NetworkOpt,
    WalletHotkeyOpt,
    WalletNameOpt,
    WalletPathOpt,
    wallet_overrides,
)
from inference_subnet.settings import Settings

app = typer.Typer(help="Read a subnet, serve an axon, set weights (any subtensor node).", no_args_is_help=True)
out = Console()
T = TypeVar("T")

MechidOpt = Annotated[int | None, typer.Option("--mechid", help="Mechanism (sub-subnet); default 0.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(network: str | None, netuid: int | None, mechid: int | None = None,
              wallet: dict[str, Any] | None = None) -> Settings:
    return settings(chain={"network": network, "netuid": netuid, "mechid": mechid}, wallet=wallet or {})


def _client(cfg: Settings) -> SubstrateChainClient:
    try:
        return SubstrateChainClient.from_settings(cfg.chain)
    except ValueError as exc:
        fail(f"--subtensor.network: {exc}")


def _run(cfg: Settings, work: Callable[[SubstrateChainClient], Awaitable[T]], *, hotkey: str | None = None) -> T:
    """Run one command against the chain; every chain error becomes a message naming what to fix."""

    async def main() -> T:
        async with _client(cfg) as client:
            return await work(client)

    netuid, endpoints = cfg.chain.netuid, cfg.chain.network
    who = f"--wallet.hotkey ({hotkey})" if hotkey else "--wallet.hotkey"
    try:
        return asyncio.run(main())
    except ChainUnavailable as exc:
        fail(f"--subtensor.network {endpoints}: chain unreachable ({exc})")
    except ChainTimeout as exc:
        fail(f"--subtensor.network {endpoints}: the node did not answer in time ({exc}); retry, use another endpoint "
             "or raise chain.call_timeout")
    except UnknownSubnet as exc:
        fail(f"--netuid {netuid}: {exc}")
    except NotRegistered as exc:
        fail(f"{who}: not registered on netuid {netuid}; register it first ({exc})")
    except NoValidatorPermit as exc:
        fail(f"{who}: no validator permit on netuid {netuid}: stake more and wait for the next epoch ({exc})")
    except RateLimited as exc:
        when = f" (possible from block {exc.ready_at_block})" if exc.ready_at_block else ""
        fail(f"rate limited{when}: {exc}", code=3)
    except InvalidIp as exc:
        fail(f"--ip/--port: {exc}")
    except (InvalidWeights, WeightVecTooShort) as exc:
        fail(f"--uids/--weights: {exc}")
    except ChainError as exc:
        fail(str(exc))


def _keypair(cfg: Settings) -> Any:
    try:
        return load_hotkey(cfg.wallet.path, cfg.wallet.name, cfg.wallet.hotkey, ask_password=ask_password)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")


def _numbers(text: str, flag: str, kind: Callable[[str], T]) -> list[T]:
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"{flag}: expected comma-separated numbers, got {text!r}")


@app.command("metagraph")
def metagraph(network: NetworkOpt = None, netuid: NetuidOpt = None, mechid: MechidOpt = None,
              as_json: JsonOpt = False) -> None:
    """Show a subnet's neurons (uid, keys, stake, permit, axon, registration block)."""
    cfg = _settings(network, netuid, mechid)
    graph: Metagraph = _run(cfg, lambda c: c.metagraph(cfg.chain.netuid, cfg.chain.mechid))
    if as_json:
        typer.echo(graph.to_json())
        return
    table = Table(title=f"netuid {graph.netuid} mechanism {graph.mechid} at block {graph.block}")
    for column in ("uid", "hotkey", "coldkey", "stake τ", "vpermit", "incentive", "dividends", "emission",
                   "registered", "updated", "axon"):
        table.add_column(column, justify="right" if column not in ("hotkey", "coldkey", "axon") else "left")
    for n in graph.neurons:
        table.add_row(
            str(n.uid), n.hotkey, n.coldkey[:10] + "…", f"{n.stake:,.3f}", "✓" if n.validator_permit else "",
            f"{n.incentive:.4f}", f"{n.dividends:.4f}", f"{n.emission:.4f}", str(n.registration_block),
            str(n.last_update), n.axon.url() if n.axon and n.axon.is_served else "-",
        )
    out.print(table)


@app.command("hyperparameters")
def hyperparameters(network: NetworkOpt = None, netuid: NetuidOpt = None, as_json: JsonOpt = False) -> None:
    """Show the subnet parameters the framework acts on (tempo, weight limits, commit-reveal...)."""
    cfg = _settings(network, netuid)
    hyper = _run(cfg, lambda c: c.hyperparameters(cfg.chain.netuid))
    values = asdict(hyper)
    if as_json:
        typer.echo(json.dumps(values))
        return
    table = Table(title=f"netuid {hyper.netuid}")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for name, value in values.items():
        table.add_row(name, str(value))
    out.print(table)


@app.command("serve-axon")
def serve_axon(
    ip: Annotated[str, typer.Option("--ip", help="Public IPv4 or IPv6 address miners are reached at.")],
    port: Annotated[int, typer.Option("--port", help="Port miners are reached at.")],
    protocol: Annotated[int, typer.Option("--protocol", help="Axon protocol number stored on chain.")] = 4,
    network: NetworkOpt = None,
    netuid: NetuidOpt = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
) -> None:
    """Publish this hotkey's axon (where validators reach the miner) on chain."""
    cfg = _settings(network, netuid, wallet=wallet_overrides(wallet_name, wallet_hotkey, wallet_path))
    keypair = _keypair(cfg)
    receipt = _run(cfg, lambda c: c.serve_axon(keypair, cfg.chain.netuid, ip, port, protocol),
                   hotkey=keypair.ss58_address)
    typer.echo(f"axon {ip}:{port} served for {keypair.ss58_address} on netuid {cfg.chain.netuid} "
               f"(extrinsic {receipt.extrinsic_hash})")


@app.command("set-weights")
def set_weights(
    uids: Annotated[str, typer.Option("--uids", help="Comma-separated uids, e.g. 1,2,5.")],
    weights: Annotated[str, typer.Option("--weights", help="Comma-separated weights, same order as --uids.")],
    version_key: Annotated[
        int | None, typer.Option("--version-key", help="Default: the subnet's weights version.")
    ] = None,
    wait_reveal: Annotated[
        bool, typer.Option("--wait-reveal/--no-wait-reveal",
                           help="Hash commit-reveal runtimes: stay until the reveal is sent.")
    ] = True,
    network: NetworkOpt = None,
    netuid: NetuidOpt = None,
    mechid: MechidOpt = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
) -> None:
    """Set (or commit) weights by the path the subnet and runtime call for; prints the recorded attempt."""
    uid_list = _numbers(uids, "--uids", int)
    weight_list = _numbers(weights, "--weights", float)
    if len(uid_list) != len(weight_list) or not uid_list:
        fail(f"--uids/--weights: {len(uid_list)} uids but {len(weight_list)} weights")
    cfg = _settings(network, netuid, mechid, wallet=wallet_overrides(wallet_name, wallet_hotkey, wallet_path))
    keypair = _keypair(cfg)

    async def work(client: SubstrateChainClient) -> list[WeightAttempt]:
        attempt = await client.set_weights(keypair, cfg.chain.netuid, uid_list, weight_list,
                                           version_key=version_key, mechid=cfg.chain.mechid)
        attempts = [attempt]
        while wait_reveal and client.pending_reveals():  # bounded: a pending reveal expires at its last block
            pending = client.pending_reveals()[0]
            typer.echo(f"committed; revealing between blocks {pending.first_block} and {pending.last_block}")
            async for block in client.blocks():
                if block >= pending.first_block:
                    break
            attempts += await client.reveal_pending()
        return attempts

    attempts = _run(cfg, work, hotkey=keypair.ss58_address)
    for attempt in attempts:
        typer.echo(json.dumps(asdict(attempt)))
    last = attempts[-1]
    if last.outcome == "too_soon":
        fail(f"too soon: weights on netuid {cfg.chain.netuid} can be set from block {last.ready_at_block}", code=3)
    if last.outcome != "success":
        fail(f"weights not set: {last.error}")
