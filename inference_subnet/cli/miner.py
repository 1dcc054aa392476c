"""`inference-subnet miner`: serve tasks as a miner."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from inference_subnet.chain.types import ChainError
from inference_subnet.chain.wallet import WalletError, keypair_from_settings
from inference_subnet.cli.common import ask_password, fail, settings, state
from inference_subnet.cli.options import (
    WALLET_FLAGS,
    LogFormatOpt,
    NetuidOpt,
    NetworkOpt,
    WalletHotkeyOpt,
    WalletNameOpt,
    WalletPathOpt,
    wallet_overrides,
)
from inference_subnet.protocol.behaviours import BEHAVIOURS
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import Task, UnknownTask, load_task
from inference_subnet.store.redis import redact, resolve_url

log = logging.getLogger(__name__)


def run_miner(
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Task to serve (repeat for several); default: miner.tasks.")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on; default: miner.port.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to listen on; default: miner.host.")] = None,
    wallet_name: WalletNameOpt = None,
    wallet_hotkey: WalletHotkeyOpt = None,
    wallet_path: WalletPathOpt = None,
    metagraph_file: Annotated[
        Path | None,
        typer.Option("--metagraph-file", help="Metagraph JSON (Metagraph.to_json) deciding who may call."),
    ] = None,
    network: NetworkOpt = None,
    netuid: NetuidOpt = None,
    behaviour: Annotated[
        str, typer.Option("--behaviour", help=f"Reference handler behaviour: {', '.join(BEHAVIOURS)}.")
    ] = "honest",
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes.")] = 1,
    log_format: LogFormatOpt = None,
    handler: Annotated[
        list[str] | None,
        typer.Option(
            "--handler",
            help="[TASK=]module:factory building this miner's handler (repeat per task; TASK may be left "
            "out when one task is served); default: miner.handlers, else the task's default_handler.",
        ),
    ] = None,
) -> None:
    """Serve one or more tasks as a miner (btauth/1, metagraph blacklist, quotas)."""
    started_ns = time.time_ns()
    import uvicorn

    from inference_subnet.miner.process import LISTENING
    from inference_subnet.miner.serve import FACTORY, SPEC_ENV, MinerSpec
    from inference_subnet.serving import server_config

    if behaviour not in BEHAVIOURS:
        fail(f"--behaviour: expected one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")
    overrides = {
        "miner": {"tasks": task or None, "port": port, "host": host},
        "wallet": wallet_overrides(wallet_name, wallet_hotkey, wallet_path),
        "chain": {"metagraph_file": metagraph_file, "network": network, "netuid": netuid},
        "log_format": log_format,
    }
    cfg = settings(service=True, **overrides)

    # Fail here, with the flag named, rather than inside a worker.
    try:
        keypair = keypair_from_settings(cfg, ask_password=ask_password)
    except WalletError as exc:
        fail(f"{WALLET_FLAGS}: {exc}")
    try:
        tasks = [load_task(name) for name in cfg.miner.tasks]
    except UnknownTask as exc:
        fail(f"--task: {exc}")
    if handler:
        overrides["miner"]["handlers"] = {**cfg.miner.handlers, **_handler_flags(handler, tasks)}
        cfg = settings(**overrides)
    unknown = sorted(set(cfg.miner.handlers) - {t.name for t in tasks})
    if unknown:
        fail(f"--handler/miner.handlers: {', '.join(unknown)} is not a served task "
             f"(serving {', '.join(t.name for t in tasks)})")
    for one in tasks:
        flag = "--handler" if one.name in cfg.miner.handlers else "--task"
        try:
            load_handler(one, {"behaviour": behaviour}, cfg.miner.handlers.get(one.name))
        except (LookupError, ValueError) as exc:
            fail(f"{flag}: {exc}")
    from inference_subnet.miner.sources import source_from_settings

    try:
        source_from_settings(cfg)
    except ChainError as exc:
        fail(f"--metagraph-file: {exc}")

    redis_url = resolve_url(cfg.redis_url)  # starts the embedded Valkey here, shared by every worker
    spec = MinerSpec(
        config_file=str(state.config_file) if state.config_file else None,
        overrides={**_json_ready(overrides), "redis_url": redis_url},
        behaviour=behaviour,
        started_ns=started_ns,
    )
    os.environ[SPEC_ENV] = spec.to_env()
    log.info(
        "miner %s serving %s on %s:%d (redis %s, %d worker(s), behaviour %s)",
        keypair.ss58_address, ", ".join(cfg.miner.tasks), cfg.miner.host, cfg.miner.port,
        redact(redis_url), workers, behaviour,
    )
    config = server_config(
        FACTORY,
        cfg.http,
        factory=True,
        host=cfg.miner.host,
        port=cfg.miner.port,
        workers=workers,
        log_config=None,
        access_log=False,
        log_level=cfg.log_level.lower(),
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    # Several workers: listen in the parent before they start, so early connections wait in the backlog
    # instead of being refused while the workers import the app.
    sock = config.bind_socket()
    sock.listen(config.backlog)
    log.info("%s %s:%d", LISTENING, cfg.miner.host, cfg.miner.port)
    with _shared_metrics():
        _supervisor_class()(config, sockets=[sock]).run()


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A fresh private directory for the workers' metrics (prometheus-client's multiprocess mode), named
    to them by ``PROMETHEUS_MULTIPROC_DIR`` before they start, so whichever worker answers a scrape shows
    every worker's counts; removed when the miner stops. Fresh each start: the files of an earlier run
    would otherwise be summed in."""
    import shutil
    import tempfile

    from inference_subnet.telemetry import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        log.info("%s is set: the workers' metrics go to a fresh directory of their own instead",
                 MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="isn-miner-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _handler_flags(values: list[str], tasks: list[Task]) -> dict[str, str]:
    """``--handler`` values as task name -> factory path; a bare path is the one served task's."""
    found: dict[str, str] = {}
    for value in values:
        name, sep, path = value.rpartition("=")
        if not sep:
            if len(tasks) != 1:
                fail(f"--handler: {value!r} names no task and this miner serves "
                     f"{', '.join(t.name for t in tasks)}; write TASK=module:factory")
            name = tasks[0].name
        if ":" not in path:
            fail(f"--handler: {value!r} is not [TASK=]module:factory")
        found[name] = path
    return found


def _supervisor_class() -> Any:
    """uvicorn's worker supervisor, except that SIGHUP stops it as SIGTERM does (uvicorn restarts the
    workers), as it stops a single-worker miner; a SIGHUP ignored at start (``nohup``) stays ignored."""
    import signal

    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import logger

    class Supervisor(Multiprocess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.hangup_ignored = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            super().__init__(*args, **kwargs)

        def handle_hup(self) -> None:
            if not self.hangup_ignored:
                logger.info("Received SIGHUP, exiting.")
                self.should_exit.set()

    return Supervisor


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, Path):
        return str(value)
    return value
