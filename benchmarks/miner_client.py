"""What one call to a miner costs the validator's own process: ``MinerClient`` (aiohttp) against the same
signed call made with httpx's pooled transport (the client the validator used before), in one run.

Run: ``python3 benchmarks/miner_client.py`` (embedded Valkey, or ``REDIS_URL``).

One ``inference-subnet miner`` process (honest arithmetic, one worker) on 127.0.0.1. Both clients sign every
request with btauth/1, read the answer with a cap and parse it as the task's response, so the difference is
the HTTP client alone. ``ROUNDS`` rounds alternate the two; each round makes ``REQUESTS`` calls at each
concurrency, and the median round is kept. CPU is this process's user + system time per call (the miner's
is not counted). Results are printed and written to ``benchmarks/results/miner_client.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from common import free_port
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.process import MinerProcess
from inference_subnet.protocol import btauth
from inference_subnet.store.redis import resolve_url
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask
from inference_subnet.validator.client import MinerClient

RESULTS = Path(__file__).resolve().parent / "results" / "miner_client.json"
CONCURRENCY = (1, 8)
REQUESTS = 1500
ROUNDS = 5
WARMUP = 200
CAP = 1 << 20

Call = Callable[[int], Awaitable[bool]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HttpxCall:
    """The signed call on httpx's ``AsyncHTTPTransport``: one pool, raw capped read, the task's parse."""

    def __init__(self, keypair: Any, neuron: Neuron, task: ArithmeticTask) -> None:
        self.keypair, self.neuron, self.task = keypair, neuron, task
        self.url = httpx.URL(neuron.axon.url() + task.route)  # type: ignore[union-attr]
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256), trust_env=False
        )
        self.timeout = httpx.Timeout(task.timeout, connect=2.0).as_dict()

    async def __call__(self, i: int) -> bool:
        body = ArithmeticRequest(op="add", a=i, b=1).model_dump_json().encode()
        headers = btauth.sign(self.keypair, method="POST", path=self.task.route, body=body,
                              receiver_ss58=self.neuron.hotkey)
        headers["Content-Type"] = "application/json"
        request = httpx.Request("POST", self.url, content=body, headers=headers,
                                extensions={"timeout": self.timeout})
        response = await self.transport.handle_async_request(request)
        try:
            parts, total = [], 0
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total > CAP:
                    return False
                parts.append(chunk)
        finally:
            await response.aclose()
        if response.status_code != 200:
            return False
        return ArithmeticResponse.model_validate_json(b"".join(parts)).result == i + 1


async def _round(call: Call, concurrency: int) -> dict[str, float]:
    counter = iter(range(REQUESTS))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            errors += not await call(i)

    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {"cpu_us": cpu / REQUESTS * 1e6, "rps": REQUESTS / wall, "errors": errors}


async def run(root: Path, redis_url: str) -> dict[str, Any]:
    _, validator = create_wallet(root / "wallets", "validator", "default")
    _, hot = create_wallet(root / "wallets", "miner", "default")
    port = free_port()
    neurons = (
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey="c", stake=1000.0, validator_permit=True,
               registration_block=1),
        Neuron(uid=1, hotkey=hot.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
               registration_block=1, axon=AxonInfo(ip="127.0.0.1", port=port)),
    )
    metagraph_file = root / "metagraph.json"
    metagraph_file.write_text(Metagraph(netuid=1, block=1, neurons=neurons).to_json())
    miner = MinerProcess(port=port, wallet_path=root / "wallets", wallet_name="miner",
                         metagraph_file=metagraph_file,
                         env={"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"clientbench{os.getpid()}",
                              "ISN_MINER__CAPACITY": '{"arithmetic": 100000000}'})
    miner.start()
    task = ArithmeticTask()
    client = MinerClient(validator)
    baseline = HttpxCall(validator, neurons[1], task)

    async def ours(i: int) -> bool:
        result = await client.call(task, neurons[1], ArithmeticRequest(op="add", a=i, b=1))
        return result.ok and result.response.result == i + 1  # type: ignore[union-attr]

    modes: dict[str, Call] = {"httpx transport": baseline, "MinerClient (aiohttp)": ours}
    out: dict[str, Any] = {}
    try:
        miner.wait_ready()
        for call in modes.values():
            for i in range(WARMUP):
                await call(i)
        for concurrency in CONCURRENCY:
            rounds: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            for _ in range(ROUNDS):
                for mode, call in modes.items():
                    rounds[mode].append(await _round(call, concurrency))
            out[str(concurrency)] = {
                mode: {
                    "cpu_us_per_call": statistics.median(r["cpu_us"] for r in runs),
                    "rps": statistics.median(r["rps"] for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                }
                for mode, runs in rounds.items()
            }
    finally:
        await client.aclose()
        await baseline.transport.aclose()
        miner.stop()
    return out


def main() -> None:
    redis_url = resolve_url(os.environ.get("REDIS_URL"))
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(Path(tmp), redis_url))
    table = Table(title=f"validator CPU per signed miner call, median of {ROUNDS} rounds of {REQUESTS}")
    for col in ("in flight", "client", "CPU us/call", "calls/s", "errors", "CPU vs httpx"):
        table.add_column(col, justify="right")
    for concurrency, modes in results.items():
        base = modes["httpx transport"]["cpu_us_per_call"]
        for mode, row in modes.items():
            table.add_row(concurrency, mode, f"{row['cpu_us_per_call']:.0f}", f"{row['rps']:.0f}",
                          str(row["errors"]), f"{row['cpu_us_per_call'] / base:.2f}x")
    Console(width=120).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "by_concurrency": results,
    }, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
