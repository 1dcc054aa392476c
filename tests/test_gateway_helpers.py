"""Fixtures and helpers shared by the gateway and SQL store tests (imported by them; no tests here).

Databases: a fresh SQLite file per test, and, when ``DATABASE_URL`` is a Postgres URL (CI's second run), a
fresh Postgres database per session created next to the one named, dropped at the end, so migrations can
be tested up and down without touching anyone else's tables.

A local subnet: wallets, a metagraph file naming them, and real miner processes (``inference-subnet miner``).
``CountingTask`` is a streaming task that miner processes load as ``test_gateway_helpers:CountingTask``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.engine import make_url

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.localnet.ports import free_port
from inference_subnet.protocol.task import Handler, Task
from inference_subnet.store.sql import Database
from inference_subnet.validator.managing import Sample, ScoreBook


def postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgresql") else None


def backends() -> list[str]:
    return ["sqlite", "postgres"] if postgres_url() else ["sqlite"]


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def postgres_database() -> AsyncIterator[str | None]:
    """A fresh database on the server of ``DATABASE_URL`` (``None`` when it is not Postgres)."""
    base = postgres_url()
    if base is None:
        yield None
        return
    name = f"isn_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_asyncpg_dsn(base))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(base))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"


async def fresh_database(url: str) -> Database:
    """A migrated database with empty tables (Postgres databases are shared by a session's tests)."""
    db = Database(url)
    await db.upgrade()
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM isn_request_log"))
        await conn.execute(text("DELETE FROM isn_api_keys"))
    return db


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``predicate`` holds, checking often, failing after ``timeout`` (for state with no event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


# -- a streaming task for the tests (loaded by miner processes as ``test_gateway_helpers:CountingTask``) --

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


class CountRequest(BaseModel):
    n: int = Field(ge=1, le=50)
    gate: str | None = Field(None, max_length=200, description="Redis key to wait for after the first chunk.")


class CountChunk(BaseModel):
    i: int


class CountResponse(BaseModel):
    values: list[int]


class CountingTask(Task[CountRequest, CountResponse]):
    """Streams 0..n-1. With ``gate`` the miner sends the first chunk, then waits until that Redis key
    exists: a test can prove a chunk reached the client while the miner was still streaming."""

    name = "counting"
    Request = CountRequest
    Response = CountResponse
    Chunk = CountChunk
    streaming = True
    timeout = 20.0
    capacity_hint = 10_000
    default_handler = "test_gateway_helpers:make_counting_handler"

    def synthesize(self, rng: random.Random) -> CountRequest:
        return CountRequest(n=rng.randint(1, 5))

    def score(
        self, request: CountRequest, responses: Sequence[CountResponse | None], timings: Sequence[float]
    ) -> list[float]:
        return [1.0 if r is not None and r.values == list(range(request.n)) else 0.0 for r in responses]

    def assemble(self, chunks: Sequence[BaseModel]) -> CountResponse:
        return CountResponse(values=[c.i for c in chunks])  # type: ignore[attr-defined]


GATES_ENV = "ISN_TEST_GATES"
"""Gates are honoured only by miners started with this set (a fuzzer would otherwise park streams)."""


def make_counting_handler(options: dict[str, Any]) -> Handler:
    """``slow``: never sends a first chunk; ``flaky``: breaks after two chunks; else honest."""
    behaviour = options.get("behaviour", "honest")

    async def handle(request: CountRequest) -> Any:
        from inference_subnet.store.redis import connect

        if behaviour == "slow":
            await asyncio.sleep(3600)
        for i in range(request.n):
            if behaviour == "flaky" and i == 2:
                raise RuntimeError("flaky miner broke its stream")
            yield CountChunk(i=i)
            if i == 0 and request.gate and os.environ.get(GATES_ENV) == "1":
                client = connect(os.environ.get("REDIS_URL"))
                try:
                    while not await client.exists(request.gate):
                        await asyncio.sleep(0.01)
                finally:
                    await client.aclose()

    return handle


# -- a local subnet: wallets, a metagraph file, real miner processes -----------------------------------


@dataclass
class MinerProcess:
    uid: int
    hotkey: str
    port: int
    behaviour: str
    tasks: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalSubnet:
    """A validator hotkey and miner hotkeys, a metagraph file naming them, and miner processes."""

    root: Path
    redis_url: str
    validator: Any = None
    miners: list[MinerProcess] = field(default_factory=list)
    netuid: int = 1

    @property
    def wallet_path(self) -> Path:
        return self.root / "wallets"

    @property
    def metagraph_file(self) -> Path:
        return self.root / "metagraph.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(
            REDIS_URL=self.redis_url,
            PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")]),
            ISN_LOG_LEVEL="WARNING",
        )
        env.update(extra)
        return env

    def setup(self, behaviours: Sequence[str], tasks: Sequence[str] = ("arithmetic",)) -> None:
        _, self.validator = create_wallet(self.wallet_path, "validator", "default")
        for i, behaviour in enumerate(behaviours, start=1):
            _, hot = create_wallet(self.wallet_path, f"miner{i}", "default")
            self.miners.append(MinerProcess(i, hot.ss58_address, free_port(), behaviour, tuple(tasks)))
        self.metagraph_file.write_text(self.metagraph().to_json())

    def metagraph(self) -> Metagraph:
        neurons = [
            Neuron(
                uid=0,
                hotkey=self.validator.ss58_address,
                coldkey=self.validator.ss58_address,
                stake=1000.0,
                validator_permit=True,
                registration_block=1,
            )
        ]
        for m in self.miners:
            neurons.append(
                Neuron(
                    uid=m.uid,
                    hotkey=m.hotkey,
                    coldkey=m.hotkey,
                    stake=0.0,
                    validator_permit=False,
                    registration_block=1 + m.uid,
                    axon=AxonInfo(ip="127.0.0.1", port=m.port),
                )
            )
        return Metagraph(netuid=self.netuid, block=100, neurons=tuple(neurons))

    def start_miners(self, **env: str) -> None:
        for m in self.miners:
            args = [
                sys.executable,
                "-m",
                "inference_subnet.cli.main",
                "miner",
                "--port",
                str(m.port),
                "--host",
                "127.0.0.1",
                "--behaviour",
                m.behaviour,
                "--metagraph-file",
                str(self.metagraph_file),
                "--wallet-path",
                str(self.wallet_path),
                "--wallet-name",
                f"miner{m.uid}",
                "--wallet-hotkey",
                "default",
            ]
            for task in m.tasks:
                args += ["--task", task]
            with open(self.root / f"miner{m.uid}.log", "ab") as log:  # a file: a full pipe would block it
                m.process = subprocess.Popen(
                    args, env=self.env(**env), cwd=self.root, stdout=log, stderr=subprocess.STDOUT
                )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every miner answers /health (processes cannot signal readiness otherwise)."""
        async with httpx.AsyncClient(timeout=1.0) as client:
            for m in self.miners:

                async def up(m: MinerProcess = m) -> bool:
                    assert m.process is not None
                    if m.process.poll() is not None:
                        output = (self.root / f"miner{m.uid}.log").read_text()[-2000:]
                        raise AssertionError(f"miner {m.uid} exited: {output}")
                    try:
                        return (await client.get(m.url + "/health")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await wait_for(up, timeout)

    def kill(self, uid: int) -> None:
        m = next(m for m in self.miners if m.uid == uid)
        assert m.process is not None
        m.process.send_signal(signal.SIGKILL)
        m.process.wait(10)

    def stop(self) -> None:
        for m in self.miners:
            if m.process is not None and m.process.poll() is None:
                m.process.terminate()
        for m in self.miners:
            if m.process is not None:
                try:
                    m.process.wait(10)
                except subprocess.TimeoutExpired:
                    m.process.kill()
                    m.process.wait(5)

    def start_gateway(self, port: int, tasks: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        """``inference-subnet gateway run`` as the validator of this subnet; its output goes to a file."""
        args = [
            sys.executable,
            "-m",
            "inference_subnet.cli.main",
            "gateway",
            "run",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--metagraph-file",
            str(self.metagraph_file),
            "--wallet-path",
            str(self.wallet_path),
            "--wallet-name",
            "validator",
            "--wallet-hotkey",
            "default",
        ]
        for task in tasks:
            args += ["--task", task]
        with open(self.root / f"gateway{port}.log", "ab") as log:
            return subprocess.Popen(
                args,
                env=self.env(ISN_CHAIN__NETUID=str(self.netuid), **env),
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def process_output(self, port: int) -> str:
        return (self.root / f"gateway{port}.log").read_text()[-3000:]


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], describe: Callable[[], str], timeout: float = 30.0
) -> None:
    """Until ``url`` answers (a process cannot signal readiness otherwise); fails early if it exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"process exited with {process.returncode}: {describe()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up within {timeout}s: {describe()}")
            time.sleep(0.05)


class InProcessServer(uvicorn.Server):
    """uvicorn inside the test's event loop, without taking over the process's signal handlers."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_in_process(app: Any, port: int) -> tuple[InProcessServer, asyncio.Task[None]]:
    server = InProcessServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), 20.0)
    if task.done():
        task.result()
        raise AssertionError("server stopped during start-up")
    return server, task


async def stop_in_process(server: InProcessServer, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 30.0)


def ndjson(lines: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines.splitlines() if line.strip()]


async def seed_evidence(
    book: ScoreBook, identities: Sequence[str], tasks: Sequence[str], *, quality: float = 1.0, n: int = 5
) -> None:
    """Synthetic samples the validator would have gathered before sending users to these miners (organic
    routing needs ``organic_min_evidence`` of them, of recent quality above the bar)."""
    now = time.time()
    for identity in identities:
        for task in tasks:
            for j in range(n):
                sample = Sample(score=quality, kind="synthetic", latency=0.01, ok=True, ts=now)
                await book.record(identity, task, sample, f"seed-{uuid.uuid4().hex}-{j}")
