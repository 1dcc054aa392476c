"""Atomic quota consumption: decisions per second on one node and on a 3-shard Redis Cluster, and overshoot.

Run: ``python3 benchmarks/quotas.py``. The ``single`` column is ``REDIS_URL`` (a plain URL) or the embedded
Valkey; the ``cluster`` column is ``REDIS_CLUSTER_URL`` (a ``redis+cluster://`` URL), else a local 3-primary
cluster started for the run from the same Valkey binary. Both columns are measured in the same run, their
repetitions interleaved, so a burst of load on a shared machine hits both.
Every figure also sits next to a baseline measured on the same server: a consume is one Lua call (HGET,
HMGET, HINCRBY, PEXPIRE on first use), so its cost is read as a ratio of one INCR round trip.
Overshoot is what a check-then-increment race would produce: requests granted beyond the share when 64
consumers on their own connections race for it. It must be 0 on both backends.

Results are printed and written to ``benchmarks/results/quotas.json``, keyed by backend under ``backends``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.settings import QuotaSettings
from inference_subnet.store.cluster import LocalCluster
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, connect, embedded_url, is_cluster_url, redact
from inference_subnet.validator.managing.quotas import QuotaBook

RESULTS = Path(__file__).resolve().parent / "results" / "quotas.json"
CONCURRENCY = 64
"""Coroutines issuing single calls at once (one validator's round fan-out)."""
BATCH = 256
"""Miners per batched call (a full mainnet subnet)."""
BATCHERS = 4
"""Batched calls in flight at once."""
MAX_OPS = 20_000
MAX_SECONDS = 1.0
REPS = 5
"""Each throughput figure stops at whichever comes first."""
RACE_TRIALS = 5
RACE_SHARE = 500
ME = "bench-validator"


async def rate(op: Callable[[int], Awaitable[int]], workers: int, per_call: int) -> float:
    """Operations per second of ``workers`` coroutines calling ``op`` (which does ``per_call`` ops)."""
    calls = max(1, MAX_OPS // per_call)
    counter = iter(range(calls))
    done = 0
    deadline = time.perf_counter() + MAX_SECONDS

    async def worker() -> None:
        nonlocal done
        for i in counter:
            n = await op(i)  # not `done += await ...`: that reads `done` before the await and loses counts
            done += n
            if time.perf_counter() > deadline:
                return

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(workers)])
    return done / (time.perf_counter() - start)


def bench_keys() -> Keys:
    return Keys(subnet=f"bench{uuid.uuid4().hex[:8]}", netuid=1, role=ME)


async def quota_book(client: RedisClient, keys: Keys, miners: list[str], capacity: int) -> QuotaBook:
    settings = QuotaSettings(max_capacity=10**9, synthetic_fraction=0.3, min_share=0.0)
    book = QuotaBook(client, keys, settings)
    neurons = (
        Neuron(uid=0, hotkey=ME, coldkey="ck", stake=1.0, validator_permit=True, registration_block=1),
    )
    await book.set_stakes(
        Metagraph(netuid=1, block=1, neurons=neurons), ME
    )  # the only validator: share = capacity
    for m in miners:
        await book.set_capacity(m, {"bench": capacity})
    return book


class Throughput:
    """The decision-rate figures of one backend, one repetition at a time (so backends can alternate)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runs: dict[str, list[float]] = {
            k: [] for k in ("incr_single", "consume_single", "incr_batched", "consume_batched")
        }

    async def start(self) -> None:
        self.client = connect(self.url)
        self.keys = bench_keys()
        self.miners = [f"miner{i}@1" for i in range(BATCH)]
        # Capacity that never runs out: this measures the cost of a decision, not refusals.
        self.book = await quota_book(self.client, self.keys, self.miners, capacity=10**9)
        self.incr_keys = [f"{self.keys.prefix}:incr:{{m:{m}}}" for m in self.miners]
        await self.consume(0)  # load the script once, outside the timing

    async def incr(self, i: int) -> int:
        await self.client.incr(self.incr_keys[i % BATCH])
        return 1

    async def consume(self, i: int) -> int:
        await self.book.consume(self.miners[i % BATCH], "bench", "organic")
        return 1

    async def incr_batch(self, i: int) -> int:
        pipe = self.client.pipeline(transaction=False)
        for k in self.incr_keys:
            pipe.incr(k)
        await pipe.execute()
        return BATCH

    async def consume_batch(self, i: int) -> int:
        await self.book.consume_many(self.miners, "bench", "organic")
        return BATCH

    async def rep(self) -> None:
        """One repetition of every figure; baseline and figure alternate, as the backends do."""
        self.runs["incr_single"].append(await rate(self.incr, CONCURRENCY, 1))
        self.runs["consume_single"].append(await rate(self.consume, CONCURRENCY, 1))
        self.runs["incr_batched"].append(await rate(self.incr_batch, BATCHERS, BATCH))
        self.runs["consume_batched"].append(await rate(self.consume_batch, BATCHERS, BATCH))

    async def finish(self) -> dict[str, float]:
        runs = self.runs
        out = {f"{k}_per_s": statistics.median(v) for k, v in runs.items()}
        out["single_ratio"] = statistics.median(
            c / i for c, i in zip(runs["consume_single"], runs["incr_single"], strict=True)
        )
        out["batched_ratio"] = statistics.median(
            c / i for c, i in zip(runs["consume_batched"], runs["incr_batched"], strict=True)
        )
        await cleanup(self.client, self.keys)
        await self.client.aclose()
        return out


async def race_trial(clients: list[RedisClient]) -> tuple[int, int, int, int]:
    """One race on fresh keys: 64 consumers on their own connections race for one miner's share with
    single calls (half synthetic, half organic) while batches race for 7 other miners.
    Returns (total overshoot, synthetic overshoot, worst batched overshoot, attempts)."""
    keys = bench_keys()
    miners = [f"race{i}@1" for i in range(8)]
    setup = await quota_book(clients[0], keys, miners, capacity=RACE_SHARE)
    books = [QuotaBook(c, keys, setup.settings) for c in clients]
    start = asyncio.Event()
    per_consumer = 2 * RACE_SHARE // CONCURRENCY + 1

    async def single(b: QuotaBook, kind: str) -> int:
        await start.wait()
        return sum([await b.consume(miners[0], "bench", kind) for _ in range(per_consumer)])

    async def batched(b: QuotaBook) -> list[int]:
        await start.wait()
        won = [0] * (len(miners) - 1)
        for _ in range(per_consumer):
            for j, ok in enumerate(await b.consume_many(miners[1:], "bench", "organic")):
                won[j] += ok
        return won

    kinds = ["synthetic" if i % 2 else "organic" for i in range(CONCURRENCY)]
    singles = [asyncio.create_task(single(b, k)) for b, k in zip(books, kinds, strict=True)]
    batches = [asyncio.create_task(batched(b)) for b in books]
    start.set()
    granted = sum(await asyncio.gather(*singles))
    per_miner = [sum(col) for col in zip(*await asyncio.gather(*batches), strict=True)]
    status = (await setup.status(miners[:1], "bench"))[miners[0]]
    await cleanup(clients[0], keys)
    return (
        max(granted, status.used_total) - RACE_SHARE,
        status.used_synthetic - int(RACE_SHARE * setup.settings.synthetic_fraction),
        max(g - RACE_SHARE for g in per_miner),
        CONCURRENCY * per_consumer * len(miners),
    )


async def race(url: str) -> dict[str, int]:
    """Overshoot = requests granted beyond the limit over several races (must be 0)."""
    clients = [connect(url) for _ in range(CONCURRENCY)]
    try:
        trials = [await race_trial(clients) for _ in range(RACE_TRIALS)]
    finally:
        for c in clients:
            await c.aclose()
    return {
        "consumers": CONCURRENCY,
        "trials": RACE_TRIALS,
        "share": RACE_SHARE,
        "attempts": sum(t[3] for t in trials),
        "max_overshoot_single": max(0, *(t[0] for t in trials)),
        "max_overshoot_synthetic": max(0, *(t[1] for t in trials)),
        "max_overshoot_batched": max(0, *(t[2] for t in trials)),
    }


async def cleanup(client: RedisClient, keys: Keys) -> None:
    """Delete the run's keys (on a cluster ``scan_iter`` walks every primary)."""
    async for key in client.scan_iter(match=f"isn:{keys.subnet}:*", count=1000):
        await client.unlink(key)


async def server_name(url: str) -> str:
    probe = connect(url)
    try:
        info = await probe.info("server")  # a cluster answers from one node: they all run the same binary
    finally:
        await probe.aclose()
    return f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"


async def measure(urls: dict[str, str]) -> dict[str, dict[str, object]]:
    """Every figure of every backend; throughput repetitions alternate between backends."""
    benches = {name: Throughput(url) for name, url in urls.items()}
    for bench in benches.values():
        await bench.start()
    for _ in range(REPS):
        for bench in benches.values():
            await bench.rep()
    backends: dict[str, dict[str, object]] = {}
    for name, bench in benches.items():
        url = urls[name]
        backends[name] = {"url": redact(url), "server": await server_name(url), **await bench.finish()}
    for name, url in urls.items():
        backends[name].update(await race(url))
    return backends


def single_url() -> str:
    url = os.environ.get("REDIS_URL")
    return url if url and not is_cluster_url(url) else embedded_url()


async def main() -> int:
    cluster_url = os.environ.get("REDIS_CLUSTER_URL")
    if cluster_url and not is_cluster_url(cluster_url):
        print(f"REDIS_CLUSTER_URL must be a redis+cluster:// URL, got {redact(cluster_url)}", file=sys.stderr)
        return 2
    local: LocalCluster | None = None
    if not cluster_url:
        local = LocalCluster(primaries=3).start()
        cluster_url = local.url
    try:
        backends = await measure({"single": single_url(), "cluster": cluster_url})
    finally:
        if local is not None:
            local.stop()
    results = {
        "benchmark": "quotas",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "settings": {
            "concurrency": CONCURRENCY,
            "batch": BATCH,
            "batchers": BATCHERS,
            "max_ops": MAX_OPS,
            "max_seconds": MAX_SECONDS,
            "reps": REPS,
            "cluster_primaries": 3 if local is not None else None,
        },
        "backends": backends,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    single, cluster = backends["single"], backends["cluster"]
    shards = "3-shard cluster" if local is not None else "cluster"
    table = Table(
        title=f"Quota consumption ({single['server']}, {os.cpu_count()} CPUs): one node vs {shards}"
    )
    table.add_column("figure")
    table.add_column("single", justify="right")
    table.add_column("cluster", justify="right")
    table.add_column("cluster / single", justify="right")
    rows = [
        ("plain INCR, single (ops/s)", "incr_single_per_s", "{:,.0f}", True),
        ("consume, single (decisions/s)", "consume_single_per_s", "{:,.0f}", True),
        ("  ratio consume / INCR", "single_ratio", "{:.2f}", False),
        (f"plain INCR, pipelined x{BATCH} (ops/s)", "incr_batched_per_s", "{:,.0f}", True),
        (f"consume_many x{BATCH} (decisions/s)", "consume_batched_per_s", "{:,.0f}", True),
        ("  ratio consume_many / pipelined INCR", "batched_ratio", "{:.2f}", False),
        (f"max overshoot, {CONCURRENCY} consumers, single", "max_overshoot_single", "{}", False),
        (f"max overshoot, {CONCURRENCY} consumers, synthetic limit", "max_overshoot_synthetic", "{}", False),
        (f"max overshoot, {CONCURRENCY} consumers, batched", "max_overshoot_batched", "{}", False),
        ("race attempts", "attempts", "{:,}", False),
    ]
    for label, key, fmt, compare in rows:
        ratio = f"{float(cluster[key]) / float(single[key]):.2f}" if compare else ""  # type: ignore[arg-type]
        table.add_row(label, fmt.format(single[key]), fmt.format(cluster[key]), ratio)
    Console().print(table)
    print(f"wrote {RESULTS}")
    overshoot = max(
        int(b[k])  # type: ignore[call-overload]
        for b in backends.values()
        for k in ("max_overshoot_single", "max_overshoot_synthetic", "max_overshoot_batched")
    )
    return 1 if overshoot else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
