"""Run ``ecosystem.config.js`` under a real pm2 against a dev subtensor node, and check what it started.

    npm install pm2@5                      # anywhere; pass its path with --pm2
    python3 deploy/pm2/smoke.py --chain-url ws://127.0.0.1:9944 --pm2 node_modules/.bin/pm2

It registers a fresh subnet with one validator and one miner (sudo ``//Alice``: dev chains only), starts
every app of the ecosystem file with its own pm2 daemon (``PM2_HOME`` in a temp folder, so an operator's
pm2 is never touched), builds blocks, waits for every ``/health``, sends organic requests through the
gateway with a key made by ``gateway keys create``, waits for weights on chain, prints what it saw, and
stops its daemon. Exit code 0 only when every app is online, healthy and ready, requests were served and weights landed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from inference_subnet.chain.localchain import dev_keypair
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.localnet.chain import Neurons, SubstrateChain
from inference_subnet.protocol.task import load_task

HERE = Path(__file__).resolve().parent
ECOSYSTEM = HERE / "ecosystem.config.js"
SERVICE_PORTS = {"isn-sidecar": 9101, "isn-synthesizing": 9102, "isn-orchestrator": 9103, "isn-weights": 9104,
                 "isn-scoring-0": 9110, "isn-scoring-1": 9111}


async def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command in a thread, so the block clock keeps ticking meanwhile."""
    return await asyncio.to_thread(subprocess.run, command, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_health(client: httpx.AsyncClient, ports: dict[str, int], deadline: float) -> dict[str, float]:
    """Seconds until each app's /health first answered 200."""
    start = time.monotonic()
    up: dict[str, float] = {}
    while len(up) < len(ports) and time.monotonic() < deadline:
        for name, port in ports.items():
            if name not in up:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        up[name] = round(time.monotonic() - start, 1)
        await asyncio.sleep(0.5)
    return up


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="isn-pm2-smoke-"))
    wallets = work / "wallets"
    _, validator = create_wallet(wallets, "validator", "default")
    _, miner = create_wallet(wallets, "miner", "default")
    gateway_port, miner_port, redis_port = free_port(), free_port(), free_port()
    chain = SubstrateChain(args.chain_url)
    env = {
        **os.environ,
        "PM2_HOME": str(work / "pm2"),
        "STATE_DIR": str(work / "state"),
        "WALLETS_DIR": str(wallets),
        "VALIDATOR_WALLET": "validator",
        "MINER_WALLET": "miner",
        "REDIS_PORT": str(redis_port),
        "GATEWAY_PORT": str(gateway_port),
        "MINER_PORT": str(miner_port),
        "NETWORK": args.chain_url,
        # Any setting can also be given in the shell that runs `pm2 start`: pm2 passes it to every app.
        # A dev chain refuses 127.0.0.1 as an axon IP, so the axon holds a public-looking one.
        "ISN_CHAIN__IP_OVERRIDE": "127.0.0.1",
        "ISN_CHAIN__METAGRAPH_REFRESH_SECONDS": "3",
        "ISN_VALIDATOR__ROUND_INTERVAL_SECONDS": "1",
        "ISN_GATEWAY__DEFAULT_RATE_PER_MINUTE": "600",
    }
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    pm2 = [args.pm2]
    stop = asyncio.Event()
    blocks = 0
    started = time.monotonic()

    async def block_clock() -> None:
        nonlocal blocks
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await chain.tick(1)
                blocks += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    clock: asyncio.Task[None] | None = None
    try:
        netuid = await chain.setup(Neurons(owner=dev_keypair("//Alice"), validator=validator, miners=(miner,)),
                                   [miner_port])
        env["NETUID"] = str(netuid)
        print(f"subnet {netuid} on {args.chain_url}; pm2 home {env['PM2_HOME']}")
        clock = asyncio.create_task(block_clock())
        launch = time.monotonic()
        await run([*pm2, "start", str(ECOSYSTEM)], env=env, check=True, timeout=60)
        ports = {**SERVICE_PORTS, "isn-gateway": gateway_port, "isn-miner": miner_port}
        async with httpx.AsyncClient(timeout=5.0) as client:
            health = await wait_health(client, ports, time.monotonic() + args.timeout)
            key = (await run(
                [sys.executable, "-m", "inference_subnet.cli.main", "gateway", "keys", "create", "--name", "smoke",
                 "--rate-per-minute", "600", "--database-url",
                 f"sqlite+aiosqlite:///{work / 'state' / 'gateway.db'}"],
                env=env, check=True, timeout=60,
            )).stdout.strip()
            task = load_task("arithmetic")
            rng = random.Random(1)
            ok = sent = 0
            deadline = time.monotonic() + args.timeout
            while ok < args.requests and time.monotonic() < deadline:
                sent += 1
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.post(f"http://127.0.0.1:{gateway_port}/v1/tasks/{task.name}",
                                          content=task.synthesize(rng).model_dump_json(),
                                          headers={"Authorization": f"Bearer {key}"})
                    ok += r.status_code == 200
                await asyncio.sleep(0.2)
            weights: dict[int, float] = {}
            first_weights = None
            while time.monotonic() < deadline:
                graph = await chain.metagraph(netuid)
                weights = await chain.weights_of(netuid, graph.by_hotkey[validator.ss58_address].uid)
                if weights:
                    first_weights = round(time.monotonic() - launch, 1)
                    break
                await asyncio.sleep(1.0)
            ready: dict[str, int] = {}
            not_ready: dict[str, str] = {}
            for name, port in ports.items():
                path = "/health" if name == "isn-miner" else "/ready"
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{port}{path}")
                    ready[name] = response.status_code
                    if response.status_code != 200:
                        not_ready[name] = response.text
        listing = json.loads((await run([*pm2, "jlist"], env=env, check=True, timeout=30)).stdout)
        print(f"{'app':18} {'status':8} {'restarts':>8} {'port':>6} {'health at':>10} {'ready':>6}")
        failures = []
        for app in listing:
            name, status = app["name"], app["pm2_env"]["status"]
            restarts = app["pm2_env"].get("restart_time", 0)
            port = ports.get(name, redis_port if name == "isn-redis" else 0)
            print(f"{name:18} {status:8} {restarts:>8} {port:>6} {health.get(name, '-')!s:>10} "
                  f"{ready.get(name, '-')!s:>6}")
            if status != "online":
                failures.append(f"{name} is {status}")
        failures += [f"{name}: no /health" for name in ports if name not in health]
        for name, body in not_ready.items():
            print(f"{name} /ready: {body}")
            failures.append(f"{name} not ready")
        miner_uid = (await chain.metagraph(netuid)).by_hotkey[miner.ss58_address].uid
        print(f"organic requests through the gateway: {ok}/{sent} ok")
        print(f"weights on chain from the validator: {weights} (miner uid {miner_uid}); "
              f"first seen {first_weights}s after `pm2 start`; {blocks} blocks built in "
              f"{time.monotonic() - started:.0f}s")
        if ok < args.requests:
            failures.append(f"only {ok} organic requests served")
        if weights.get(miner_uid, 0) <= 0:
            failures.append("no weight on the miner")
        print("OK" if not failures else "FAILED: " + "; ".join(failures))
        return 0 if not failures else 1
    finally:
        stop.set()
        if clock is not None:
            await asyncio.gather(clock, return_exceptions=True)
        await run([*pm2, "kill"], env=env, timeout=60, check=False)
        await chain.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain-url", required=True, help="ws:// URL of a dev subtensor node (sudo //Alice).")
    parser.add_argument("--pm2", default="pm2", help="The pm2 executable.")
    parser.add_argument("--requests", type=int, default=10, help="Organic requests that must succeed.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds allowed for each phase.")
    sys.exit(asyncio.run(main(parser.parse_args())))
