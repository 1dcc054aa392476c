"""`inference-subnet gateway ...`: run the organic API and manage its API keys.

The gateway reads the metagraph the sidecar keeps in Redis (or ``--metagraph-file`` for development) and
the quotas and scores the validator's managing service keeps there, so it runs beside the validator
services with the same Redis, wallet and subnet settings. Every command migrates the database first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from inference_subnet.cli.common import ask_password, fail, printable, safe, settings, state
from inference_subnet.cli.options import (
    WALLET_FLAGS,
    LogFormatOpt,
    NetuidOpt,
    WalletHotkeyOpt,
    WalletNameOpt,
    WalletPathOpt,
    wallet_overrides,
)
from inference_subnet.settings import Settings
from inference_subnet.store.redis import redact

app = typer.Typer(help="Run the organic gateway and manage its API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke gateway API keys; show their usage.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
"""The limits' database columns are 32-bit integers (Postgres ``INTEGER``)."""
INT64_MAX = 2**63 - 1
"""Key ids are 64-bit (Postgres ``BIGINT``; SQLite's ``INTEGER``)."""

DatabaseOpt = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the key and log store; default: DATABASE_URL / database_url (a SQLite file).",
    ),
]


def _migrate(cfg: Settings, *, quiet: bool = False) -> None:
    """Bring the schema up to date. ``quiet`` (the key commands): their output is the key or the listing,
    so the "schema migrated" line is shown only with ``--debug``."""
    from inference_subnet.store.migrations import log as migrations_log
    from inference_subnet.store.migrations import upgrade_database

    if quiet and not state.debug:
        migrations_log.setLevel(logging.WARNING)
    try:
        asyncio.run(upgrade_database(cfg.database_url))
    except Exception as exc:
        fail(
            f"--database-url: cannot open or migrate {redact(cfg.database_url)}: {type(exc).__name__}: {exc}"
        )


async def _with_store(cfg: Settings, work: Any) -> Any:
    from inference_subnet.store.sql import Database
    from inference_subnet.validator.gateway.apikeys import ApiKeyStore

    db = Database(cfg.database_url)
    try:
        return await work(ApiKeyStore(db))
    finally:
        await db.aclose()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for (shown in `keys list`).")],
    rate_per_minute: Annotated[
        Optional[int],
        typer.Option(
            "--rate-per-minute", min=1, max=INT32_MAX,
            help="Requests per minute; default: gateway.default_rate_per_minute."
        ),
    ] = None,
    max_concurrent: Annotated[
        Optional[int],
        typer.Option(
            "--max-concurrent", min=1, max=INT32_MAX,
            help="Requests in flight; default: gateway.default_max_concurrent."
        ),
    ] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Create a key and print it. The key is shown this once: only its hash is stored."""
    from inference_subnet.validator.gateway.apikeys import name_problem

    problem = name_problem(name.strip())
    if problem is not None:
        fail(f"--name: {name!r}: {problem}")
    cfg = settings(database_url=database_url)
    _migrate(cfg, quiet=True)
    rate = rate_per_minute or cfg.gateway.default_rate_per_minute
    concurrent = max_concurrent or cfg.gateway.default_max_concurrent

    async def create(store: Any) -> Any:
        return await store.create(name, rate_per_minute=rate, max_concurrent=concurrent)

    try:
        info, plain = asyncio.run(_with_store(cfg, create))
    except ValueError as exc:
        fail(f"--name: {exc}")
    typer.echo(plain)
    typer.echo(
        printable(
            f"created key {info.id} ({info.name}, {info.prefix}...): {info.rate_per_minute}/min, "
            f"{info.max_concurrent} concurrent. Store it now: it cannot be shown again."
        ),
        err=True,
    )


@keys_app.command("list")
def keys_list(
    active: Annotated[bool, typer.Option("--active", help="Only keys that are not revoked.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """List keys (id, name, prefix, limits, created, revoked). Secrets are never shown."""
    cfg = settings(database_url=database_url)
    _migrate(cfg, quiet=True)

    async def listing(store: Any) -> Any:
        return await store.list_keys(include_revoked=not active)

    infos = asyncio.run(_with_store(cfg, listing))
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "name": k.name,
                        "prefix": k.prefix,
                        "rate_per_minute": k.rate_per_minute,
                        "max_concurrent": k.max_concurrent,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in infos
                ]
            )
        )
        return
    from rich.console import Console
    from rich.table import Column, Table

    name_column = Column("name", overflow="fold")  # a long name is folded, never cut short
    table = Table("id", name_column, "prefix", "rate/min", "concurrent", "created", "revoked")
    for k in infos:
        table.add_row(  # names (and prefixes) come from the database: never markup, never raw escapes
            str(k.id),
            safe(k.name),
            safe(k.prefix) + "...",
            str(k.rate_per_minute),
            str(k.max_concurrent),
            k.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(min=1, max=INT64_MAX, help="The key's id (from `keys list`).")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key: running gateways refuse it within gateway.api_key_cache_seconds."""
    cfg = settings(database_url=database_url)
    _migrate(cfg, quiet=True)

    async def revoke(store: Any) -> Any:
        return await store.revoke(key_id)

    info = asyncio.run(_with_store(cfg, revoke))
    if info is None:
        fail(f"ID: no API key with id {key_id}", code=1)
    revoked = info.revoked_at.isoformat()
    typer.echo(printable(f"revoked key {info.id} ({info.name}, {info.prefix}...) at {revoked}"))


@keys_app.command("usage")
def keys_usage(
    period: Annotated[
        str, typer.Option("--period", help="How far back from now: 30m, 24h, 7d, 2w.")
    ] = "24h",
    key_id: Annotated[
        Optional[int], typer.Option("--key", min=1, max=INT64_MAX, help="Only this key's usage.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Requests and prompt/completion tokens per key over a period, from the request log."""
    import datetime as dt

    from inference_subnet.store.sql import Database
    from inference_subnet.validator.gateway.usage import key_usage, parse_period

    try:
        span = parse_period(period)
    except ValueError as exc:
        fail(f"--period: {exc}")
    cfg = settings(database_url=database_url)
    _migrate(cfg, quiet=True)
    now = dt.datetime.now(dt.UTC)

    async def read() -> Any:
        db = Database(cfg.database_url)
        try:
            return await key_usage(db, since=now - span, until=now, key_id=key_id)
        finally:
            await db.aclose()

    rows = asyncio.run(read())
    if as_json:
        typer.echo(json.dumps([
            {"key_id": u.key_id, "name": u.name, "requests": u.requests, "served": u.served,
             "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
             "total_tokens": u.total_tokens}
            for u in rows
        ]))
        return
    from rich.console import Console
    from rich.table import Column, Table

    table = Table("key", Column("name", overflow="fold"), "requests", "served", "prompt tokens",
                  "completion tokens", "total tokens", title=f"usage over the last {period.strip()}")
    for u in rows:
        table.add_row(
            str(u.key_id) if u.key_id is not None else "-", safe(u.name or "-"), str(u.requests),
            str(u.served), str(u.prompt_tokens), str(u.completion_tokens), str(u.total_tokens),
        )
    Console().print(table)


@app.command("run")
def run(
    port: Annotated[Optional[int], typer.Option("--port", help="Port; default: gateway.port.")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Interface; default: gateway.host.")] = None,
    task: Annotated[
        Optional[list[str]], typer.Option("--task", help="Task to serve (repeat); default: validator.tasks.")
    ] = None,
    metagraph_file: Annotated[
        Optional[Path],
        typer.Option(
            "--metagraph-file",
            help="Read the metagraph from this JSON instead of the sidecar's copy in Redis (development).",
        ),
    ] = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
    netuid: NetuidOpt = None,
    database_url: DatabaseOpt = None,
    log_format: LogFormatOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=256,
            help="Worker processes sharing the port (state is in Redis; /metrics sums every worker).",
        ),
    ] = 1,
) -> None:
    """Serve the organic API: API keys, per-key limits, routing to top miners with quota, the request log."""
    from inference_subnet.chain.wallet import WalletError, keypair_from_settings
    from inference_subnet.protocol.task import UnknownTask, load_task

    overrides: dict[str, Any] = {
        "log_format": log_format,
        "database_url": database_url,
        "gateway": {"port": port, "host": host},
        "validator": {"tasks": task or None},
        "chain": {"metagraph_file": metagraph_file, "netuid": netuid},
        "wallet": wallet_overrides(wallet_name, wallet_hotkey, wallet_path),
    }
    cfg = settings(service=True, **overrides)
    try:
        keypair = keypair_from_settings(cfg, ask_password=ask_password)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")
    try:
        tasks = {t.name: t for t in (load_task(name) for name in cfg.validator.tasks)}
    except UnknownTask as exc:
        fail(f"--task: {exc}")
    if cfg.chain.metagraph_file is not None:
        _check_metagraph_file(cfg.chain.metagraph_file)
    _migrate(cfg)
    try:
        sock = _listen(cfg.gateway.host, cfg.gateway.port)
    except OSError as exc:
        fail(f"--host/--port: cannot listen on {cfg.gateway.host}:{cfg.gateway.port}: {exc.strerror or exc}")
    with sock:
        if workers == 1:
            _run_loop(_serve(cfg, keypair, tasks, sock))
        else:
            _serve_workers(cfg, overrides, workers, sock)


def _serve_workers(cfg: Settings, overrides: dict[str, Any], workers: int, sock: socket.socket) -> None:
    """``workers`` processes accepting on ``sock``, under uvicorn's supervisor (which restarts a worker
    that dies). Each rebuilds the settings from the parent's (:mod:`.gateway_serve`) and keeps its metrics
    in a shared multiprocess directory, so a scrape answered by any worker shows them all."""
    import os

    from inference_subnet.cli.gateway_serve import FACTORY, SPEC_ENV, GatewaySpec
    from inference_subnet.cli.miner import _shared_metrics, _supervisor_class
    from inference_subnet.serving import server_config
    from inference_subnet.store.redis import resolve_url

    # Resolved here: with no REDIS_URL every worker shares this process's embedded Valkey.
    spec = GatewaySpec(
        config_file=str(state.config_file) if state.config_file else None,
        overrides={**_json_ready(overrides), "redis_url": resolve_url(cfg.redis_url)},
    )
    os.environ[SPEC_ENV] = spec.to_env()
    config = server_config(
        FACTORY,
        cfg.http,
        factory=True,
        workers=workers,
        log_config=None,
        access_log=False,
        log_level=cfg.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=cfg.gateway.total_deadline_seconds,
    )
    log.info("gateway on %s:%d with %d workers", cfg.gateway.host, cfg.gateway.port, workers)
    with _shared_metrics():
        _supervisor_class()(config, sockets=[sock]).run()


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, Path):
        return str(value)
    return value


def _check_metagraph_file(path: Path) -> None:
    """Read the metagraph file once before serving: a missing or invalid one is an error at start naming
    it, not a gateway that routes to nobody (the file source keeps serving its last good read later)."""
    from inference_subnet.chain.types import ChainError
    from inference_subnet.miner.sources import FileMetagraphSource

    try:
        FileMetagraphSource(path).load()
    except ChainError as exc:
        fail(f"--metagraph-file (chain.metagraph_file): {exc}")


def _run_loop(main: Any) -> None:
    """uvloop when installed (it comes with ``uvicorn[standard]``), as ``uvicorn.run`` would choose."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a busy port is a clear error naming the flag, not a log line.

    ``TCP_NODELAY`` is set here and inherited by accepted connections: asyncio sets it itself only on
    sockets it creates, and without it a response written in two parts waits for the client's delayed
    ACK (about 40 ms on Linux) on every request.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """SIGTERM/SIGINT shut down gracefully (the lifespan flushes the request log), then the process
        exits 0. uvicorn's own handling re-raises the signal afterwards, killing the process before the
        rest of the cleanup runs. A second SIGINT forces the exit."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return Server


async def _serve(cfg: Settings, keypair: Any, tasks: dict[str, Any], sock: socket.socket) -> None:
    from inference_subnet.cli.gateway_serve import build_app
    from inference_subnet.serving import server_config

    app = build_app(cfg, keypair, tasks)
    server = _server_class()(
        server_config(
            app,
            cfg.http,
            log_config=None,
            access_log=False,
            log_level=cfg.log_level.lower(),
            lifespan="on",
            timeout_graceful_shutdown=cfg.gateway.total_deadline_seconds,
        )
    )
    await server.serve(sockets=[sock])
