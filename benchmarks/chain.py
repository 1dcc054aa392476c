"""What the chain layer costs, each figure beside a baseline measured in the same run.

Run: ``python3 benchmarks/chain.py`` against ``ISN_TEST_CHAIN_URL`` (or ``--url``); with neither, it starts its
own offline subtensor runtime (``../shared/chain/start.sh`` under a temporary ``LOCALCHAIN_HOME``) and stops it.

1. Metagraph fetch + decode of a real subnet of ``NEURONS`` registered neurons on the local runtime:
   ``SubstrateChainClient.metagraph()`` (head, ``get_selective_metagraph`` with only the fields a snapshot
   needs, decode, typed snapshot) against the raw ``state_call`` of the full ``get_metagraph`` through the
   same library and socket, *without any decoding* (the floor any client pays), and against the full call
   decoded by the library.
2. Decode of a 256-neuron payload (SCALE-encoded with the live runtime's own types from a real payload,
   replicated to 256 neurons): our path (selective payload -> library decode -> ``Metagraph``) against the
   full payload decoded by the library alone, and against the bittensor SDK 11.3 building its metagraph
   from that decoded dict (``bittensor.metagraph._build``).
3. Weight conversion for 256 uids: ``convert_weights`` (clip to the max weight limit, normalise, u16, the
   runtime's fixed-point check) against the SDK's ``normalize`` (max-upscale only) and a naive loop.

Every loop is bounded in count; results are printed and written to ``benchmarks/results/chain.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from async_substrate_interface import AsyncSubstrateInterface
from rich.console import Console
from rich.table import Table

from inference_subnet.chain import metagraph as decode
from inference_subnet.chain.localchain import SubnetHyper, dev_keypair, prepare_subnet
from inference_subnet.chain.substrate import SubstrateChainClient
from inference_subnet.chain.types import AxonInfo
from inference_subnet.chain.weights import convert_weights

RESULTS = Path(__file__).resolve().parent / "results" / "chain.json"
SHARED_CHAIN = Path(__file__).resolve().parents[2] / "shared" / "chain"
NEURONS = 64
"""Neurons registered on the benchmark subnet (one batch extrinsic per 32)."""
FETCH_ROUNDS = 20
DECODE_REPS = 30
WEIGHT_REPS = 300
SYNTH_NEURONS = 256


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000, 3),
        "n": len(ordered),
    }


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


# -- 1. fetch ------------------------------------------------------------------------------------------------


async def bench_fetch(url: str) -> tuple[dict[str, Any], Any, bytes]:
    async with SubstrateChainClient(url, call_timeout=120) as client:
        run = uuid.uuid4().hex[:6]
        miners = [dev_keypair(f"//bench-{run}-{i}") for i in range(NEURONS - 1)]
        netuid = await prepare_subnet(
            client, owner=dev_keypair(f"//bench-{run}-owner"), miners=[],
            hyper=SubnetHyper(max_registrations_per_block=NEURONS, target_registrations_per_interval=NEURONS),
        )
        for start in range(0, len(miners), 32):  # registrations in batches: one block each
            await client.submit_batch(dev_keypair(f"//bench-{run}-owner"), [
                ("SubtensorModule", "burned_register", {"netuid": netuid, "hotkey": kp.ss58_address})
                for kp in miners[start:start + 32]
            ])
        graph = await client.metagraph(netuid)
        assert len(graph.neurons) == NEURONS, len(graph.neurons)
    # Baselines on their own connection of the same library; ours on a fresh client.
    async with AsyncSubstrateInterface(url, ss58_format=42, ws_shutdown_timer=None) as substrate, \
            SubstrateChainClient(url, call_timeout=120) as client:
        runtime = await substrate.init_runtime()
        param = await substrate.encode_scale("scale_info::" + str(
            runtime.runtime_api_map["SubnetInfoRuntimeApi"]["get_metagraph"]["inputs"][0]["ty"]), netuid,
            runtime=runtime)

        async def raw_full() -> bytes:
            head = await substrate.get_chain_head()
            reply = await substrate.rpc_request("state_call", ["SubnetInfoRuntimeApi_get_metagraph", param.hex(), head])
            return bytes.fromhex(reply["result"][2:])

        async def library_full() -> Any:
            return await substrate.runtime_call("SubnetInfoRuntimeApi", "get_metagraph", [netuid])

        samples: dict[str, list[float]] = {"ours": [], "raw": [], "library": []}
        for _ in range(3):  # warm-up
            await client.metagraph(netuid)
            await raw_full()
        for _ in range(FETCH_ROUNDS):  # interleaved, so drift hits all three alike
            for name, call in (("ours", lambda: client.metagraph(netuid)), ("raw", raw_full),
                               ("library", library_full)):
                started = time.perf_counter()
                await call()
                samples[name].append(time.perf_counter() - started)
        full_value = await library_full()
        raw = await raw_full()
        return ({name: ms(s) for name, s in samples.items()} | {"neurons": NEURONS, "netuid": netuid},
                (runtime, full_value), raw)


# -- 2. decode -----------------------------------------------------------------------------------------------


def synthesize(runtime: Any, real: dict[str, Any], n: int) -> tuple[bytes, bytes]:
    """(full, selective) payloads of ``n`` neurons: a real payload's values replicated, new keys and axons."""
    keys = [dev_keypair(f"//synth-{i}").ss58_address for i in range(n)]
    full = dict(real)
    width = len(real["hotkeys"])
    for name, value in real.items():
        if isinstance(value, list) and len(value) == width:
            full[name] = [value[i % width] for i in range(n)]
    full["hotkeys"] = keys
    full["coldkeys"] = [keys[i % 16] for i in range(n)]
    full["identities"] = [None] * n
    full["axons"] = [{"block": 1, "version": 1, "ip": AxonInfo.ip_to_int(f"203.0.113.{i % 250}")[0] if i % 2 else
                      AxonInfo.ip_to_int(f"2001:db8::{i:x}")[0], "port": 8000 + i, "ip_type": 4 if i % 2 else 6,
                      "protocol": 4, "placeholder1": 0, "placeholder2": 0} for i in range(n)]
    full["alpha_dividends_per_hotkey"] = [(k, 1) for k in keys]
    full["tao_dividends_per_hotkey"] = [(k, 0) for k in keys]
    full["num_uids"] = n
    api = runtime.runtime_api_map["SubnetInfoRuntimeApi"]
    full_bytes = bytes(runtime.runtime_config.create_scale_object(
        f"scale_info::{api['get_metagraph']['output']}").encode(full).data)
    fields = decode.output_fields(runtime, "get_selective_metagraph")
    wanted = {fields[i] for i in decode.selective_indexes(fields)}
    selective = {name: (full.get(name) if name in wanted else None) for name in fields}
    selective["netuid"] = full["netuid"]
    selective_bytes = bytes(runtime.runtime_config.create_scale_object(
        f"scale_info::{api['get_selective_metagraph']['output']}").encode(selective).data)
    return full_bytes, selective_bytes


def bench_decode(runtime: Any, real: dict[str, Any]) -> dict[str, Any]:
    from bittensor import metagraph as sdk_metagraph  # test-only dependency, a reference here

    full_bytes, selective_bytes = synthesize(runtime, real, SYNTH_NEURONS)
    netuid = real["netuid"]
    ours = decode.from_runtime(decode.decode_output(runtime, "get_selective_metagraph", selective_bytes), netuid=netuid)
    assert len(ours.neurons) == SYNTH_NEURONS and ours.by_uid[1].axon is not None
    full_value = decode.decode_output(runtime, "get_metagraph", full_bytes)
    sdk = sdk_metagraph._build(netuid, full_value, {})
    assert len(sdk.neurons) == SYNTH_NEURONS

    results = {
        "ours_selective": ms(timed(lambda: decode.from_runtime(
            decode.decode_output(runtime, "get_selective_metagraph", selective_bytes), netuid=netuid), DECODE_REPS)),
        "ours_full": ms(timed(lambda: decode.from_runtime(
            decode.decode_output(runtime, "get_metagraph", full_bytes), netuid=netuid), DECODE_REPS)),
        "library_full_decode_only": ms(timed(
            lambda: decode.decode_output(runtime, "get_metagraph", full_bytes), DECODE_REPS)),
        "sdk_full": ms(timed(lambda: sdk_metagraph._build(
            netuid, decode.decode_output(runtime, "get_metagraph", full_bytes), {}), DECODE_REPS)),
        "snapshot_only": ms(timed(lambda: decode.from_runtime(full_value, netuid=netuid), DECODE_REPS)),
    }
    return results | {"neurons": SYNTH_NEURONS, "full_bytes": len(full_bytes), "selective_bytes": len(selective_bytes)}


# -- 3. weights ------------------------------------------------------------------------------------------------


def naive_u16(uids: list[int], weights: list[float]) -> tuple[list[int], list[int]]:
    """What many validators write by hand: sum-normalise, scale to u16, drop zeros (no limit, no checks)."""
    total = sum(weights)
    pairs = [(u, int(w / total * 65535)) for u, w in zip(uids, weights)]
    kept = [(u, v) for u, v in pairs if v > 0]
    return [u for u, _ in kept], [v for _, v in kept]


def bench_weights() -> dict[str, Any]:
    from bittensor.intents.weights import normalize as sdk_normalize

    rng = random.Random(7)
    uids = list(range(256))
    weights = [rng.random() ** 3 for _ in uids]
    limited = convert_weights(uids, weights, n_neurons=256, max_weight_limit=0.05, min_allowed_weights=8)
    assert max(limited[1]) == 65535
    return {
        "ours_limit_0.05": ms(timed(lambda: convert_weights(uids, weights, n_neurons=256, max_weight_limit=0.05,
                                                            min_allowed_weights=8), WEIGHT_REPS)),
        "ours_no_limit": ms(timed(lambda: convert_weights(uids, weights, n_neurons=256, max_weight_limit=1.0),
                                  WEIGHT_REPS)),
        "sdk_normalize": ms(timed(lambda: sdk_normalize(uids, weights), WEIGHT_REPS)),
        "naive": ms(timed(lambda: naive_u16(uids, weights), WEIGHT_REPS)),
        "uids": 256,
    }


# -- chain process ---------------------------------------------------------------------------------------------


def own_chain() -> tuple[str, Callable[[], None]]:
    """Start a private runtime (copy of the shared chopsticks install) and return (url, stop)."""
    home = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "subtensor-localchain" / "node_modules"
    if cache.is_dir():
        shutil.copytree(cache, home / "node_modules", symlinks=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LOCALCHAIN_HOME": str(home)}
    out = subprocess.run(["bash", str(SHARED_CHAIN / "start.sh"), str(port)], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise SystemExit(f"could not start a chain: {out.stderr[-1000:]}")

    def stop() -> None:
        pid_file = home / f"chopsticks-{port}.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(home, ignore_errors=True)

    return f"ws://127.0.0.1:{port}", stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ISN_TEST_CHAIN_URL"),
                        help="ws:// URL of a dev chain (default: ISN_TEST_CHAIN_URL, else a private one)")
    args = parser.parse_args()
    stop: Callable[[], None] | None = None
    url = args.url
    if not url:
        url, stop = own_chain()
    try:
        fetch, (runtime, real), _ = asyncio.run(bench_fetch(url))
    finally:
        if stop is not None:
            stop()
    decoding = bench_decode(runtime, real)
    weights = bench_weights()

    report = {"fetch": fetch, "decode_256": decoding, "weights_256": weights,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title="chain layer (median ms, p90 ms)")
    for column in ("measure", "ours", "baseline", "baseline is"):
        table.add_column(column)

    def row(measure: str, ours: dict[str, float], base: dict[str, float], what: str) -> None:
        table.add_row(measure, f"{ours['median_ms']:.2f} ({ours['p90_ms']:.2f})",
                      f"{base['median_ms']:.2f} ({base['p90_ms']:.2f})", what)

    row(f"metagraph fetch+decode, {fetch['neurons']} neurons", fetch["ours"], fetch["raw"],
        "raw get_metagraph state_call, no decode")
    row(f"metagraph fetch+decode, {fetch['neurons']} neurons", fetch["ours"], fetch["library"],
        "library runtime_call (full, decoded)")
    row("decode 256 neurons -> Metagraph", decoding["ours_selective"], decoding["library_full_decode_only"],
        "library decode of full payload only")
    row("decode 256 neurons -> Metagraph", decoding["ours_selective"], decoding["sdk_full"],
        "bittensor 11.3 metagraph build (full)")
    row("decode 256 neurons, full payload", decoding["ours_full"], decoding["sdk_full"],
        "bittensor 11.3 metagraph build (full)")
    row("convert 256 weights (limit 0.05)", weights["ours_limit_0.05"], weights["sdk_normalize"],
        "bittensor 11.3 normalize (no limit)")
    row("convert 256 weights (no limit)", weights["ours_no_limit"], weights["naive"], "naive loop")
    Console(width=140).print(table)
    print(f"payload bytes for 256 neurons: selective {decoding['selective_bytes']}, full {decoding['full_bytes']}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
