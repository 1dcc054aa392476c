"""The miner's request path: what btauth/1 and the shared nonce store cost, measured against no auth.

Run: ``python3 benchmarks/miner_path.py`` (embedded Valkey) or ``REDIS_URL=redis://... python3 ...``;
``--baseline /path/to/other/checkout`` also serves the main modes with another tree's code in the same run.

Part 1, end to end. Three ``inference-subnet miner`` processes (one uvicorn worker each, 127.0.0.1) serve
the arithmetic task from the same wallet and metagraph file:
  * ``no auth``: ``miner.auth_enabled=false`` (no blacklist, signature, nonce or quota work): the baseline;
  * ``auth``: blacklist + btauth/1 verify + the Redis nonce store (quota off);
  * ``auth+quota``: the same plus the per-validator quota (one Lua call), as a miner runs by default.
One lean keep-alive client (raw HTTP/1.1, parsed by ``httptools``) sends the same signed requests to each
(it signs in every mode, so client work is equal and the difference is the server's), ``REQUESTS`` per round
at each load of ``LOADS`` (16 and 64 in flight), rounds interleaved across modes and loads (every other
round in reverse order, so no mode always runs first), median round kept.
Figures: requests/s, p50/p99 latency and their ratio, the server's CPU time per request read from ``/proc``
(the client shares the 2 cores, so CPU per request is the cleaner measure of the server's own cost), and the
Redis commands per request and per round trip each miner reports on ``/health``.

With ``--baseline TREE`` three more processes run the ``no auth``, ``auth`` and ``auth+quota`` modes from the
package in TREE (e.g. the main branch), each right after its twin in every round; ``vs twin`` is then the
median of the per-round ratios this tree / that one. Target: auth+quota requests/s at least the baseline's.

The server layer: two more processes serve the same app on plain uvicorn (``http="httptools"``, no limits),
the ``no auth`` and ``auth+quota`` modes, each right after its bounded twin: what the framework's bounded
HTTP protocol (``inference_subnet.serving``) costs end to end (``vs twin`` when no baseline is given).

Where the auth time goes: once per round, between the end-to-end runs, this process measures the parts
alone in CPU time: ``btauth.authenticate`` (shape, freshness, sha256, sr25519), the nonce check alone and
auto-pipelined at ``CONCURRENCY``, the quota script auto-pipelined, reading the headers as the app does, and
the HTTP metrics middleware around an app that does nothing. Printed: the extra server CPU of an
authenticated request over an unauthenticated one, divided by (verify + pipelined nonce check).
Targets: that ratio <= 1.3; p99 <= 2.5 x p50 at 64 in flight with auth.

``--quick`` runs fewer and shorter rounds.

Part 2, verification alone: our ``btauth.verify`` against ``bittensor.http_auth.verify`` (11.3.0) on the
same headers and body (sr25519 and ed25519), a no-op nonce store for both. Target: ours no slower.

Part 3, the HTTP layer alone: uvicorn's httptools protocol against the bounded one, in this process on a
transport that drops what it is given, one keep-alive connection answering a signed request with a trivial
ASGI app; paired runs as in part 2. End-to-end throughput on a shared 2-core machine swings by more than the
difference; this isolates it. Target: the bounded layer costs under 5% more per request.

Results are printed and written to ``benchmarks/results/miner_path.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bittensor.http_auth as bt_auth
import httptools
import uvloop
from bittensor_wallet import Keypair
from common import cpu_seconds, free_port, median_round
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.process import MinerProcess
from inference_subnet.miner.serve import FACTORY, SPEC_ENV, MinerSpec
from inference_subnet.protocol import btauth
from inference_subnet.store.redis import redact, resolve_url

RESULTS = Path(__file__).resolve().parent / "results" / "miner_path.json"
REQUESTS = 3000
"""Requests per round and mode."""
CONCURRENCY = 32
"""In flight for the in-process parts (nonce and quota writes at this concurrency)."""
LOADS = (16, 64)
"""In flight end to end: every mode is measured at each."""
WARMUP = 300
ROUNDS = 5
MAX_SECONDS = 30.0
"""A round stops at whichever comes first: REQUESTS sent or MAX_SECONDS elapsed."""
VERIFY_CALLS = 1000
VERIFY_REPS = 15
BREAKDOWN_CALLS = 4000
PROTOCOL_CALLS = 5000
"""Requests per run of the HTTP layer alone (part 3)."""
ROUTE = "/tasks/arithmetic"
MODES: dict[str, dict[str, str]] = {
    "no auth": {"ISN_MINER__AUTH_ENABLED": "false", "ISN_MINER__ENFORCE_QUOTA": "false"},
    "auth": {"ISN_MINER__AUTH_ENABLED": "true", "ISN_MINER__ENFORCE_QUOTA": "false"},
    "auth+quota": {"ISN_MINER__AUTH_ENABLED": "true", "ISN_MINER__ENFORCE_QUOTA": "true",
                   "ISN_MINER__CAPACITY": '{"arithmetic": 100000000}'},
}
BASELINE = " (baseline tree)"
BASELINE_MODES = ("no auth", "auth", "auth+quota")
"""Modes also served by the code of ``--baseline PATH`` (e.g. the main branch), each right after its twin."""
PLAIN = " (plain uvicorn)"
PLAIN_MODES = ("no auth", "auth+quota")
"""Modes also measured on plain uvicorn, the baseline of the bounded server."""


def make_subnet(root: Path) -> tuple[Keypair, Keypair, Path]:
    _, miner = create_wallet(root / "wallets", "miner", "default")
    _, validator = create_wallet(root / "wallets", "validator", "default")
    metagraph = Metagraph(netuid=1, block=1, neurons=(
        Neuron(uid=0, hotkey=validator.ss58_address, coldkey="c", stake=1000.0, validator_permit=True,
               registration_block=1),
        Neuron(uid=1, hotkey=miner.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
               registration_block=1, axon=AxonInfo(ip="10.0.0.1", port=1)),
    ))
    path = root / "metagraph.json"
    path.write_text(metagraph.to_json())
    return miner, validator, path


class Connection:
    """One keep-alive HTTP/1.1 connection: requests written as bytes, answers parsed by ``httptools``
    (uvicorn's own C parser). A load generator has to be much cheaper per request than the server it
    measures; httpx spends ~2 ms of CPU per request at this concurrency, which would hide the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self._body: list[bytes] = []
        self._done = False
        self._parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._done = True

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        self._body, self._done = [], False
        while not self._done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self._parser.feed_data(data)
        return self._parser.get_status_code(), b"".join(self._body)


async def load(host: str, port: int, validator: Keypair, receiver: str, n: int,
               concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """``n`` signed requests on ``concurrency`` keep-alive connections; every answer must be a correct 200."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))
    deadline = time.perf_counter() + MAX_SECONDS

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        conn = Connection(reader, writer, f"{host}:{port}")
        try:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                body = b'{"op":"add","a":%d,"b":1}' % i
                headers = btauth.sign(validator, method="POST", path=ROUTE, body=body, receiver_ss58=receiver)
                headers["content-type"] = "application/json"
                started = time.perf_counter()
                status, answer = await conn.post(ROUTE, body, headers)
                latencies.append(time.perf_counter() - started)
                if status != 200 or json.loads(answer) != {"result": i + 1}:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - started}


def baseline_miner(proc: MinerProcess, tree: Path) -> MinerProcess:
    """``proc`` running the package found in ``tree`` instead of this one: put first on ``sys.path``, ahead
    of the current directory that ``python -m`` would put there."""
    code = (f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
            "runpy.run_module('inference_subnet.cli.main', run_name='__main__', alter_sys=True)")
    proc.args = [proc.args[0], "-c", code, *proc.args[3:]]
    return proc


async def run_end_to_end(
    root: Path, redis_url: str, baseline: Path | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Every mode at every load of :data:`LOADS`, rounds interleaved, in one run (see the module docstring),
    and the median of each part of :func:`breakdown`, measured once per round."""
    miner, validator, metagraph = make_subnet(root)
    procs: dict[str, MinerProcess] = {}
    for mode, env in MODES.items():
        procs[mode] = MinerProcess(
            port=free_port(), wallet_path=root / "wallets", wallet_name="miner", metagraph_file=metagraph,
            env={**env, "REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"bench{os.getpid()}"},
        )
        if baseline is not None and mode in BASELINE_MODES:
            procs[mode + BASELINE] = baseline_miner(MinerProcess(
                port=free_port(), wallet_path=root / "wallets", wallet_name="miner", metagraph_file=metagraph,
                env={**env, "REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"bench{os.getpid()}"},
            ), baseline)
        if mode in PLAIN_MODES:  # right after its bounded twin, so each pair runs back to back
            procs[mode + PLAIN] = plain_miner(root, metagraph, redis_url, env)
    for proc in procs.values():
        proc.start()
    rounds: dict[int, dict[str, list[dict[str, Any]]]] = {c: {mode: [] for mode in procs} for c in LOADS}
    parts: list[dict[str, float]] = []
    try:
        for proc in procs.values():
            proc.wait_ready()
        for proc in procs.values():
            await load(proc.host, proc.port, validator, miner.ss58_address, WARMUP, max(LOADS))
        before = await pipelining_stats(procs)
        for round_no in range(ROUNDS):
            # the parts alone, once per round between the end-to-end runs: both see the same machine
            parts.append(await breakdown(redis_url))
            # every other round in reverse order: no mode always runs first, right after the parts
            order = list(procs.items()) if round_no % 2 == 0 else list(reversed(procs.items()))
            for concurrency in LOADS:
                for mode, proc in order:
                    assert proc.pid is not None
                    cpu_before = cpu_seconds(proc.pid)
                    client_before = time.process_time()
                    run = await load(proc.host, proc.port, validator, miner.ss58_address, REQUESTS, concurrency)
                    done = len(run["latencies"])
                    run["server_cpu_per_req_us"] = (cpu_seconds(proc.pid) - cpu_before) / done * 1e6
                    run["client_cpu_per_req_us"] = (time.process_time() - client_before) / done * 1e6
                    run["rps"] = done / run["wall"]
                    rounds[concurrency][mode].append(run)
        after = await pipelining_stats(procs)
    finally:
        for proc in procs.values():
            proc.stop()
    measured = ROUNDS * len(LOADS) * REQUESTS
    out: dict[str, Any] = {}
    for concurrency, by_mode in rounds.items():
        at: dict[str, Any] = {}
        for mode, runs in by_mode.items():
            at[mode] = median_round(runs, "server_cpu_per_req_us", "client_cpu_per_req_us")
            commands = after[mode][0] - before[mode][0]
            trips = after[mode][1] - before[mode][1]
            at[mode]["redis_commands_per_round_trip"] = commands / trips if trips else 0.0
            at[mode]["redis_commands_per_request"] = commands / measured
            at[mode]["p99_over_p50"] = at[mode]["p99_ms"] / at[mode]["p50_ms"]
        base = at["no auth"]
        for mode in at:
            at[mode]["rps_ratio"] = at[mode]["rps"] / base["rps"]
            at[mode]["throughput_cost"] = 1.0 - at[mode]["rps_ratio"]
            at[mode]["server_cpu_ratio"] = at[mode]["server_cpu_per_req_us"] / base["server_cpu_per_req_us"]
        # Median of the per-round ratios: each pair ran back to back, so load from other processes on the
        # machine hits both alike, while it moves whole rounds up and down.
        for mode in PLAIN_MODES:
            pairs = list(zip(by_mode[mode], by_mode[mode + PLAIN], strict=True))
            at[mode]["rps_vs_plain"] = statistics.median(b["rps"] / p["rps"] for b, p in pairs)
            at[mode]["server_cpu_vs_plain"] = statistics.median(
                b["server_cpu_per_req_us"] / p["server_cpu_per_req_us"] for b, p in pairs)
        if baseline is not None:
            for mode in BASELINE_MODES:
                pairs = list(zip(by_mode[mode], by_mode[mode + BASELINE], strict=True))
                at[mode]["rps_vs_baseline"] = statistics.median(b["rps"] / p["rps"] for b, p in pairs)
                at[mode]["server_cpu_vs_baseline"] = statistics.median(
                    b["server_cpu_per_req_us"] / p["server_cpu_per_req_us"] for b, p in pairs)
        out[str(concurrency)] = at
    return out, {key: statistics.median(p[key] for p in parts) for key in parts[0]}


async def pipelining_stats(procs: dict[str, MinerProcess]) -> dict[str, tuple[int, int]]:
    """(Redis commands, round trips) each miner sent so far, from its ``/health``."""
    out = {}
    for mode, proc in procs.items():
        reader, writer = await asyncio.open_connection(proc.host, proc.port)
        writer.write(f"GET /health HTTP/1.1\r\nhost: {proc.host}\r\nconnection: close\r\n\r\n".encode())
        raw = await reader.read()
        writer.close()
        stats = json.loads(raw.split(b"\r\n\r\n", 1)[1])["redis_pipelining"]
        out[mode] = (stats["commands"], stats["round_trips"])
    return out


def plain_miner(root: Path, metagraph: Path, redis_url: str, env: dict[str, str]) -> MinerProcess:
    """The same miner app (same wallet, metagraph, Redis and mode) on plain uvicorn: the baseline."""
    port = free_port()
    spec = MinerSpec(overrides={
        "miner": {"tasks": ["arithmetic"], "port": port, "host": "127.0.0.1"},
        "wallet": {"name": "miner", "hotkey": "default", "path": str(root / "wallets")},
        "chain": {"metagraph_file": str(metagraph)},
        "redis_url": redis_url,
    })
    proc = MinerProcess(port=port, wallet_path=root / "wallets", wallet_name="miner", env={
        **env, "REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"bench{os.getpid()}", SPEC_ENV: spec.to_env(),
    })
    proc.args = [sys.executable, str(Path(__file__).resolve()), "--serve-plain", str(port)]
    return proc


def serve_plain(port: int) -> None:
    """Child process of :func:`plain_miner`: uvicorn as it comes, httptools parser, no limits."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(FACTORY, factory=True, host="127.0.0.1", port=port, http="httptools",
                                  log_config=None, access_log=False, log_level="info")).run()


class NoStore:
    """Accepts every nonce: both verifiers then do exactly their own work, not a store's."""

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return True


def time_calls(fn: Any, calls: int) -> float:
    """CPU seconds per call: on a shared machine wall time also counts the time other processes ran, and
    the end-to-end figures these are compared with are CPU time too."""
    started = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - started) / calls


def bench_verify() -> dict[str, Any]:
    receiver = Keypair.create_from_uri("//BenchMiner").ss58_address
    body = b'{"op":"add","a":123456,"b":654321}'
    out: dict[str, Any] = {}
    for scheme, crypto in (("sr25519", 1), ("ed25519", 0)):
        kp = Keypair.create_from_uri("//BenchValidator", crypto_type=crypto)
        now = time.time_ns()
        headers = btauth.sign(kp, method="POST", path=ROUTE, body=body, receiver_ss58=receiver, nonce_ns=now)
        store = NoStore()

        def ours(headers: dict[str, str] = headers, store: NoStore = store, now: int = now) -> None:
            btauth.verify(headers, body, method="POST", path=ROUTE, self_hotkey_ss58=receiver, nonce_store=store,
                          now_ns=now)

        def theirs(headers: dict[str, str] = headers, store: NoStore = store, now: int = now) -> None:
            bt_auth.verify(headers, body, method="POST", path=ROUTE, self_hotkey_ss58=receiver, nonce_store=store,
                           now_ns=now)

        ours()
        theirs()
        mine, bts, ratios = [], [], []
        for rep in range(VERIFY_REPS):
            # back to back, alternating which goes first: load from other processes on the machine hits
            # both sides of each pair alike, and the median of the pair ratios discards the outliers
            first, second = (ours, theirs) if rep % 2 == 0 else (theirs, ours)
            a, b = time_calls(first, VERIFY_CALLS), time_calls(second, VERIFY_CALLS)
            o, t = (a, b) if rep % 2 == 0 else (b, a)
            mine.append(o)
            bts.append(t)
            ratios.append(o / t)
        out[scheme] = {
            "ours_us": statistics.median(mine) * 1e6,
            "bittensor_us": statistics.median(bts) * 1e6,
            "ours_min_us": min(mine) * 1e6,
            "bittensor_min_us": min(bts) * 1e6,
            "ratio": statistics.median(ratios),
        }
    return out


class NullTransport(asyncio.Transport):
    """Takes whatever the protocol writes: the HTTP layer measured without sockets or a client."""

    _EXTRA = {"sockname": ("127.0.0.1", 8091), "peername": ("127.0.0.1", 40000)}

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._EXTRA.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def answer_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A handler that costs next to nothing: what is left is the protocol's own work."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"12")]})
    await send({"type": "http.response.body", "body": b'{"result":3}'})


async def protocol_pass(protocol_class: Any, config: Any, request: bytes, calls: int) -> float:
    """Seconds per request of one keep-alive connection: parse, ASGI cycle, answer, read deadline."""
    from uvicorn.server import ServerState

    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = NullTransport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for _ in range(calls):
        protocol.data_received(request)
        for task in list(state.tasks):
            await task
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / calls


async def bench_protocol() -> dict[str, float]:
    """The HTTP layer alone, plain uvicorn against the bounded protocol, on a signed request as a validator
    sends it: paired runs, alternating which goes first, median of the pair ratios (as for verify)."""
    import uvicorn

    from inference_subnet.serving import server_config
    from inference_subnet.settings import HttpSettings

    kp = Keypair.create_from_uri("//BenchValidator")
    body = b'{"op":"add","a":1,"b":2}'
    headers = btauth.sign(kp, method="POST", path=ROUTE, body=body,
                          receiver_ss58=Keypair.create_from_uri("//BenchMiner").ss58_address)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "content-type": "application/json"}.items())
    request = (f"POST {ROUTE} HTTP/1.1\r\nhost: 127.0.0.1:8091\r\ncontent-length: {len(body)}\r\n{head}\r\n"
               .encode() + body)
    plain = uvicorn.Config(answer_app, http="httptools", lifespan="off", log_config=None, access_log=False)
    bounded = server_config(answer_app, HttpSettings(), lifespan="off", log_config=None, access_log=False)
    for config in (plain, bounded):
        config.load()
    sides = {"plain": (plain.http_protocol_class, plain), "bounded": (bounded.http_protocol_class, bounded)}
    for cls, config in sides.values():
        await protocol_pass(cls, config, request, PROTOCOL_CALLS // 10)
    times: dict[str, list[float]] = {"plain": [], "bounded": []}
    ratios = []
    for rep in range(VERIFY_REPS):
        order = ("plain", "bounded") if rep % 2 == 0 else ("bounded", "plain")
        for side in order:
            cls, config = sides[side]
            times[side].append(await protocol_pass(cls, config, request, PROTOCOL_CALLS))
        ratios.append(times["bounded"][-1] / times["plain"][-1])
    return {
        "request_bytes": len(request),
        "plain_us": statistics.median(times["plain"]) * 1e6,
        "bounded_us": statistics.median(times["bounded"]) * 1e6,
        "plain_min_us": min(times["plain"]) * 1e6,
        "bounded_min_us": min(times["bounded"]) * 1e6,
        "ratio": statistics.median(ratios),
    }


async def per_call_us(fn: Any, calls: int, reps: int = 5) -> float:
    """CPU microseconds per call of the coroutine function ``fn``, best of ``reps``."""
    best = math.inf
    for _ in range(reps):
        cpu = time.process_time()
        for _ in range(calls):
            await fn()
        best = min(best, (time.process_time() - cpu) / calls)
    return best * 1e6


async def concurrent_us(step: Any, calls: int) -> float:
    """CPU microseconds per ``await step(i)`` over ``calls`` calls, CONCURRENCY callers at a time (the way
    a loaded miner's requests meet the coalescer)."""
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            await step(i)

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.process_time() - cpu) / calls * 1e6


async def breakdown(redis_url: str) -> dict[str, float]:
    """The parts of a verified request's extra server time, each alone, per call, in this process: the
    signature check, the nonce write (alone, and auto-pipelined at CONCURRENCY), the quota script, reading
    the headers as the app does, and the HTTP metrics middleware around an app that does nothing."""
    from prometheus_client import CollectorRegistry

    from inference_subnet.chain.types import Metagraph, Neuron
    from inference_subnet.miner.app import _request_target
    from inference_subnet.miner.nonces import RedisNonceStore
    from inference_subnet.miner.quota import MinerQuota
    from inference_subnet.store.coalescing import Coalescer
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import connect
    from inference_subnet.telemetry import HttpInstrumentation, HttpMetrics, exact_routes

    receiver = Keypair.create_from_uri("//BenchMiner").ss58_address
    kp = Keypair.create_from_uri("//BenchValidator")
    body = b'{"op":"add","a":1,"b":2}'
    now = time.time_ns()
    headers = btauth.sign(kp, method="POST", path=ROUTE, body=body, receiver_ss58=receiver, nonce_ns=now)
    raw = [(b"host", b"127.0.0.1:8091"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode(), v.encode()) for k, v in headers.items()),
           (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": ROUTE, "raw_path": ROUTE.encode(), "query_string": b"",
             "headers": raw}
    lowered = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
    auth_us = min(
        time_calls(lambda: btauth.authenticate(lowered, body, method="POST", path=ROUTE,
                                               self_hotkey_ss58=receiver, now_ns=now), VERIFY_CALLS)
        for _ in range(5)
    ) * 1e6
    headers_us = min(time_calls(lambda: ({k.decode("latin-1"): v.decode("latin-1") for k, v in raw},
                                         _request_target(scope)), VERIFY_CALLS * 10) for _ in range(5)) * 1e6

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"result":3}'})

    instrumented = HttpInstrumentation(app, metrics=HttpMetrics(CollectorRegistry(), "bench"),
                                       route_of=exact_routes([ROUTE]))
    bare_us = await per_call_us(lambda: app(scope, receive, send), VERIFY_CALLS * 10)
    metered_us = await per_call_us(lambda: instrumented(scope, receive, send), VERIFY_CALLS * 10)

    client = connect(redis_url)
    keys = Keys(subnet=f"bench{os.getpid()}", netuid=1, role="miner:bench")
    out = {"authenticate_us": auth_us, "headers_us": headers_us, "metrics_middleware_us": metered_us - bare_us}
    try:
        coalescer = Coalescer(client)
        stores = (("nonce_set_alone_us", RedisNonceStore(client, keys)),
                  ("nonce_set_pipelined_us", RedisNonceStore(client, keys, coalescer=coalescer)))
        now = time.time_ns()  # after the stores start: a nonce older than its store is refused
        for name, store in stores:
            async def check(i: int, store: RedisNonceStore = store, base: int = now) -> None:
                assert await store.check_and_store(kp.ss58_address, base + i)

            out[name] = await concurrent_us(check, BREAKDOWN_CALLS)
            now += BREAKDOWN_CALLS
        metagraph = Metagraph(netuid=1, block=1, neurons=(
            Neuron(uid=0, hotkey=kp.ss58_address, coldkey="c", stake=1000.0, validator_permit=True,
                   registration_block=1),))
        quota = MinerQuota(client, keys, capacities={"arithmetic": 10**9}, epoch_seconds=360.0, min_share=0.0,
                           coalescer=coalescer)

        async def consume(i: int) -> None:
            assert (await quota.consume(metagraph, kp.ss58_address, "arithmetic")).allowed

        out["quota_pipelined_us"] = await concurrent_us(consume, BREAKDOWN_CALLS)
    finally:
        await client.aclose()
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter rounds (2000 requests x 3 rounds, 5 verify runs)")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="also serve the no auth, auth and auth+quota modes with the package in TREE "
                             "(a checkout of another branch, e.g. main), interleaved with this one")
    parser.add_argument("--serve-plain", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    global REQUESTS, ROUNDS, WARMUP, VERIFY_REPS
    args = parse_args()
    if args.serve_plain is not None:
        serve_plain(args.serve_plain)
        return
    if args.quick:
        REQUESTS, ROUNDS, WARMUP, VERIFY_REPS = 2000, 3, 200, 5
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None and not (baseline / "inference_subnet" / "__init__.py").is_file():
        sys.exit(f"--baseline: {baseline} holds no inference_subnet package")
    console = Console(width=None if sys.stdout.isatty() else 160)
    redis_url = resolve_url(os.environ.get("REDIS_URL"))
    with tempfile.TemporaryDirectory() as tmp:
        e2e, parts = uvloop.run(run_end_to_end(Path(tmp), redis_url, baseline))
    verify = bench_verify()
    protocol = uvloop.run(bench_protocol())

    for concurrency, at in e2e.items():
        table = Table(title=f"miner path: {REQUESTS} requests x {ROUNDS} rounds, {concurrency} in flight, "
                            f"1 uvicorn worker (median round)")
        for col in ("mode", "server", "req/s", "vs no auth", "vs twin", "p50 ms", "p99 ms", "p99/p50",
                    "server CPU us/req", "CPU vs no auth", "CPU vs twin", "Redis cmds/req", "cmds/round trip",
                    "errors"):
            table.add_column(col, justify="right")
        for mode, r in at.items():
            server = ("plain uvicorn" if mode.endswith(PLAIN) else "baseline tree" if mode.endswith(BASELINE)
                      else "bounded")
            twin_rps = r.get("rps_vs_baseline", r.get("rps_vs_plain"))
            twin_cpu = r.get("server_cpu_vs_baseline", r.get("server_cpu_vs_plain"))
            table.add_row(mode.removesuffix(PLAIN).removesuffix(BASELINE), server, f"{r['rps']:.0f}",
                          f"{r['rps_ratio']:.3f}", "" if twin_rps is None else f"{twin_rps:.3f}",
                          f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['p99_over_p50']:.2f}",
                          f"{r['server_cpu_per_req_us']:.0f}", f"{r['server_cpu_ratio']:.3f}",
                          "" if twin_cpu is None else f"{twin_cpu:.3f}", f"{r['redis_commands_per_request']:.2f}",
                          f"{r['redis_commands_per_round_trip']:.1f}", str(r["errors"]))
        console.print(table)
    console.print("vs twin: this tree against the baseline tree (--baseline) for bounded rows, against plain "
                  "uvicorn for the plain pairs' bounded rows when no baseline is given (median of paired rounds)")
    vt = Table(title=f"btauth verify, {VERIFY_REPS} paired runs of {VERIFY_CALLS} calls (median; min)")
    for col in ("scheme", "ours us/call", "bittensor 11.3.0 us/call", "ours / bittensor"):
        vt.add_column(col, justify="right")
    for scheme, r in verify.items():
        vt.add_row(scheme, f"{r['ours_us']:.1f} ({r['ours_min_us']:.1f})",
                   f"{r['bittensor_us']:.1f} ({r['bittensor_min_us']:.1f})", f"{r['ratio']:.3f}")
    console.print(vt)
    pt = Table(title=f"the HTTP layer alone: one keep-alive connection, a signed {protocol['request_bytes']}-byte "
                     f"request, {VERIFY_REPS} paired runs of {PROTOCOL_CALLS} (median; min)")
    for col in ("plain uvicorn (httptools) us/req", "bounded us/req", "bounded / plain"):
        pt.add_column(col, justify="right")
    pt.add_row(f"{protocol['plain_us']:.1f} ({protocol['plain_min_us']:.1f})",
               f"{protocol['bounded_us']:.1f} ({protocol['bounded_min_us']:.1f})", f"{protocol['ratio']:.3f}")
    console.print(pt)

    verify_nonce = parts["authenticate_us"] + parts["nonce_set_pipelined_us"]
    explained: dict[str, Any] = {}
    for concurrency, at in e2e.items():
        base_cpu = at["no auth"]["server_cpu_per_req_us"]
        extra = at["auth"]["server_cpu_per_req_us"] - base_cpu
        extra_quota = at["auth+quota"]["server_cpu_per_req_us"] - base_cpu
        explained[concurrency] = {
            "auth_extra_cpu_us": extra,
            "auth_extra_over_verify_and_nonce": extra / verify_nonce,
            "auth_quota_extra_cpu_us": extra_quota,
            "auth_quota_extra_over_parts": extra_quota / (verify_nonce + parts["quota_pipelined_us"]),
        }
    bt = Table(title="where auth time goes: the parts alone (this process, CPU us per call, median of one "
                     "measure per round) against the extra server CPU of an authenticated request (end to end)")
    bt.add_column("part", justify="left")
    bt.add_column("us/call", justify="right")
    bt.add_row("btauth.authenticate (headers, freshness, sha256, sr25519 verify)", f"{parts['authenticate_us']:.1f}")
    bt.add_row(f"nonce check, alone, one round trip each ({CONCURRENCY} concurrent)",
               f"{parts['nonce_set_alone_us']:.1f}")
    bt.add_row(f"nonce check, auto-pipelined ({CONCURRENCY} concurrent)", f"{parts['nonce_set_pipelined_us']:.1f}")
    bt.add_row(f"quota script, auto-pipelined ({CONCURRENCY} concurrent)", f"{parts['quota_pipelined_us']:.1f}")
    bt.add_row("reading the request's headers as the app does (every mode)", f"{parts['headers_us']:.1f}")
    bt.add_row("HTTP metrics middleware (every mode)", f"{parts['metrics_middleware_us']:.1f}")
    bt.add_row("verify + pipelined nonce check", f"{verify_nonce:.1f}")
    for concurrency, x in explained.items():
        bt.add_row(f"{concurrency} in flight: extra server CPU of auth over no auth",
                   f"{x['auth_extra_cpu_us']:.1f}")
        bt.add_row(f"{concurrency} in flight: extra / (verify + nonce)  [target <= 1.3]",
                   f"{x['auth_extra_over_verify_and_nonce']:.2f}")
        bt.add_row(f"{concurrency} in flight: auth+quota extra / (verify + nonce + quota)",
                   f"{x['auth_quota_extra_over_parts']:.2f}")
    console.print(bt)

    top = str(max(LOADS))
    auth_cost = e2e[top]["auth"]["throughput_cost"]
    limits_cost = {mode: 1.0 - e2e[top][mode]["rps_vs_plain"] for mode in PLAIN_MODES}
    protocol_cost = protocol["ratio"] - 1.0
    tails = {mode: e2e[top][mode]["p99_over_p50"] for mode in ("auth", "auth+quota")}
    ratio = explained[top]["auth_extra_over_verify_and_nonce"]
    targets: dict[str, Any] = {
        "auth_throughput_cost": auth_cost,
        "auth_under_25pct": auth_cost < 0.25,
        "verify_no_slower": all(r["ratio"] <= 1.0 for r in verify.values()),
        "bounded_server_throughput_cost": limits_cost,
        "bounded_protocol_cost": protocol_cost,
        "bounded_protocol_under_5pct": protocol_cost < 0.05,
        "auth_extra_over_verify_and_nonce": ratio,
        "auth_extra_within_1_3x": ratio <= 1.3,
        "p99_over_p50_at_max_load": tails,
        "p99_within_2_5x_p50": all(t <= 2.5 for t in tails.values()),
    }
    if baseline is not None:
        targets["auth_quota_rps_vs_baseline"] = e2e[top]["auth+quota"]["rps_vs_baseline"]
        targets["auth_quota_rps_no_lower"] = e2e[top]["auth+quota"]["rps_vs_baseline"] >= 1.0

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    console.print(f"at {top} in flight: auth costs {auth_cost:.1%} of unauthenticated throughput (target < 25%): "
                  f"{verdict(targets['auth_under_25pct'])}; extra CPU of auth / (verify + nonce) = {ratio:.2f} "
                  f"(target <= 1.3): {verdict(targets['auth_extra_within_1_3x'])}; p99/p50 "
                  + ", ".join(f"{m} {t:.2f}" for m, t in tails.items())
                  + f" (target <= 2.5): {verdict(targets['p99_within_2_5x_p50'])}")
    if baseline is not None:
        console.print(f"auth+quota req/s against the baseline tree ({baseline}), median of paired rounds: "
                      f"{targets['auth_quota_rps_vs_baseline']:.3f} (target >= 1): "
                      f"{verdict(targets['auth_quota_rps_no_lower'])}")
    console.print(f"our verify no slower than bittensor's: {verdict(targets['verify_no_slower'])}; "
                  f"the bounded HTTP layer costs {protocol_cost:+.1%} per request against plain uvicorn's "
                  f"(target < 5%): {verdict(targets['bounded_protocol_under_5pct'])}; end to end "
                  + ", ".join(f"{m} {-c:+.1%}" for m, c in limits_cost.items()) + " throughput")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "miner_path",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "redis": redact(redis_url),
        "settings": {"quick": args.quick, "requests": REQUESTS, "rounds": ROUNDS, "loads": list(LOADS),
                     "part_concurrency": CONCURRENCY, "warmup": WARMUP, "max_seconds": MAX_SECONDS,
                     "verify_calls": VERIFY_CALLS, "verify_reps": VERIFY_REPS,
                     "baseline": str(baseline) if baseline else None},
        "end_to_end": e2e,
        "verify": verify,
        "protocol": protocol,
        "breakdown": parts,
        "explained": explained,
        "targets": targets,
    }, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
