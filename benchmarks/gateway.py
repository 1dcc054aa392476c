"""What the organic gateway adds: the same miners called through the gateway and directly, in one run.

Run: ``python3 benchmarks/gateway.py`` (embedded Valkey, SQLite) or with ``REDIS_URL`` / ``DATABASE_URL``.

Two ``inference-subnet miner`` processes (honest arithmetic, one uvicorn worker each) and one
``inference-subnet gateway run`` process (one worker, SQLite request log, default settings: per-key limits,
organic quota, score cache, 15% of responses sampled for scoring, organic reuse on) on 127.0.0.1.

  * ``direct``: the baseline. ``MinerClient`` (the client the gateway itself uses: btauth/1-signed,
    pooled httpx) calls the miners round-robin.
  * ``gateway``: an httpx client with an API key calls ``POST /v1/tasks/arithmetic``; the gateway
    authenticates, applies the key's limits (one Lua call), ranks miners (one pipelined read), takes
    organic quota (one Lua call), calls the miner with ``MinerClient``, queues the log row and the organic
    feedback, answers.

Both sides use one httpx client in this process, so the difference is the gateway's own hop and work.
For each concurrency, ``ROUNDS`` rounds alternate the two modes (``REQUESTS`` requests or ``MAX_SECONDS``
per round, whichever comes first) and the median round by throughput is kept. Every answer is checked.
Figures: requests/s, p50/p99 latency, the latency the gateway adds, and the gateway's CPU time per request
(from ``/proc``). Target: p50 added under 3 ms at moderate concurrency (8 in flight).

Results are printed and written to ``benchmarks/results/gateway.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from common import cpu_seconds, free_port, median_round
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
from inference_subnet.validator.managing import QuotaBook

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"
CONCURRENCY = (1, 4, 8, 32)
MODERATE = 8
"""The concurrency the target is judged at."""
REQUESTS = 1200
MAX_SECONDS = 10.0
ROUNDS = 3
WARMUP = 200
MINERS = 2
BREAKDOWN = 1000
"""Sequential requests per kind in the CPU breakdown (CPU time is read in 10 ms ticks)."""
TARGET_P50_ADDED_MS = 3.0


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
            for neuron, _ in self.miners:
                await quota.set_capacity(neuron.identity, {"arithmetic": 10**9})
            await db.upgrade()
            _, plain = await ApiKeyStore(db).create("bench", rate_per_minute=10**9, max_concurrent=10**6)
            return plain
        finally:
            await db.aclose()
            await redis.aclose()

    def start(self) -> None:
        for _, miner in self.miners:
            miner.start()
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
        ]
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "ISN_SUBNET_NAME": self.subnet_name,
            "ISN_LOG_LEVEL": "WARNING",
            "ISN_VALIDATOR__QUOTAS__MAX_CAPACITY": str(10**9),
        }
        self.log = open(self.root / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.gateway = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _, miner in self.miners:
            miner.wait_ready()
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.gateway.poll() is not None:
                    raise RuntimeError((self.root / "gateway.log").read_text()[-3000:])
                try:
                    if client.get(f"{self.gateway_url}/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway not ready in 30 s")
                time.sleep(0.05)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            self.gateway.wait(30)
            self.log.close()
        for _, miner in self.miners:
            miner.stop()


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


async def cpu_breakdown(http: httpx.AsyncClient, pid: int) -> dict[str, float]:
    """The gateway's CPU per request by how far a request gets, one at a time: the web stack alone
    (``GET /health``), plus the key check (401 without a key is cheaper; a valid key with a bad payload is
    422), and the whole path (200). The difference between the last two is routing, limits, the miner call
    (``MinerClient``) and the log."""

    async def health(i: int) -> int:
        return (await http.get("/health")).status_code

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
    for name, call, status in (
        ("GET /health (200)", health, 200),
        ("no valid key (401)", unauthorized, 401),
        ("bad payload (422)", invalid, 422),
    ):
        before = cpu_seconds(pid)
        for i in range(BREAKDOWN):
            assert await call(i) == status
        out[name] = (cpu_seconds(pid) - before) / BREAKDOWN * 1e6
    return out


async def run(root: Path, redis_url: str, database_url: str) -> dict[str, Any]:
    subnet = Subnet(root, redis_url, database_url)
    key = await subnet.prepare()
    subnet.start()
    task = ArithmeticTask()
    neurons = [n for n, _ in subnet.miners]
    client = MinerClient(subnet.validator)
    http = httpx.AsyncClient(
        base_url=subnet.gateway_url,
        timeout=30.0,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )
    rotation = itertools.cycle(neurons)

    async def direct(i: int) -> bool:
        result = await client.call(task, next(rotation), ArithmeticRequest(op="add", a=i, b=1))
        return result.ok and result.response.result == i + 1  # type: ignore[union-attr]

    sent = 0

    async def through_gateway(i: int) -> bool:
        nonlocal sent
        sent += 1
        response = await http.post("/v1/tasks/arithmetic", json={"op": "add", "a": i, "b": 1})
        return response.status_code == 200 and response.json() == {"result": i + 1}

    modes: dict[str, Call] = {"direct": direct, "gateway": through_gateway}
    assert subnet.gateway is not None
    gateway_pid = subnet.gateway.pid
    out: dict[str, Any] = {}
    try:
        for call in modes.values():
            await load(call, 8, WARMUP)
        for concurrency in CONCURRENCY:
            rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(ROUNDS):
                for mode, call in modes.items():
                    cpu_before = cpu_seconds(gateway_pid)
                    own_before = time.process_time()
                    result = await load(call, concurrency, REQUESTS)
                    done = max(1, len(result["latencies"]))
                    result["gateway_cpu_per_req_us"] = (cpu_seconds(gateway_pid) - cpu_before) / done * 1e6
                    result["client_cpu_per_req_us"] = (time.process_time() - own_before) / done * 1e6
                    result["rps"] = len(result["latencies"]) / result["wall"]
                    rounds[mode].append(result)
            level: dict[str, Any] = {}
            for mode, runs in rounds.items():
                level[mode] = median_round(runs, "client_cpu_per_req_us")
            level["gateway"]["gateway_cpu_per_req_us"] = statistics.median(
                r["gateway_cpu_per_req_us"] for r in rounds["gateway"]
            )
            level["added_p50_ms"] = level["gateway"]["p50_ms"] - level["direct"]["p50_ms"]
            level["added_p99_ms"] = level["gateway"]["p99_ms"] - level["direct"]["p99_ms"]
            level["rps_ratio"] = level["gateway"]["rps"] / level["direct"]["rps"]
            out[str(concurrency)] = level
        breakdown = await cpu_breakdown(http, gateway_pid)
        # The request log must hold every gateway request once the gateway stops cleanly.
        ready = (await http.get("/ready")).json()
    finally:
        await http.aclose()
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
        "levels": out,
        "breakdown": breakdown,
        "gateway_requests": sent,
        "request_log_rows": logged,
        "ready_checks": ready["checks"],
    }


def main() -> None:
    console = Console()
    redis_url = resolve_url(os.environ.get("REDIS_URL"))
    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{Path(tmp) / 'gateway.db'}"
        results = asyncio.run(run(Path(tmp), redis_url, database_url))
    levels = results["levels"]
    moderate = levels[str(MODERATE)]
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
        "levels": levels,
        "gateway_requests_sent": results["gateway_requests"],
        "request_log_rows": results["request_log_rows"],
        "gateway_cpu_breakdown_us": results["breakdown"],
        "target": {
            "p50_added_ms_below": TARGET_P50_ADDED_MS,
            "at_concurrency": MODERATE,
            "p50_added_ms": moderate["added_p50_ms"],
            "met": moderate["added_p50_ms"] < TARGET_P50_ADDED_MS,
        },
    }
    table = Table(
        title=f"gateway vs direct MinerClient calls: {MINERS} miners, arithmetic, median of {ROUNDS} rounds"
    )
    for col in (
        "concurrency",
        "mode",
        "req/s",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "gateway CPU us/req",
        "client CPU us/req",
        "errors",
    ):
        table.add_column(col, justify="right")
    for concurrency, level in levels.items():
        for mode in ("direct", "gateway"):
            row = level[mode]
            table.add_row(
                concurrency,
                mode,
                f"{row['rps']:.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{level['added_p50_ms']:.2f}" if mode == "gateway" else "-",
                f"{level['added_p99_ms']:.2f}" if mode == "gateway" else "-",
                f"{row['gateway_cpu_per_req_us']:.0f}" if mode == "gateway" else "-",
                f"{row['client_cpu_per_req_us']:.0f}",
                str(row["errors"]),
            )
    console.print(table)
    gateway_cpu = levels[str(CONCURRENCY[0])]["gateway"]["gateway_cpu_per_req_us"]
    costs = Table(title="gateway CPU per request, one request at a time")
    costs.add_column("request")
    costs.add_column("gateway CPU us", justify="right")
    for name, value in results["breakdown"].items():
        costs.add_row(name, f"{value:.0f}")
    costs.add_row("served by a miner (200)", f"{gateway_cpu:.0f}")
    costs.add_row(
        "baseline: one MinerClient call, client side (direct mode)",
        f"{levels[str(CONCURRENCY[0])]['direct']['client_cpu_per_req_us']:.0f}",
    )
    console.print(costs)
    verdict = "met" if summary["target"]["met"] else "NOT met"
    console.print(
        f"target p50 added < {TARGET_P50_ADDED_MS} ms at concurrency {MODERATE}: "
        f"{moderate['added_p50_ms']:.2f} ms ({verdict}); request log rows after shutdown: "
        f"{results['request_log_rows']} of {results['gateway_requests']} requests"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
