"""Run a whole subnet on this machine and judge its outcome.

Miners and the gateway run as the very commands an operator runs (``inference-subnet miner``,
``inference-subnet gateway run``), each its own process. The validator's services run inside this process
because the in-memory chain can only be shared there; against a real node they would run the same way in
``inference-subnet validator run``. This process is also the block clock (a dev node builds blocks only
when asked) and a user of the gateway, with an API key it creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import BaseModel
from rich.console import Console
from rich.live import Live

from inference_subnet import lifecycle
from inference_subnet.chain.types import ChainError, Metagraph
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.localnet.chain import LocalChain, MemoryChain, Neurons, SubstrateChain
from inference_subnet.localnet.plan import MinerPlan, Verdict, judge, judge_organic, plan_miners
from inference_subnet.localnet.ports import free_port
from inference_subnet.localnet.report import Access, LocalnetReport, MinerRow, WeightSet, access_lines, blocks_text
from inference_subnet.localnet.view import render
from inference_subnet.miner.process import MinerProcess
from inference_subnet.protocol.task import Task, load_task
from inference_subnet.settings import Settings, load_settings
from inference_subnet.store.migrations import upgrade_database
from inference_subnet.store.redis import connect, resolve_url
from inference_subnet.store.sql import Database
from inference_subnet.validator import metrics
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.managing import ScoreBook
from inference_subnet.validator.orchestrator import Orchestrator
from inference_subnet.validator.runner import SERVICES, run_services, validator_keys
from inference_subnet.validator.scoring import ScoringWorkers
from inference_subnet.validator.service import ServiceHost
from inference_subnet.validator.sidecar import RedisMetagraphSource

SUBNET_NAME = "localnet"

log = logging.getLogger(__name__)


@dataclass
class LocalnetOptions:
    miners: int = 6
    tasks: tuple[str, ...] = ("arithmetic",)
    chain_url: str | None = None
    """A subtensor node whose sudo key is //Alice; ``None``: the in-memory chain."""
    duration: float | None = 60.0
    """Seconds to run; ``None``: until Ctrl-C."""
    block_time: float = 1.0
    organic_interval: float = 0.5
    behaviours: tuple[str, ...] | None = None
    workdir: Path | None = None
    live: bool | None = None
    """Live terminal view; default: when the console is a terminal."""
    keep: bool = False
    """After the report, keep everything running until a signal."""


@dataclass
class _Progress:
    launched: float = field(default_factory=time.monotonic)
    """When the command started (first weights are timed from here)."""
    started: float = field(default_factory=time.monotonic)
    """When the subnet was up and running (the duration counts from here)."""
    start_block: int = 0
    """Head block when the subnet started running."""
    block: int = 0
    """Head block now."""
    organic_sent: int = 0
    organic_ok: int = 0
    organic_good: int = 0
    """Answered organic requests whose answer the task's scorer grades at least :data:`GOOD_ANSWER`."""
    served_by_uid: dict[int, int] = field(default_factory=dict)
    bad_by_uid: dict[int, int] = field(default_factory=dict)
    first_weights_at: float | None = None


async def run_localnet(
    options: LocalnetOptions, console: Console, on_report: Callable[[LocalnetReport], None] | None = None
) -> LocalnetReport:
    """Start everything, run for ``options.duration``, judge and report (``on_report``), then, with
    ``options.keep``, keep it all running until a signal; finally stop everything."""
    tasks = [load_task(name) for name in options.tasks]
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="isn-localnet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    base = load_settings()
    redis_url = resolve_url(base.redis_url)
    plans = plan_miners([free_port() for _ in range(options.miners)], options.behaviours)
    chain: LocalChain = SubstrateChain(options.chain_url) if options.chain_url else MemoryChain()
    console.print(
        f"[bold]chain[/]: {'real subtensor runtime at ' + options.chain_url if options.chain_url else 'in-memory chain (no node: pass --chain-url for a real one)'}"
    )
    wallets = workdir / "wallets"
    owner = _dev_owner()
    _, validator = create_wallet(wallets, "validator", "default")
    miner_keys = [create_wallet(wallets, plan.hotkey_name, "default")[1] for plan in plans]
    interrupted = asyncio.Event()
    """Set by SIGINT, SIGTERM or SIGHUP: the run ends (report first), and so does ``--keep``."""
    _on_signals(interrupted)
    progress = _Progress()
    processes: list[MinerProcess] = []
    gateway: subprocess.Popen[bytes] | None = None
    phase: _Phase | None = None
    redis = connect(redis_url)
    try:
        console.print(f"registering a subnet, a validator and {len(plans)} miners ...")
        netuid = await chain.setup(Neurons(owner=owner, validator=validator, miners=tuple(miner_keys)),
                                   [p.port for p in plans])
        metagraph_file = workdir / "metagraph.json"
        progress.start_block = progress.block = (await _write_metagraph(chain, netuid, metagraph_file)).block
        settings = _validator_settings(base, options, redis_url, workdir, netuid)
        env = _child_env(settings, real_chain=options.chain_url is not None)
        for plan in plans:
            chain_args = (["--subtensor.network", options.chain_url, "--netuid", str(netuid)]
                          if options.chain_url else [])
            processes.append(MinerProcess(
                port=plan.port, wallet_path=wallets, wallet_name=plan.hotkey_name, tasks=options.tasks,
                behaviour=plan.behaviour, metagraph_file=None if options.chain_url else metagraph_file,
                env=env, extra_args=chain_args, log_file=workdir / "miners" / f"miner-{plan.index}.log",
            ).start())
        await asyncio.gather(*(p.wait_ready_async(60) for p in processes))
        console.print(f"{len(processes)} miners serving; starting the validator services and the gateway ...")

        def start_phase() -> _Phase:
            """The validator's services, the block clock and the organic load, until the phase stops."""
            hosts: list[ServiceHost] = []
            started = _Phase(services=asyncio.create_task(run_services(
                SERVICES, settings, validator, chain=chain.client, redis=redis, port=0, install_signals=False,
                on_start=hosts.append,
            )), hosts=hosts)
            started.background += [
                asyncio.create_task(_block_clock(chain, netuid, options, metagraph_file, progress, started.stop)),
                asyncio.create_task(_organic_load(access.gateway_url, access.api_key, tasks, options, progress,
                                                  started.stop)),
            ]
            return started

        gateway = _start_gateway(settings, wallets, options.tasks, env, workdir)
        gateway_url = f"http://127.0.0.1:{settings.gateway.port}"
        await _wait_http(f"{gateway_url}/health", 60, gateway)
        access = Access(
            gateway_url=gateway_url, dashboard_url=f"{gateway_url}/dashboard" if settings.gateway.dashboard else None,
            docs_url=f"{gateway_url}/docs", api_key=await _create_api_key(settings.database_url),
        )
        example = (tasks[0].name, tasks[0].synthesize(random.Random(0)).model_dump_json())
        for line in access_lines(access, example):
            console.print(line, highlight=False, soft_wrap=True)

        progress.started = time.monotonic()
        phase = start_phase()
        keys = validator_keys(settings, validator.ss58_address)
        view = _View(chain, netuid, plans, miner_keys, processes, validator.ss58_address,
                     ScoreBook(redis, keys, settings.validator.scoring), RedisMetagraphSource(redis, keys),
                     tasks, options, progress)
        deadline = None if options.duration is None else progress.started + options.duration
        view.calls = phase.synthetic_calls
        await view.follow(console, interrupted, deadline)
        await phase.stop_traffic()  # the final figures are read with no request or block in flight
        crashed = [f"miner-{p.index} ({p.behaviour})" for p, proc in zip(plans, processes) if not proc.alive]
        if gateway.poll() is not None:
            crashed.append(f"gateway (exit {gateway.returncode})")
        if phase.services.done():
            crashed.append(f"validator services ({_outcome(phase.services)})")
        for host in phase.hosts:
            crashed += [f"validator service {name}" for name, up in host.alive().items() if not up]
        # The weight setter stops before the final read, and the chain settles, so the report shows what
        # stays on chain.
        await phase.stop_services()
        progress.block = await chain.settle()
        run_calls = phase.synthetic_calls()
        view.calls = lambda: run_calls
        rows = await view.rows()
        console.print(await view.frame())
        metagraph = await chain.metagraph(netuid)
        on_chain = await chain.weights_of(netuid, metagraph.by_hotkey[validator.ss58_address].uid)
        weights_by_hotkey = {metagraph.by_uid[uid].hotkey: w for uid, w in on_chain.items() if uid in metagraph.by_uid}
        verdict = judge(weights_by_hotkey, plans, {p.index: k.ss58_address for p, k in zip(plans, miner_keys)})
        faulty = [metagraph.by_hotkey[k.ss58_address].uid for p, k in zip(plans, miner_keys) if not p.honest]
        routing = judge_organic(progress.served_by_uid, faulty)
        verdict = Verdict(verdict.ok and routing.ok, f"{verdict.reason}; {routing.reason}",
                          verdict.lowest_honest, verdict.highest_faulty)
        scoring_error = phase.scoring_failure()
        if not verdict.ok:
            scored = f"; scoring failed ({scoring_error})" if scoring_error else ""
            verdict = Verdict(False, verdict.reason + _honest_errors(plans, rows) + scored, verdict.lowest_honest,
                              verdict.highest_faulty)
        report = LocalnetReport(
            chain=chain.kind, chain_url=chain.url, netuid=netuid, validator_hotkey=validator.ss58_address,
            access=access, setup_seconds=round(progress.started - progress.launched, 1),
            duration_seconds=round(time.monotonic() - progress.started, 1),
            start_block=progress.start_block, head_block=progress.block,
            blocks=progress.block - progress.start_block,
            rounds=_counter_total(metrics.rounds), organic_requests=progress.organic_sent,
            organic_ok=progress.organic_ok, organic_good=progress.organic_good,
            seconds_to_first_weights=None if progress.first_weights_at is None
            else round(progress.first_weights_at, 1),
            weights_on_chain=weights_by_hotkey,
            weight_sets=[WeightSet(block=a.block, outcome=a.outcome, path=a.path, error=a.error)
                         for a in chain.client.weight_attempts()],
            miners=rows, verdict_ok=verdict.ok and not crashed,
            verdict=verdict.reason if not crashed else f"{verdict.reason}; crashed: {', '.join(crashed)}",
            crashed=crashed, scoring_error=scoring_error,
        )
        if on_report is not None:
            on_report(report)
        if options.keep and not interrupted.is_set():
            phase = start_phase()
            view.kept, view.calls = True, _summed(run_calls, phase.synthetic_calls)
            console.print("[bold]kept running[/] (--keep): every process stays up until Ctrl-C")
            for line in access_lines(access, example):
                console.print(line, highlight=False, soft_wrap=True)
            await view.follow(console, interrupted, None)
        return report
    finally:
        if phase is not None:
            await phase.stop_traffic()
            await phase.stop_services()
        if gateway is not None:
            _terminate(gateway)
        for proc in processes:
            proc.stop()
        await redis.aclose()
        await chain.close()


@dataclass
class _Phase:
    """One stretch of the subnet running: the validator's services and this process's traffic."""

    services: asyncio.Task[None]
    hosts: list[ServiceHost] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop_traffic(self) -> None:
        """End the block clock and the organic load after their current step."""
        self.stop.set()
        await asyncio.gather(*self.background, return_exceptions=True)

    async def stop_services(self) -> None:
        """Stop the services; before their host exists (a signal during start-up) the start is cancelled."""
        if not self.hosts:
            self.services.cancel()
        for host in self.hosts:
            host.request_stop()
        await asyncio.gather(self.services, return_exceptions=True)

    def scoring_failure(self) -> str | None:
        """The first failure of this phase's scoring workers (a task's scorer that raised), if any."""
        for host in self.hosts:
            for service in host.services:
                if isinstance(service, ScoringWorkers) and service.first_failure:
                    return service.first_failure
        return None

    def synthetic_calls(self) -> dict[str, int]:
        """identity -> synthetic calls the orchestrators of this phase made."""
        out: dict[str, int] = {}
        for host in self.hosts:
            for service in host.services:
                if isinstance(service, Orchestrator):
                    for identity, n in service.calls.items():
                        out[identity] = out.get(identity, 0) + n
        return out


def _dev_owner():  # noqa: ANN202 - a Keypair
    from inference_subnet.chain.localchain import dev_keypair

    return dev_keypair("//Alice")


def _validator_settings(
    base: Settings, options: LocalnetOptions, redis_url: str, workdir: Path, netuid: int
) -> Settings:
    return load_settings(
        None,
        subnet_name=SUBNET_NAME,
        redis_url=redis_url,
        database_url=f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
        log_level=os.environ.get("ISN_LOG_LEVEL", "WARNING"),
        chain={"network": options.chain_url or "memory", "netuid": netuid, "ip_override": "127.0.0.1",
               "metagraph_refresh_seconds": 1.0},
        validator={"tasks": list(options.tasks), "round_interval_seconds": 0.5,
                   "miners_per_round": options.miners, "service_host": "127.0.0.1"},
        gateway={"host": "127.0.0.1", "port": free_port(), "default_rate_per_minute": 600},
    )


def _child_env(settings: Settings, *, real_chain: bool) -> dict[str, str]:
    """What every child process shares with the validator: Redis, the database, the subnet.

    On a real node the miners read the metagraph every few seconds, not every second: a dev node runs
    each runtime call in turn, and seven readers a second would starve the block clock."""
    return {
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url,
        "ISN_SUBNET_NAME": settings.subnet_name,
        "ISN_CHAIN__NETUID": str(settings.chain.netuid),
        "ISN_CHAIN__IP_OVERRIDE": settings.chain.ip_override or "",
        "ISN_CHAIN__METAGRAPH_REFRESH_SECONDS": "5.0" if real_chain else "1.0",
    }


def _start_gateway(
    settings: Settings, wallets: Path, tasks: Sequence[str], env: dict[str, str], workdir: Path
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "inference_subnet.cli.main", "gateway", "run", "--host", "127.0.0.1",
            "--port", str(settings.gateway.port), "--wallet.path", str(wallets), "--wallet.name", "validator",
            "--wallet.hotkey", "default"]
    for task in tasks:
        args += ["--task", task]
    log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    lifecycle.guard(proc.pid)  # its own session: stopped by the reaper if localnet is killed
    return proc


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    lifecycle.release(proc.pid)


async def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


async def _create_api_key(database_url: str) -> str:
    await upgrade_database(database_url)
    db = Database(database_url)
    try:
        _, plain = await ApiKeyStore(db).create("localnet", rate_per_minute=600, max_concurrent=16)
        return plain
    finally:
        await db.aclose()


async def _write_metagraph(chain: LocalChain, netuid: int, path: Path) -> Metagraph:
    """The miners' view of the in-memory chain (a real node is read by the miners themselves)."""
    graph = await chain.metagraph(netuid)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(graph.to_json())
    tmp.replace(path)
    return graph


async def _block_clock(
    chain: LocalChain, netuid: int, options: LocalnetOptions, metagraph_file: Path, progress: _Progress,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            progress.block = await chain.tick(1)
            if options.chain_url is None:
                await _write_metagraph(chain, netuid, metagraph_file)
        except ChainError as exc:  # a busy node: the next tick tries again
            log.warning("block clock: %s", exc)
        if progress.first_weights_at is None and any(
            a.outcome == "success" for a in chain.client.weight_attempts()
        ):
            progress.first_weights_at = time.monotonic() - progress.launched
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), options.block_time)


GOOD_ANSWER = 0.5
"""Quality from which an organic answer counts as correct (the task's own scorer decides, not HTTP 200)."""


def grade(task: Task, request: BaseModel, response: httpx.Response) -> float:
    """The task's quality of what one user got: the answer, or the chunks of a streamed one assembled."""
    try:
        if task.streaming and task.Chunk is not None and "ndjson" in response.headers.get("content-type", ""):
            lines = [line for line in response.content.splitlines() if line.strip()]
            answer = task.assemble([task.Chunk.model_validate_json(line) for line in lines])
        else:
            answer = task.Response.model_validate_json(response.content)
        return float(task.score(request, [answer], [0.0])[0])
    except Exception:  # noqa: BLE001 - anything the user could not use is a wrong answer
        return 0.0


async def _organic_load(
    gateway_url: str, api_key: str, tasks: Sequence[Task], options: LocalnetOptions, progress: _Progress,
    stop: asyncio.Event,
) -> None:
    """A user of the gateway: one request every ``organic_interval`` seconds, with a real API key."""
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=30.0) as client:
        while not stop.is_set():
            task = rng.choice(list(tasks))
            progress.organic_sent += 1
            request = task.synthesize(rng)
            with contextlib.suppress(httpx.HTTPError):
                response = await client.post(f"/v1/tasks/{task.name}", content=request.model_dump_json())
                if response.status_code == 200:
                    progress.organic_ok += 1
                    good = await asyncio.to_thread(grade, task, request, response) >= GOOD_ANSWER
                    progress.organic_good += good
                    uid = response.headers.get("x-miner-uid")
                    if uid is not None and uid.isdigit():
                        progress.served_by_uid[int(uid)] = progress.served_by_uid.get(int(uid), 0) + 1
                        if not good:
                            progress.bad_by_uid[int(uid)] = progress.bad_by_uid.get(int(uid), 0) + 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), options.organic_interval)


@dataclass
class _View:
    chain: LocalChain
    netuid: int
    plans: Sequence[MinerPlan]
    miner_keys: Sequence[object]
    processes: Sequence[MinerProcess]
    validator_hotkey: str
    scores: ScoreBook
    metagraph: RedisMetagraphSource
    """The sidecar's copy: the view adds no load to the node."""
    tasks: Sequence[Task]
    options: LocalnetOptions
    progress: _Progress
    calls: Callable[[], Mapping[str, int]] = dict
    """identity -> synthetic calls so far (the orchestrators run in this process)."""
    kept: bool = False
    """Past the run's duration, kept running by ``--keep``."""

    async def rows(self) -> list[MinerRow]:
        graph = await self.metagraph.current()
        validator_uid = graph.by_hotkey[self.validator_hotkey].uid
        weights = await self.chain.weights_of(self.netuid, validator_uid)
        neurons = [graph.by_hotkey[k.ss58_address] for k in self.miner_keys]  # type: ignore[attr-defined]
        aggregates = await self.scores.aggregates([n.identity for n in neurons],
                                                  {t.name: t.timeout for t in self.tasks})
        calls = self.calls()
        return [
            MinerRow(name=p.hotkey_name, uid=n.uid, hotkey=n.hotkey, behaviour=p.behaviour, port=p.port,
                     score=round(aggregates.get(n.identity, 0.0), 4), weight=round(weights.get(n.uid, 0.0), 4),
                     synthetic_calls=calls.get(n.identity, 0),
                     organic_served=self.progress.served_by_uid.get(n.uid, 0),
                     organic_bad=self.progress.bad_by_uid.get(n.uid, 0),
                     log_file=str(proc.log_file) if proc.log_file else None, first_error=proc.first_error)
            for p, n, proc in zip(self.plans, neurons, self.processes)
        ]

    async def frame(self):  # noqa: ANN201 - a rich renderable
        return render(
            chain=self.chain.kind, netuid=self.netuid, blocks=blocks_text(self.progress.block, self.progress.start_block),
            elapsed=time.monotonic() - self.progress.started, duration=None if self.kept else self.options.duration,
            rounds=_counter_total(metrics.rounds),
            organic=(self.progress.organic_sent, self.progress.organic_ok, self.progress.organic_good),
            weight_sets=sum(a.outcome == "success" for a in self.chain.client.weight_attempts()),
            rows=await self.rows(),
        )

    async def follow(self, console: Console, stop: asyncio.Event, deadline: float | None) -> None:
        """Show the subnet live until ``deadline`` (monotonic; ``None``: no end) or until ``stop`` is set."""
        live = console.is_terminal if self.options.live is None else self.options.live
        with Live(await self.frame(), console=console, refresh_per_second=2, transient=False,
                  auto_refresh=False) if live else contextlib.nullcontext() as screen:
            last_line = 0.0
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if screen is not None:
                    with contextlib.suppress(ChainError):  # a busy node: the next frame tries again
                        screen.update(await self.frame(), refresh=True)
                elif time.monotonic() - last_line >= 10:
                    last_line = time.monotonic()
                    p = self.progress
                    console.print(f"  {blocks_text(p.block, p.start_block)}, rounds {_counter_total(metrics.rounds)}, "
                                  f"organic {p.organic_ok}/{p.organic_sent} ok ({p.organic_good} correct), "
                                  f"weights {'set' if p.first_weights_at else 'not yet set'}", soft_wrap=True)


def _honest_errors(plans: Sequence[MinerPlan], rows: Sequence[MinerRow]) -> str:
    """Why a failed verdict may have failed: what honest miners logged first (a handler that raised)."""
    errors = [f"{r.name}: {r.first_error}" for p, r in zip(plans, rows) if p.honest and r.first_error]
    return f"; honest miners logged errors ({'; '.join(errors)})" if errors else ""


def _summed(before: Mapping[str, int], now: Callable[[], Mapping[str, int]]) -> Callable[[], dict[str, int]]:
    def total() -> dict[str, int]:
        current = now()
        return {k: before.get(k, 0) + current.get(k, 0) for k in {*before, *current}}

    return total


def _on_signals(stop: asyncio.Event) -> None:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) end the run the same way, or end ``--keep``: the
    report is written (once) and every child is stopped. A SIGHUP ignored at start (``nohup``) stays ignored."""
    loop = asyncio.get_running_loop()
    hangup = [] if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else [signal.SIGHUP]
    for sig in (signal.SIGINT, signal.SIGTERM, *hangup):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def _counter_total(counter: object) -> int:
    total = 0.0
    for family in counter.collect():  # type: ignore[attr-defined]
        total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def _outcome(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc else "exited"
