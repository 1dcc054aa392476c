"""MinerClient against real miners on 127.0.0.1: ``inference-subnet miner`` processes (honest, slow,
garbage) and an in-process uvicorn server for streaming. Miner faults come back as results, never raised."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from bittensor_wallet import Keypair
from conftest import free_port
from pydantic import BaseModel

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.chain.wallet import create_wallet
from inference_subnet.miner.app import create_miner_app
from inference_subnet.miner.process import MinerProcess
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol.task import Task
from inference_subnet.protocol.wire import CapacityInfo
from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask
from inference_subnet.validator.client import CallResult, MinerClient, StreamError

TASK = ArithmeticTask()
REQUEST = ArithmeticRequest(op="multiply", a=6, b=7)
SMALL = Keypair.create_from_uri("//ClientSmallValidator")
STRANGER = Keypair.create_from_uri("//ClientStranger")
BEHAVIOURS = ("honest", "slow", "garbage")


class Subnet:
    def __init__(self, root: Path) -> None:
        _, self.validator = create_wallet(root / "wallets", "validator", "default")
        self.miners: dict[str, Keypair] = {}
        self.ports: dict[str, int] = {}
        for behaviour in BEHAVIOURS:
            _, self.miners[behaviour] = create_wallet(root / "wallets", behaviour, "default")
            self.ports[behaviour] = free_port()
        neurons = [
            Neuron(uid=0, hotkey=self.validator.ss58_address, coldkey="c", stake=1000.0, validator_permit=True,
                   registration_block=1),
            Neuron(uid=1, hotkey=SMALL.ss58_address, coldkey="c", stake=1.0, validator_permit=True,
                   registration_block=1),
        ]
        for uid, behaviour in enumerate(BEHAVIOURS, start=10):
            neurons.append(Neuron(uid=uid, hotkey=self.miners[behaviour].ss58_address, coldkey="c", stake=0.0,
                                  validator_permit=False, registration_block=uid,
                                  axon=AxonInfo(ip="10.0.0.9", port=self.ports[behaviour])))
        self.metagraph = Metagraph(netuid=1, block=5, neurons=tuple(neurons))
        self.metagraph_file = root / "metagraph.json"
        self.metagraph_file.write_text(self.metagraph.to_json())
        self.root = root

    def neuron(self, behaviour: str) -> Neuron:
        return self.metagraph.by_hotkey[self.miners[behaviour].ss58_address]


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Subnet]:
    net = Subnet(tmp_path_factory.mktemp("client"))
    procs = [
        MinerProcess(port=net.ports[b], wallet_path=net.root / "wallets", wallet_name=b, behaviour=b,
                     metagraph_file=net.metagraph_file,
                     env={"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"client{free_port()}",
                          "ISN_MINER__CAPACITY": '{"arithmetic": 200}',
                          # a share as a plain per-epoch quota (a burst of the whole epoch, so nothing to
                          # lend), with the fractional floor: the pace has its own tests
                          "ISN_VALIDATOR__QUOTAS__BURST_SECONDS": "4320",
                          "ISN_VALIDATOR__QUOTAS__MIN_REQUESTS": "0",
                          "ISN_VALIDATOR__QUOTAS__MIN_SHARE": "0.01"}).start()
        for b in BEHAVIOURS
    ]
    try:
        for proc in procs:
            proc.wait_ready()
        yield net
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def client(subnet: Subnet) -> AsyncIterator[MinerClient]:
    async with MinerClient(subnet.validator, ip_override="127.0.0.1", max_connections=4) as c:
        yield c


async def test_ok(client: MinerClient, subnet: Subnet) -> None:
    neuron = subnet.neuron("honest")
    result = await client.call(TASK, neuron, REQUEST)
    assert isinstance(result, CallResult)
    assert (result.ok, result.outcome, result.status, result.error) == (True, "ok", 200, None)
    assert result.response == ArithmeticResponse(result=42)
    assert (result.hotkey, result.uid, result.identity) == (neuron.hotkey, neuron.uid, neuron.identity)
    assert 0 < result.latency < TASK.timeout


async def test_every_call_is_signed_afresh_and_the_pool_is_bounded(client: MinerClient, subnet: Subnet) -> None:
    """40 concurrent identical requests over at most 4 connections: no nonce is ever reused."""
    results = await asyncio.gather(*(client.call(TASK, subnet.neuron("honest"), REQUEST) for _ in range(40)))
    assert [r.outcome for r in results] == ["ok"] * 40


async def test_slow_miner_times_out(client: MinerClient, subnet: Subnet) -> None:
    neuron = subnet.neuron("slow")
    own_deadline, miner_deadline = await asyncio.gather(
        client.call(TASK, neuron, REQUEST, timeout=0.3),
        client.call(TASK, neuron, REQUEST),
    )
    assert (own_deadline.ok, own_deadline.outcome, own_deadline.status) == (False, "timeout", None)
    assert 0.3 <= own_deadline.latency < 1.5
    # with the default deadline (task timeout + grace) the miner's own 504 arrives first
    assert (miner_deadline.outcome, miner_deadline.status, miner_deadline.error_code) == ("timeout", 504, "timeout")
    assert TASK.timeout <= miner_deadline.latency < TASK.timeout + client.grace


async def test_garbage_is_invalid(client: MinerClient, subnet: Subnet) -> None:
    result = await client.call(TASK, subnet.neuron("garbage"), REQUEST)
    assert (result.ok, result.outcome, result.status, result.response) == (False, "invalid", 200, None)
    assert "invalid response" in result.error


async def test_connection_refused(client: MinerClient, subnet: Subnet) -> None:
    neuron = Neuron(uid=99, hotkey=STRANGER.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                    registration_block=1, axon=AxonInfo(ip="10.0.0.9", port=free_port()))
    result = await client.call(TASK, neuron, REQUEST)
    assert (result.ok, result.outcome, result.status) == (False, "connect_error", None)
    assert await client.capacity(neuron) is None


async def test_no_axon_is_a_connect_error(subnet: Subnet) -> None:
    neuron = Neuron(uid=98, hotkey=STRANGER.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                    registration_block=1, axon=AxonInfo(ip="0.0.0.0", port=0))
    async with MinerClient(subnet.validator) as client:
        result = await client.call(TASK, neuron, REQUEST)
    assert result.outcome == "connect_error" and result.error == "miner serves no axon"


async def test_refusals_are_http_errors(subnet: Subnet) -> None:
    async with MinerClient(STRANGER, ip_override="127.0.0.1") as stranger:
        result = await stranger.call(TASK, subnet.neuron("honest"), REQUEST)
    assert (result.outcome, result.status, result.error_code) == ("http_error", 403, "not_registered")


async def test_over_quota_carries_retry_after(subnet: Subnet) -> None:
    """SMALL's floor share (1%) of the declared 200 requests is 2."""
    async with MinerClient(SMALL, ip_override="127.0.0.1") as small:
        results = [await small.call(TASK, subnet.neuron("honest"), REQUEST) for _ in range(3)]
    assert [r.outcome for r in results] == ["ok", "ok", "http_error"]
    assert (results[2].status, results[2].error_code) == (429, "rate_limited")
    assert results[2].quota_reason == "beyond_share"
    assert results[2].retry_after is not None and 1 <= results[2].retry_after <= 4320


async def test_capacity(client: MinerClient, subnet: Subnet) -> None:
    info = await client.capacity(subnet.neuron("honest"))
    assert info == CapacityInfo(hotkey=subnet.miners["honest"].ss58_address, capacities={"arithmetic": 200},
                                epoch_seconds=4320.0, burst_seconds=4320.0)  # as the miners here are configured


# -- streaming, against an in-process uvicorn server ---------------------------------------------------


class WordRequest(BaseModel):
    words: list[str]
    delay: float = 0.0
    first_delay: float = 0.0
    break_after: int | None = None


class Word(BaseModel):
    word: str


class WordsResponse(BaseModel):
    text: str


class WordsTask(Task[WordRequest, WordsResponse]):
    name = "words"
    Request = WordRequest
    Response = WordsResponse
    streaming = True
    Chunk = Word
    timeout = 3.0

    def synthesize(self, rng: random.Random) -> WordRequest:
        return WordRequest(words=["a"])

    def score(self, request: Any, responses: Sequence[Any], timings: Sequence[float]) -> list[float]:
        return [1.0] * len(responses)


WORDS = WordsTask()


async def words(request: WordRequest) -> AsyncIterator[Word]:
    await asyncio.sleep(request.first_delay)
    for i, word in enumerate(request.words):
        if request.break_after == i:
            raise RuntimeError("model crashed")
        yield Word(word=word)
        await asyncio.sleep(request.delay)


@pytest.fixture(scope="module")
async def stream_miner(subnet: Subnet, redis_url: str) -> AsyncIterator[Neuron]:
    from inference_subnet.store.redis import connect

    keypair = subnet.miners["honest"]
    redis = connect(redis_url)
    app = create_miner_app(
        [WORDS], {"words": words}, load_settings(None), keypair=keypair,
        metagraph=StaticMetagraphSource(subnet.metagraph), redis=redis,
        keys=Keys(subnet=f"stream{free_port()}", netuid=1, role=f"miner:{keypair.ss58_address}"),
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue here until uvicorn accepts: no start-up race
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Neuron(uid=50, hotkey=keypair.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                     registration_block=50, axon=AxonInfo(ip="10.0.0.9", port=sock.getsockname()[1]))
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await redis.aclose()


async def collect(client: MinerClient, neuron: Neuron, request: WordRequest, **kw: float) -> list[str]:
    kw.setdefault("first_byte_timeout", 1.0)
    kw.setdefault("timeout", 3.0)
    return [chunk.word async for chunk in client.stream(WORDS, neuron, request, **kw)]


async def test_stream_yields_chunk_models(client: MinerClient, stream_miner: Neuron) -> None:
    chunks = [c async for c in client.stream(WORDS, stream_miner, WordRequest(words=["a", "b", "c"]),
                                             first_byte_timeout=1.0, timeout=3.0)]
    assert chunks == [Word(word="a"), Word(word="b"), Word(word="c")]


async def test_stream_first_byte_deadline(client: MinerClient, stream_miner: Neuron) -> None:
    with pytest.raises(StreamError) as err:
        await collect(client, stream_miner, WordRequest(words=["a"], first_delay=1.0), first_byte_timeout=0.3)
    assert err.value.outcome == "timeout"


async def test_stream_overall_deadline(client: MinerClient, stream_miner: Neuron) -> None:
    got: list[str] = []
    with pytest.raises(StreamError) as err:
        async for chunk in client.stream(WORDS, stream_miner, WordRequest(words=list("abcdef"), delay=0.2),
                                         first_byte_timeout=1.0, timeout=0.5):
            got.append(chunk.word)
    assert err.value.outcome == "timeout" and 1 <= len(got) < 6


async def test_stream_broken_midway_is_an_error_not_a_short_answer(client: MinerClient, stream_miner: Neuron) -> None:
    got: list[str] = []
    with pytest.raises(StreamError) as err:
        async for chunk in client.stream(WORDS, stream_miner, WordRequest(words=["a", "b", "c"], break_after=2),
                                         first_byte_timeout=1.0, timeout=3.0):
            got.append(chunk.word)
    assert got == ["a", "b"]
    assert err.value.outcome == "connect_error"


async def test_stream_refused_before_first_chunk(stream_miner: Neuron) -> None:
    async with MinerClient(STRANGER, ip_override="127.0.0.1") as stranger:
        with pytest.raises(StreamError) as err:
            await collect(stranger, stream_miner, WordRequest(words=["a"]))
    assert (err.value.outcome, err.value.status) == ("http_error", 403)


async def test_stream_connection_refused(client: MinerClient) -> None:
    nowhere = Neuron(uid=97, hotkey=STRANGER.ss58_address, coldkey="c", stake=0.0, validator_permit=False,
                     registration_block=1, axon=AxonInfo(ip="10.0.0.9", port=free_port()))
    with pytest.raises(StreamError) as err:
        await collect(client, nowhere, WordRequest(words=["a"]))
    assert err.value.outcome == "connect_error"
