"""MinerClient against a malicious miner on 127.0.0.1: answers far past every cap must cost the validator a
few megabytes and end the call as ``invalid`` (or an HTTP error with a short reason), within the task's
deadline, with the connection closed rather than handed back to the pool.

The miner is a raw asyncio HTTP/1.1 server (it ignores btauth): it picks its answer from the request's
``mode`` and writes hostile bodies chunk by chunk from one reused buffer, so the test process only holds
what the client under test keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bittensor_wallet import Keypair
from pydantic import BaseModel

from inference_subnet.chain.types import AxonInfo, Neuron
from inference_subnet.protocol.task import Task
from inference_subnet.settings import ValidatorSettings
from inference_subnet.validator.client import (
    MAX_CAPACITY_BYTES,
    AnswerRefused,
    LineSplitter,
    MinerClient,
    StreamError,
)

VALIDATOR = Keypair.create_from_uri("//HostileTestValidator")
MINER = Keypair.create_from_uri("//HostileTestMiner")
LIMITS = ValidatorSettings()
MB = 1 << 20
PIECE = b"x" * 65_536
"""The one buffer every hostile body is written from."""
FLOOD_SECONDS = 15.0
"""A hostile writer stops by itself after this long (the client should have hung up long before)."""


# -- the tasks the miner answers ----------------------------------------------------------------------


class Ask(BaseModel):
    mode: str


class Answer(BaseModel):
    text: str


class Piece(BaseModel):
    text: str


class BlobTask(Task[Ask, Answer]):
    name = "blob"
    Request = Ask
    Response = Answer
    timeout = 5.0

    def synthesize(self, rng: random.Random) -> Ask:
        return Ask(mode="honest")

    def score(self, request: Any, responses: Sequence[Any], timings: Sequence[float]) -> list[float]:
        return [1.0 if r is not None else 0.0 for r in responses]


class FloodTask(BlobTask):
    name = "flood"
    streaming = True
    Chunk = Piece

    def assemble(self, chunks: Sequence[BaseModel]) -> Answer:
        return Answer(text="".join(Piece.model_validate(c).text for c in chunks))


BLOB = BlobTask()
FLOOD = FloodTask()
DEADLINE = BLOB.timeout + 0.5
"""The client's deadline for one call: the task's timeout plus the default grace."""


# -- the malicious miner ------------------------------------------------------------------------------


Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


async def _fixed(writer: asyncio.StreamWriter, body: bytes, status: int = 200) -> None:
    writer.write(_head(status, {"content-type": "application/json", "content-length": str(len(body))}) + body)
    await writer.drain()


async def _flood(writer: asyncio.StreamWriter, total: int, *, chunked: bool, prefix: bytes = b"",
                 piece: bytes = PIECE) -> None:
    """``prefix`` then ``piece`` over and over up to ``total`` bytes (or ``FLOOD_SECONDS``), as chunked
    transfer coding or raw bytes; ends quietly when the client hangs up."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + FLOOD_SECONDS
    sent = 0
    data = prefix
    while sent < total and loop.time() < stop:
        if data:
            writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await writer.drain()
            sent += len(data)
        data = piece


def _chunked_head(status: int = 200, **extra: str) -> bytes:
    return _head(status, {"content-type": "application/x-ndjson", "transfer-encoding": "chunked", **extra})


async def _honest(writer: asyncio.StreamWriter) -> None:
    await _fixed(writer, b'{"text":"ok"}')


async def _honest_stream(writer: asyncio.StreamWriter) -> None:
    lines = b"".join(b'{"text":"%b"}\n' % w for w in (b"a", b"b", b"c"))
    writer.write(_chunked_head() + b"%x\r\n%b\r\n0\r\n\r\n" % (len(lines), lines))
    await writer.drain()


async def _declared_huge(writer: asyncio.StreamWriter) -> None:
    writer.write(_head(200, {"content-type": "application/json", "content-length": str(200 * MB)}))
    await _flood(writer, 200 * MB, chunked=False, prefix=b'{"text":"')


async def _chunked_huge(writer: asyncio.StreamWriter) -> None:
    writer.write(_chunked_head())
    await _flood(writer, 200 * MB, chunked=True, prefix=b'{"text":"')


async def _lying_length(writer: asyncio.StreamWriter) -> None:
    """Declares 16 bytes, then keeps sending: the rest must never be read as the next answer."""
    writer.write(_head(200, {"content-type": "application/json", "content-length": "16"}))
    await _flood(writer, 200 * MB, chunked=False)


async def _error_flood(writer: asyncio.StreamWriter) -> None:
    writer.write(_chunked_head(500))
    await _flood(writer, 50 * MB, chunked=True, prefix=b'{"error":"internal","reason":"')


async def _endless_line(writer: asyncio.StreamWriter) -> None:
    writer.write(_chunked_head())
    await _flood(writer, 200 * MB, chunked=True, prefix=b'{"text":"')


LINE = b'{"text":"' + b"y" * 4000 + b'"}\n'


async def _endless_lines(writer: asyncio.StreamWriter) -> None:
    """Valid small lines without end: only the whole-stream cap stops them."""
    writer.write(_chunked_head())
    await _flood(writer, 200 * MB, chunked=True, piece=LINE * 16)


LONG_LINE = b'{"text":"' + b"z" * (LIMITS.max_stream_line_bytes - 12) + b'"}'
assert len(LONG_LINE) == LIMITS.max_stream_line_bytes - 1


async def _long_line(writer: asyncio.StreamWriter) -> None:
    """One line a byte under the line cap, cut into uneven chunks: an honest, if wordy, answer."""
    writer.write(_chunked_head())
    body = LONG_LINE + b"\n"
    for start in range(0, len(body), 50_000):
        part = body[start:start + 50_000]
        writer.write(b"%x\r\n%b\r\n" % (len(part), part))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


BOMB = gzip.compress(b"\0" * (64 * MB), compresslevel=9)
"""64 MiB of zeros in about 64 KB: an answer encoded although no encoding was asked for."""


async def _gzip_bomb(writer: asyncio.StreamWriter) -> None:
    writer.write(_head(200, {"content-type": "application/json", "content-encoding": "gzip",
                             "content-length": str(len(BOMB))}) + BOMB)
    await writer.drain()


async def _capacity_flood(writer: asyncio.StreamWriter) -> None:
    writer.write(_chunked_head())
    await _flood(writer, 200 * MB, chunked=True, prefix=b'{"hotkey":"')


MODES: dict[str, Writer] = {
    "honest": _honest,
    "honest_stream": _honest_stream,
    "declared_huge": _declared_huge,
    "chunked_huge": _chunked_huge,
    "lying_length": _lying_length,
    "error_flood": _error_flood,
    "endless_line": _endless_line,
    "endless_lines": _endless_lines,
    "long_line": _long_line,
    "gzip_bomb": _gzip_bomb,
}


@dataclass
class HostileMiner:
    """The server's record: which connection served which request, and which connections ended."""

    port: int = 0
    served: list[tuple[int, str]] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _next_id: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self._next_id = self._next_id + 1
        me = asyncio.current_task()
        assert me is not None
        self.handlers.add(me)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if request_line.startswith("GET /capacity"):
                    mode = "capacity_flood"
                    self.served.append((conn, mode))
                    await _capacity_flood(writer)
                    continue
                mode = json.loads(body)["mode"]
                self.served.append((conn, mode))
                await MODES[mode](writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up: what every attack here should end with
        except asyncio.CancelledError:
            pass  # the fixture's teardown: end quietly, the server is going away
        finally:
            self.closed.add(conn)
            self.handlers.discard(me)
            writer.close()

    def connection_of_last(self, mode: str) -> int:
        return next(conn for conn, m in reversed(self.served) if m == mode)

    async def wait_closed(self, conn: int) -> bool:
        """Whether connection ``conn`` ended (the client closed it) within a generous bound."""
        for _ in range(200):
            if conn in self.closed:
                return True
            await asyncio.sleep(0.025)
        return conn in self.closed


@pytest.fixture(scope="module")
async def miner() -> AsyncIterator[HostileMiner]:
    state = HostileMiner()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()
        for handler in list(state.handlers):  # writers still blocked on a client that never read
            handler.cancel()
        await asyncio.gather(*state.handlers, return_exceptions=True)


@pytest.fixture
async def client() -> AsyncIterator[MinerClient]:
    async with MinerClient(VALIDATOR, ip_override="127.0.0.1", max_connections=16) as c:
        yield c


def neuron_of(miner: HostileMiner) -> Neuron:
    return Neuron(uid=7, hotkey=MINER.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                  registration_block=7, axon=AxonInfo(ip="10.0.0.9", port=miner.port))


async def streamed(client: MinerClient, neuron: Neuron, mode: str) -> list[str]:
    return [c.text async for c in client.stream(FLOOD, neuron, Ask(mode=mode), first_byte_timeout=3.0,
                                                timeout=FLOOD.timeout)]


async def stream_error(client: MinerClient, neuron: Neuron, mode: str) -> StreamError:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(StreamError) as err:
        await streamed(client, neuron, mode)
    assert loop.time() - start < DEADLINE
    return err.value


def memory_mb(name: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {name} in /proc/self/status")


def reset_peak() -> None:
    """Start ``VmHWM`` over from the current RSS (Linux ``clear_refs`` 5), so the peak measured is the
    attack's own; without it the peak bound still holds, just against an older peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# -- honest answers still work ------------------------------------------------------------------------


async def test_honest_answers_reuse_one_connection(client: MinerClient, miner: HostileMiner) -> None:
    neuron = neuron_of(miner)
    first = await client.call(BLOB, neuron, Ask(mode="honest"))
    second = await client.call(BLOB, neuron, Ask(mode="honest"))
    assert (first.outcome, first.response) == ("ok", Answer(text="ok"))
    assert second.outcome == "ok"
    assert await streamed(client, neuron, "honest_stream") == ["a", "b", "c"]
    conns = [conn for conn, _ in miner.served[-3:]]
    assert len(set(conns)) == 1, "a finished answer hands its connection back to the pool"
    whole = await client.call(FLOOD, neuron, Ask(mode="honest_stream"))
    assert (whole.outcome, whole.response) == ("ok", Answer(text="abc"))


async def test_a_line_just_under_the_cap_is_accepted(client: MinerClient, miner: HostileMiner) -> None:
    neuron = neuron_of(miner)
    assert await streamed(client, neuron, "long_line") == [json.loads(LONG_LINE)["text"]]
    whole = await client.call(FLOOD, neuron, Ask(mode="long_line"))
    assert whole.outcome == "ok" and len(whole.response.text) == len(LONG_LINE) - 11


# -- each attack: its outcome, within the deadline, and the connection is discarded --------------------


CALL_ATTACKS = {
    "declared_huge": "declared",
    "chunked_huge": "cap of",
    "lying_length": "invalid response",
    "gzip_bomb": "content-encoding",
}


@pytest.mark.parametrize("mode", list(CALL_ATTACKS))
async def test_oversized_answer_is_invalid_and_its_connection_discarded(
    client: MinerClient, miner: HostileMiner, mode: str
) -> None:
    neuron = neuron_of(miner)
    assert (await client.call(BLOB, neuron, Ask(mode="honest"))).ok  # an idle pooled connection...
    result = await client.call(BLOB, neuron, Ask(mode=mode))  # ...which the attack is served on
    # Bytes past a declared length arrive with the head: the whole answer is then no HTTP message at all.
    assert (result.ok, result.outcome, result.status) == (False, "invalid", None if mode == "lying_length" else 200)
    assert CALL_ATTACKS[mode] in result.error and len(result.error) <= 300
    assert result.latency < DEADLINE
    attacked = miner.connection_of_last(mode)
    after = await client.call(BLOB, neuron, Ask(mode="honest"))
    assert (after.outcome, after.response) == ("ok", Answer(text="ok"))
    if mode == "gzip_bomb":
        return  # a whole message, read to its declared end: its connection is clean HTTP and may be reused
    assert miner.connection_of_last("honest") != attacked, "the attacked connection went back to the pool"
    assert await miner.wait_closed(attacked)


async def test_error_flood_is_an_http_error_with_a_short_reason(
    client: MinerClient, miner: HostileMiner
) -> None:
    neuron = neuron_of(miner)
    result = await client.call(BLOB, neuron, Ask(mode="error_flood"))
    assert (result.ok, result.outcome, result.status) == (False, "http_error", 500)
    assert result.error.startswith("HTTP 500: ") and len(result.error) < 300
    assert result.latency < DEADLINE
    assert await miner.wait_closed(miner.connection_of_last("error_flood"))
    with pytest.raises(StreamError) as err:
        await streamed(client, neuron, "error_flood")
    assert (err.value.outcome, err.value.status) == ("http_error", 500) and len(str(err.value)) < 300
    assert (await client.call(BLOB, neuron, Ask(mode="honest"))).ok


@pytest.mark.parametrize(
    ("mode", "why"), [("endless_line", "line passed"), ("endless_lines", "stream passed")]
)
async def test_endless_stream_is_invalid(
    client: MinerClient, miner: HostileMiner, mode: str, why: str
) -> None:
    neuron = neuron_of(miner)
    error = await stream_error(client, neuron, mode)
    assert (error.outcome, error.status) == ("invalid", 200) and why in str(error)
    assert await miner.wait_closed(miner.connection_of_last(mode))
    # The same answer read whole (synthetic rounds on a streaming task) meets the whole-answer cap.
    whole = await client.call(FLOOD, neuron, Ask(mode=mode))
    assert (whole.outcome, whole.status) == ("invalid", 200) and whole.latency < DEADLINE
    assert await streamed(client, neuron, "honest_stream") == ["a", "b", "c"]


async def test_capacity_flood_is_no_answer(client: MinerClient, miner: HostileMiner) -> None:
    neuron = neuron_of(miner)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await client.capacity(neuron) is None
    assert loop.time() - start < 5.0
    assert await miner.wait_closed(miner.connection_of_last("capacity_flood"))
    assert MAX_CAPACITY_BYTES <= 65_536


# -- memory: the flood, many times over ----------------------------------------------------------------


async def attack_once(client: MinerClient, neuron: Neuron) -> list[str]:
    """Every attack, 4 at a time each; the outcomes seen."""
    outcomes: list[str] = []

    async def call(mode: str) -> None:
        outcomes.append((await client.call(BLOB, neuron, Ask(mode=mode))).outcome)

    async def stream(mode: str) -> None:
        try:
            await streamed(client, neuron, mode)
            outcomes.append("ok")
        except StreamError as exc:
            outcomes.append(exc.outcome)

    for mode in ("declared_huge", "chunked_huge", "lying_length", "error_flood", "gzip_bomb"):
        await asyncio.gather(*(call(mode) for _ in range(4)))
    for mode in ("endless_line", "endless_lines"):
        await asyncio.gather(*(stream(mode) for _ in range(4)))
    return outcomes


async def test_memory_stays_bounded_under_repeated_floods(client: MinerClient, miner: HostileMiner) -> None:
    """4 concurrent calls of each attack, 3 rounds (each round offers the client ~2.5 GB): the process's
    resident memory, now and at its peak, grows by less than 64 MiB."""
    neuron = neuron_of(miner)
    await attack_once(client, neuron)  # warm-up: first-use allocations are not the attack's
    before = memory_mb("VmRSS")
    reset_peak()
    peak_before = memory_mb("VmHWM")
    for _ in range(3):
        outcomes = await attack_once(client, neuron)
        assert outcomes == ["invalid"] * 12 + ["http_error"] * 4 + ["invalid"] * 12
    grown, peak_grown = memory_mb("VmRSS") - before, memory_mb("VmHWM") - peak_before
    print(f"RSS growth over 3 flood rounds: {grown:.1f} MiB (peak {peak_grown:.1f} MiB)")
    assert grown < 64 and peak_grown < 64
    assert (await client.call(BLOB, neuron, Ask(mode="honest"))).ok


# -- the pieces on their own ---------------------------------------------------------------------------


def test_line_splitter_holds_one_line_at_most() -> None:
    splitter = LineSplitter(max_line=8, max_total=64)
    assert splitter.feed(b'{"a"') == []
    assert splitter.feed(b':1}\n{"b":2}\r\n\n{"c"') == [b'{"a":1}', b'{"b":2}\r', b""]
    assert splitter.end() == [b'{"c"']
    with pytest.raises(AnswerRefused, match="line"):
        LineSplitter(max_line=8, max_total=64).feed(b"123456789")
    with pytest.raises(AnswerRefused, match="line"):
        LineSplitter(max_line=8, max_total=64).feed(b"123456789\n")
    assert LineSplitter(max_line=8, max_total=64).feed(b"12345678\n") == [b"12345678"]
    total = LineSplitter(max_line=8, max_total=20)
    assert len(total.feed(b"1234\n" * 4)) == 4
    with pytest.raises(AnswerRefused, match="stream"):
        total.feed(b"1\n")


def test_caps_default_to_the_settings() -> None:
    client = MinerClient(VALIDATOR)
    assert (client.max_response_bytes, client.max_stream_line_bytes, client.max_error_body_bytes) == (
        LIMITS.max_response_bytes, LIMITS.max_stream_line_bytes, LIMITS.max_error_body_bytes)
    assert client._cap(BLOB) == LIMITS.max_response_bytes


def test_the_largest_honest_image_fits_the_image_task_cap() -> None:
    """A maximum-size image that does not compress at all (random RGBA), as the reference miner encodes it,
    stays under ``ImageTask.max_response_bytes``; the other examples' answers are far under the default."""
    from PIL import Image

    from inference_subnet.tasks.image.task import MAX_SIDE, ImageResponse, ImageTask
    from inference_subnet.tasks.imaging import encode_png

    noise = Image.frombytes("RGBA", (MAX_SIDE, MAX_SIDE), os.urandom(MAX_SIDE * MAX_SIDE * 4))
    answer = ImageResponse(image=encode_png(noise)).model_dump_json().encode()
    assert ImageTask.max_response_bytes is not None
    assert len(answer) < ImageTask.max_response_bytes <= 24 * MB
    assert MinerClient(VALIDATOR)._cap(ImageTask()) == ImageTask.max_response_bytes
