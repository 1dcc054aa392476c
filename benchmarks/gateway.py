"""What the organic gateway costs: the same miners called directly, through a pass-through proxy and
through the gateway, in one run.

Run: ``python3 benchmarks/gateway.py`` (embedded Valkey, SQLite) or with ``REDIS_URL`` / ``DATABASE_URL``.

Two ``inference-subnet miner`` processes (honest arithmetic, one uvicorn worker each), one pass-through
proxy (``benchmarks/passthrough.py``) and one ``inference-subnet gateway run`` process (default settings:
per-key limits, organic quota, score cache, 15% of responses sampled for scoring, organic reuse on, SQLite
request log) on 127.0.0.1; the gateway runs once with one worker, then with ``--workers 2``.

  * ``direct``: ``MinerClient`` (the client the gateway itself uses: btauth/1-signed, pooled) calls the
    miners round-robin from this process: the latency baseline.
  * ``proxy``: the pass-through proxy: the gateway's server stack and ``MinerClient`` with none of its
    features. The CPU baseline: the gateway's CPU per request is judged as a ratio to it.
  * ``gateway``: ``POST /v1/tasks/arithmetic`` with an API key: authenticate, the key's limits, ranking,
    organic quota, the miner call, the log row and the organic feedback.

For each concurrency, ``ROUNDS`` rounds alternate the modes (``REQUESTS`` requests or ``MAX_SECONDS`` per
round) and the median round by throughput is kept. Every answer is checked. CPU is read from ``/proc``
for the server's whole process tree (the supervisor and its workers) over each round, divided by the
requests served. Targets: gateway CPU per served request <= 1 ms and <= 2x the proxy's; ``GET /health``
<= 150 us; p50 added (over direct) under 3 ms at 8 in flight with 2 workers.

Results are printed and written to ``benchmarks/results/gateway.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from common import free_port, median_round, tree_cpu_seconds
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.process import MinerProcess
from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect, redact, resolve_url
from inference_subnet.store.sql import Database
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.managing import QuotaBook, ScoreBook
from inference_subnet.validator.managing.score_math import Sample

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"
PROXY = Path(__file__).resolve().parent / "passthrough.py"
CONCURRENCY = (1, 8, 32)
MODERATE = 8
"""The concurrency the latency target is judged at."""
WORKERS = tuple(int(w) for w in os.environ.get("GATEWAY_BENCH_WORKERS", "1,2").split(","))
"""Gateway worker counts measured (``GATEWAY_BENCH_WORKERS=1`` for one)."""
REQUESTS = 1000
MAX_SECONDS = 6.0
ROUNDS = 3
WARMUP = 200
MINERS = 2
BREAKDOWN = 1000
"""Sequential requests per kind in the CPU breakdown (CPU time is read in 10 ms ticks)."""
TARGET_P50_ADDED_MS = 3.0
TARGET_CPU_US = 1000.0
TARGET_CPU_RATIO = 2.0
TARGET_HEALTH_US = 150.0


class Subnet:
    """Wallets, a metagraph file, the miner processes and the gateway process."""

    def __init__(self, root: Path, redis_url: str, database_url: str) -> None:
        self.root = root
        self.redis_url = redis_url
        self.database_url = database_url
        self.subnet_name = f"gwbench{os.getpid()}"
        _, self.validator = create_wallet(root / "wallets", "validator", "default")
        self.miners: list[tuple[Neuron, MinerProcess]] = []
        neurons = [
            Neuron(
                uid=0,
                hotkey=self.validator.ss58_address,
                coldkey="c",
                stake=1000.0,
                validator_permit=True,
                registration_block=1,
            )
        ]
        ports = [free_port() for _ in range(MINERS)]
        for uid, port in enumerate(ports, start=1):
            _, hot = create_wallet(root / "wallets", f"miner{uid}", "default")
            neurons.append(
                Neuron(
                    uid=uid,
                    hotkey=hot.ss58_address,
                    coldkey="c",
                    stake=0.0,
                    validator_permit=False,
                    registration_block=1,
                    axon=AxonInfo(ip="127.0.0.1", port=port),
                )
            )
        self.metagraph = Metagraph(netuid=1, block=1, neurons=tuple(neurons))
        self.metagraph_file = root / "metagraph.json"
        self.metagraph_file.write_text(self.metagraph.to_json())
        env = {
            "REDIS_URL": redis_url,
            "ISN_SUBNET_NAME": self.subnet_name,
            "ISN_MINER__CAPACITY": '{"arithmetic": 100000000}',
        }
        for uid, port in enumerate(ports, start=1):
            self.miners.append(
                (
                    neurons[uid],
                    MinerProcess(
                        port=port,
                        wallet_path=root / "wallets",
                        wallet_name=f"miner{uid}",
                        metagraph_file=self.metagraph_file,
                        env=env,
                    ),
                )
            )
        self.gateway_port = free_port()
        self.gateway: subprocess.Popen[bytes] | None = None

    async def prepare(self) -> str:
        """What the validator's managing service would have written (quota shares), and an API key."""
        settings = load_settings()
        redis = connect(self.redis_url)
        db = Database(self.database_url)
        try:
            keys = Keys(subnet=self.subnet_name, netuid=1, role=self.validator.ss58_address)
            quota = QuotaBook(
                redis, keys, settings.validator.quotas.model_copy(update={"max_capacity": 10**9})
            )
            await quota.set_stakes(self.metagraph, self.validator.ss58_address)
            scores = ScoreBook(redis, keys, settings.validator.scoring)
            for neuron, _ in self.miners:
                await quota.set_capacity(neuron.identity, {"arithmetic": 10**9})
                # The synthetic evidence routing needs before it sends users to a miner.
                for j in range(max(5, settings.validator.quotas.organic_min_evidence)):
                    sample = Sample(score=1.0, kind="synthetic", latency=0.01, ok=True, ts=time.time())
                    await scores.record(neuron.identity, "arithmetic", sample, f"bench-{j}")
            await db.upgrade()
            _, plain = await ApiKeyStore(db).create("bench", rate_per_minute=10**9, max_concurrent=10**6)
            return plain
        finally:
            await db.aclose()
            await redis.aclose()

    def start(self) -> None:
        """The miners and the pass-through proxy (the gateway starts with :meth:`start_gateway`)."""
        for _, miner in self.miners:
            miner.start()
        self.proxy_port = free_port()
        env = {**os.environ, "REDIS_URL": self.redis_url, "ISN_SUBNET_NAME": self.subnet_name}
        self.proxy_log = open(self.root / "proxy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proxy = subprocess.Popen(
            [sys.executable, str(PROXY), str(self.proxy_port), str(self.metagraph_file), str(self.root / "wallets")],
            env=env, stdout=self.proxy_log, stderr=subprocess.STDOUT,
        )
        for _, miner in self.miners:
            miner.wait_ready()
        _wait_ready(self.proxy, f"{self.proxy_url}/health", self.root / "proxy.log")

    def start_gateway(self, workers: int) -> None:
        args = [
            sys.executable,
            "-m",
            "inference_subnet.cli.main",
            "gateway",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.gateway_port),
            "--metagraph-file",
            str(self.metagraph_file),
            "--wallet-path",
            str(self.root / "wallets"),
            "--wallet-name",
            "validator",
            "--wallet-hotkey",
            "default",
            "--task",
            "arithmetic",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "ISN_SUBNET_NAME": self.subnet_name,
            "ISN_LOG_LEVEL": "WARNING",
            "ISN_VALIDATOR__QUOTAS__MAX_CAPACITY": str(10**9),
        }
        self.log = open(self.root / "gateway.log", "ab")  # noqa: SIM115 - closed in stop_gateway()
        self.gateway = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        _wait_ready(self.gateway, f"{self.gateway_url}/ready", self.root / "gateway.log")

    def stop_gateway(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            self.gateway.wait(30)
            self.log.close()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def stop(self) -> None:
        self.stop_gateway()
        if self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(30)
            self.proxy_log.close()
        for _, miner in self.miners:
            miner.stop()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready in 60 s")
            time.sleep(0.05)


Call = Callable[[int], Awaitable[bool]]


async def load(call: Call, concurrency: int, n: int) -> dict[str, Any]:
    """``n`` calls (or ``MAX_SECONDS``) from ``concurrency`` workers; latencies of the correct answers."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))
    deadline = time.perf_counter() + MAX_SECONDS

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            ok = await call(i)
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - started}


async def cpu_breakdown(http: httpx.AsyncClient, proxy: httpx.AsyncClient, pid: int, proxy_pid: int
                        ) -> dict[str, float]:
    """Server CPU per request by how far a request gets, one at a time: the web stack alone
    (``GET /health``, on the proxy too), plus the key check (401 without a valid key; a valid key with a bad
    payload is 422). The whole path (200) is in the levels."""

    async def health(i: int) -> int:
        return (await http.get("/health")).status_code

    async def proxy_health(i: int) -> int:
        return (await proxy.get("/health")).status_code

    async def invalid(i: int) -> int:
        return (await http.post("/v1/tasks/arithmetic", json={"op": "divide", "a": i, "b": 1})).status_code

    async def unauthorized(i: int) -> int:
        return (
            await http.post(
                "/v1/tasks/arithmetic",
                json={"op": "add", "a": i, "b": 1},
                headers={"Authorization": "Bearer isn_unknown-key-for-the-benchmark"},
            )
        ).status_code

    out: dict[str, float] = {}
    for name, call, status, server in (
        ("proxy GET /health (200)", proxy_health, 200, proxy_pid),
        ("GET /health (200)", health, 200, pid),
        ("no valid key (401)", unauthorized, 401, pid),
        ("bad payload (422)", invalid, 422, pid),
    ):
        before = tree_cpu_seconds(server)
        for i in range(BREAKDOWN):
            assert await call(i) == status
        out[name] = (tree_cpu_seconds(server) - before) / BREAKDOWN * 1e6
    return out


async def measure(modes: dict[str, tuple[Call, int | None]]) -> dict[str, Any]:
    """Every concurrency, ``ROUNDS`` rounds of every mode in turn; ``pid`` is the server whose CPU counts."""
    for call, _ in modes.values():
        await load(call, 8, WARMUP)
    out: dict[str, Any] = {}
    for concurrency in CONCURRENCY:
        rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for _ in range(ROUNDS):
            for mode, (call, pid) in modes.items():
                cpu_before = tree_cpu_seconds(pid) if pid else 0.0
                own_before = time.process_time()
                result = await load(call, concurrency, REQUESTS)
                done = max(1, len(result["latencies"]))
                result["server_cpu_per_req_us"] = (
                    (tree_cpu_seconds(pid) - cpu_before) / done * 1e6 if pid else 0.0
                )
                result["client_cpu_per_req_us"] = (time.process_time() - own_before) / done * 1e6
                result["rps"] = len(result["latencies"]) / result["wall"]
                rounds[mode].append(result)
        level: dict[str, Any] = {
            mode: median_round(runs, "client_cpu_per_req_us", "server_cpu_per_req_us")
            for mode, runs in rounds.items()
        }
        for mode in modes:
            if mode != "direct":
                level[mode]["added_p50_ms"] = level[mode]["p50_ms"] - level["direct"]["p50_ms"]
                level[mode]["added_p99_ms"] = level[mode]["p99_ms"] - level["direct"]["p99_ms"]
        level["cpu_ratio"] = level["gateway"]["server_cpu_per_req_us"] / level["proxy"]["server_cpu_per_req_us"]
        out[str(concurrency)] = level
    return out


async def run(root: Path, redis_url: str, database_url: str) -> dict[str, Any]:
    subnet = Subnet(root, redis_url, database_url)
    key = await subnet.prepare()
    subnet.start()
    task = ArithmeticTask()
    neurons = [n for n, _ in subnet.miners]
    client = MinerClient(subnet.validator)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    http = httpx.AsyncClient(
        base_url=subnet.gateway_url, timeout=30.0, headers={"Authorization": f"Bearer {key}"}, limits=limits
    )
    proxy = httpx.AsyncClient(base_url=subnet.proxy_url, timeout=30.0, limits=limits)
    rotation = itertools.cycle(neurons)

    async def direct(i: int) -> bool:
        result = await client.call(task, next(rotation), ArithmeticRequest(op="add", a=i, b=1))
        return result.ok and result.response.result == i + 1  # type: ignore[union-attr]

    sent = 0

    async def through_proxy(i: int) -> bool:
        response = await proxy.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1})
        return response.status_code == 200 and response.json() == {"result": i + 1}

    async def through_gateway(i: int) -> bool:
        nonlocal sent
        sent += 1
        response = await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1})
        return response.status_code == 200 and response.json() == {"result": i + 1}

    out: dict[str, Any] = {}
    breakdown: dict[str, float] = {}
    try:
        for workers in WORKERS:
            try:
                subnet.start_gateway(workers)
                assert subnet.gateway is not None
                modes: dict[str, tuple[Call, int | None]] = {
                    "direct": (direct, None),
                    "proxy": (through_proxy, subnet.proxy.pid),
                    "gateway": (through_gateway, subnet.gateway.pid),
                }
                out[str(workers)] = await measure(modes)
                if workers == 1:
                    breakdown = await cpu_breakdown(http, proxy, subnet.gateway.pid, subnet.proxy.pid)
                ready = (await http.get("/ready")).json()
            finally:
                await http.aclose()
                http = httpx.AsyncClient(base_url=subnet.gateway_url, timeout=30.0,
                                         headers={"Authorization": f"Bearer {key}"}, limits=limits)
                subnet.stop_gateway()
    finally:
        await http.aclose()
        await proxy.aclose()
        await client.aclose()
        subnet.stop()
    db = Database(database_url)
    try:
        from sqlalchemy import func, select

        from inference_subnet.store.sql import RequestLog

        async with db.sessions() as session:
            logged = await session.scalar(select(func.count()).select_from(RequestLog))
    finally:
        await db.aclose()
    return {
        "workers": out,
        "breakdown": breakdown,
        "gateway_requests": sent,
        "request_log_rows": logged,
        "ready_checks": ready["checks"],
    }


def main() -> None:
    console = Console(width=180)
    redis_url = resolve_url(os.environ.get("REDIS_URL"))
    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{Path(tmp) / 'gateway.db'}"
        results = asyncio.run(run(Path(tmp), redis_url, database_url))
    by_workers = results["workers"]
    one = by_workers["1"][str(CONCURRENCY[0])]
    two_moderate = by_workers[str(max(WORKERS))][str(MODERATE)]["gateway"]
    health = results["breakdown"]["GET /health (200)"]
    cpu = one["gateway"]["server_cpu_per_req_us"]
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "redis": redact(redis_url),
        "database": "postgres" if "postgresql" in (os.environ.get("DATABASE_URL") or "") else "sqlite",
        "miners": MINERS,
        "requests_per_round": REQUESTS,
        "rounds": ROUNDS,
        "by_workers": by_workers,
        "gateway_requests_sent": results["gateway_requests"],
        "request_log_rows": results["request_log_rows"],
        "server_cpu_breakdown_us": results["breakdown"],
        "targets": {
            "gateway_cpu_per_served_request_us": {"value": cpu, "max": TARGET_CPU_US, "met": cpu <= TARGET_CPU_US},
            "gateway_cpu_ratio_to_proxy": {
                "value": one["cpu_ratio"], "max": TARGET_CPU_RATIO, "met": one["cpu_ratio"] <= TARGET_CPU_RATIO
            },
            "health_cpu_us": {"value": health, "max": TARGET_HEALTH_US, "met": health <= TARGET_HEALTH_US},
            f"p50_added_ms_{max(WORKERS)}_workers_{MODERATE}_in_flight": {
                "value": two_moderate["added_p50_ms"],
                "below": TARGET_P50_ADDED_MS,
                "met": two_moderate["added_p50_ms"] < TARGET_P50_ADDED_MS,
            },
        },
    }
    table = Table(title=f"direct vs pass-through proxy vs gateway: {MINERS} miners, arithmetic, "
                        f"median of {ROUNDS} rounds")
    for col in (
        "workers",
        "in flight",
        "mode",
        "req/s",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "server CPU us/req",
        "CPU vs proxy",
        "errors",
    ):
        table.add_column(col, justify="right")
    for workers, levels in by_workers.items():
        for concurrency, level in levels.items():
            for mode in ("direct", "proxy", "gateway"):
                row = level[mode]
                table.add_row(
                    workers if mode == "gateway" else "-",
                    concurrency,
                    mode,
                    f"{row['rps']:.0f}",
                    f"{row['p50_ms']:.2f}",
                    f"{row['p99_ms']:.2f}",
                    f"{row['added_p50_ms']:.2f}" if mode != "direct" else "-",
                    f"{row['added_p99_ms']:.2f}" if mode != "direct" else "-",
                    f"{row['server_cpu_per_req_us']:.0f}" if mode != "direct" else "-",
                    f"{level['cpu_ratio']:.2f}x" if mode == "gateway" else "-",
                    str(row["errors"]),
                )
    console.print(table)
    costs = Table(title="server CPU per request, one request at a time (1 worker)")
    costs.add_column("request")
    costs.add_column("CPU us", justify="right")
    for name, value in results["breakdown"].items():
        costs.add_row(name, f"{value:.0f}")
    costs.add_row("proxy: served by a miner (200)", f"{one['proxy']['server_cpu_per_req_us']:.0f}")
    costs.add_row("gateway: served by a miner (200)", f"{cpu:.0f}")
    console.print(costs)
    for name, target in summary["targets"].items():
        console.print(f"target {name}: {target['value']:.2f} ({'met' if target['met'] else 'NOT met'})")
    console.print(
        f"request log rows after shutdown: {results['request_log_rows']} of {results['gateway_requests']} requests"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
