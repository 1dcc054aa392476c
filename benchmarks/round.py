"""Validator overhead of one synthetic round over 256 miners, against the raw time of the same 256 calls.

Run: ``python3 benchmarks/round.py [--miners 256] [--rounds 10] [--concurrency 64]`` (embedded Valkey, or
``REDIS_URL``). One ``inference-subnet miner`` process serves all 256 hotkeys on one port (a metagraph maps
every uid's axon to it; the miner runs with ``miner.auth_enabled=false`` so it answers whichever hotkey the
request names: only for benchmarks). The validator side is the real orchestrator: metagraph, quota batch
(one Lua call per miner, pipelined), sampling, signed calls through ``MinerClient``, dropout admission
(pipelined), and one scoring job queued on the Redis Stream.

Baseline, measured in the same run and interleaved with the rounds: the same 256 signed calls through the
same ``MinerClient`` under the same concurrency, with no bookkeeping at all. The table shows both, the time
a round spends outside the calls (its bookkeeping), and the scoring cost of the jobs the rounds queued.
Results go to ``benchmarks/results/round.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bittensor_wallet import Keypair
from common import free_port
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.process import MinerProcess
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect, redact, resolve_url
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.managing import QuotaBook, ScoreBook
from inference_subnet.validator.orchestrator import Orchestrator, RoundReport
from inference_subnet.validator.scoring import ScoringWorkers
from inference_subnet.validator.synthesizing import Synthesizer

RESULTS = Path(__file__).resolve().parent / "results" / "round.json"
TASK = ArithmeticTask()
MAX_SECONDS = 120.0
"""The whole measurement stops here, whatever ``--rounds`` says."""


def build_metagraph(validator: Keypair, miners: int, port: int) -> Metagraph:
    neurons = [Neuron(uid=0, hotkey=validator.ss58_address, coldkey=validator.ss58_address, stake=1000.0,
                      validator_permit=True, registration_block=1)]
    for uid in range(1, miners + 1):
        hotkey = Keypair.create_from_uri(f"//bench-round-miner-{uid}")
        neurons.append(Neuron(uid=uid, hotkey=hotkey.ss58_address, coldkey=validator.ss58_address, stake=0.0,
                              validator_permit=False, registration_block=uid,
                              axon=AxonInfo(ip="10.0.0.1", port=port)))
    return Metagraph(netuid=1, block=1000, neurons=tuple(neurons))


async def raw_round(client: MinerClient, neurons: list[Neuron], concurrency: int, rng: random.Random) -> tuple[float, int]:
    """The same calls a round makes, and nothing else: (seconds, answers that were ok)."""
    request = TASK.synthesize(rng)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(neuron: Neuron) -> bool:
        async with semaphore:
            return (await client.call(TASK, neuron, request, timeout=TASK.timeout)).ok

    started = time.perf_counter()
    oks = await asyncio.gather(*(one(n) for n in neurons))
    return time.perf_counter() - started, sum(oks)


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "min": ordered[0],
        "max": ordered[-1],
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = resolve_url(os.environ.get("REDIS_URL"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, validator = create_wallet(root / "wallets", "validator", "default", hotkey_uri="//bench-round-validator")
        create_wallet(root / "wallets", "miner", "default", hotkey_uri="//bench-round-miner-process")
        port = free_port()
        metagraph = build_metagraph(validator, args.miners, port)
        (root / "metagraph.json").write_text(metagraph.to_json())
        miner = MinerProcess(
            port=port, wallet_path=root / "wallets", wallet_name="miner", metagraph_file=root / "metagraph.json",
            env={"REDIS_URL": redis_url, "ISN_MINER__AUTH_ENABLED": "false", "ISN_MINER__ENFORCE_QUOTA": "false",
                 "ISN_SUBNET_NAME": f"bench{uuid.uuid4().hex[:8]}"},
        ).start()
        redis = connect(redis_url)
        client = MinerClient(validator, ip_override="127.0.0.1", max_connections=max(64, args.concurrency))
        try:
            await miner.wait_ready_async(60)
            keys = Keys(subnet=f"bench{uuid.uuid4().hex[:8]}", netuid=1, role=validator.ss58_address)
            quotas = QuotaBook(redis, keys, QuotaSettings())
            scores = ScoreBook(redis, keys, ScoringSettings(max_scored_per_period=max(20, args.rounds + 1)))
            rng = random.Random(7)
            orchestrator = Orchestrator(
                redis=redis, keys=keys, metagraph=StaticMetagraphSource(metagraph), quotas=quotas, scores=scores,
                client=client, synthesizer=Synthesizer(redis, keys, {TASK.name: TASK}, organic_ratio=0.0, rng=rng),
                tasks={TASK.name: TASK}, my_hotkey=validator.ss58_address, miners_per_round=args.miners,
                max_concurrency=args.concurrency, rng=rng,
            )
            neurons = [n for n in metagraph.neurons if n.axon is not None]
            # warm-up, not measured: connections, the capacity read of every miner, Lua script loading
            await orchestrator.round()
            await raw_round(client, neurons, args.concurrency, rng)

            raw: list[float] = []
            rounds: list[RoundReport] = []
            raw_ok: list[int] = []
            deadline = time.perf_counter() + MAX_SECONDS
            for _ in range(args.rounds):
                if time.perf_counter() > deadline:
                    break
                seconds, ok = await raw_round(client, neurons, args.concurrency, rng)
                raw.append(seconds)
                raw_ok.append(ok)
                rounds.append(await orchestrator.round())

            # the jobs the rounds queued, scored by two workers (what the scoring service does next)
            workers = ScoringWorkers(redis, keys, {TASK.name: TASK}, scores, workers=2, block_seconds=0.05)
            jobs = len(rounds) + 1
            scoring_started = time.perf_counter()
            runner = asyncio.create_task(workers.run())
            scored = await workers.wait_processed(jobs, timeout=60)
            scoring_seconds = time.perf_counter() - scoring_started
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        finally:
            await client.aclose()
            await redis.aclose()
            miner.stop()

    round_s = [r.seconds for r in rounds]
    calls_s = [r.call_seconds for r in rounds]
    book_s = [r.overhead_seconds for r in rounds]
    raw_med = statistics.median(raw)
    round_med = statistics.median(round_s)
    return {
        "miners": args.miners,
        "rounds": len(rounds),
        "concurrency": args.concurrency,
        "task": TASK.name,
        "raw_calls_seconds": stats(raw),
        "validator_round_seconds": stats(round_s),
        "calls_inside_round_seconds": stats(calls_s),
        "bookkeeping_seconds": stats(book_s),
        "bookkeeping_per_miner_ms": statistics.median(book_s) / args.miners * 1000,
        "round_over_raw": round_med / raw_med,
        "overhead_seconds_vs_raw": round_med - raw_med,
        "ok_answers": {"raw_min": min(raw_ok), "round_min": min(r.ok for r in rounds),
                       "granted_min": min(r.granted for r in rounds),
                       "queued_min": min(r.admitted for r in rounds)},
        "scoring": {"jobs": jobs, "responses": sum(r.admitted for r in rounds) + args.miners,
                    "all_scored": scored, "seconds": scoring_seconds,
                    "responses_per_second": (sum(r.admitted for r in rounds) + args.miners) / scoring_seconds},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "redis": redact(redis_url), "machine": platform.machine()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if not 1 <= args.miners <= 1024 or not 1 <= args.rounds <= 100:
        parser.error("--miners must be 1..1024 and --rounds 1..100")
    results = asyncio.run(measure(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"One synthetic round over {results['miners']} miners "
                        f"(concurrency {results['concurrency']}, {results['rounds']} rounds)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    for label, key in (("raw: the same calls, no bookkeeping (baseline)", "raw_calls_seconds"),
                       ("validator round (orchestrator.round)", "validator_round_seconds"),
                       ("  of which waiting for miners", "calls_inside_round_seconds"),
                       ("  of which bookkeeping", "bookkeeping_seconds")):
        table.add_row(label, f"{results[key]['median'] * 1000:.1f} ms", f"{results[key]['p90'] * 1000:.1f} ms")
    Console().print(table)
    s = results["scoring"]
    print(f"round / raw (median): {results['round_over_raw']:.2f}x, "
          f"+{results['overhead_seconds_vs_raw'] * 1000:.1f} ms; bookkeeping "
          f"{results['bookkeeping_per_miner_ms']:.3f} ms per miner")
    print(f"ok answers (min over rounds): raw {results['ok_answers']['raw_min']}, round "
          f"{results['ok_answers']['round_min']} of {results['miners']}")
    print(f"scoring the queued jobs: {s['responses']} responses in {s['seconds'] * 1000:.0f} ms "
          f"({s['responses_per_second']:.0f}/s, all scored: {s['all_scored']})")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
