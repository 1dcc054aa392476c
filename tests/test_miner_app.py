"""The miner app in process (ASGI transport), on a real Redis: every refusal answers with the right status
and nothing reaches the handler; the handler's answer, timeout, crash and streaming behave as documented."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from bittensor_wallet import Keypair
from pydantic import BaseModel

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.miner.app import StreamAborted, create_miner_app
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.protocol import btauth
from inference_subnet.protocol.task import Task
from inference_subnet.settings import load_settings
from inference_subnet.tasks.arithmetic import ArithmeticRequest, ArithmeticResponse, ArithmeticTask, solve

MINER = Keypair.create_from_uri("//AppMiner")
VALIDATOR = Keypair.create_from_uri("//AppValidator")
SMALL = Keypair.create_from_uri("//AppSmallValidator")
NO_PERMIT = Keypair.create_from_uri("//AppNoPermit")
POOR = Keypair.create_from_uri("//AppPoor")
STRANGER = Keypair.create_from_uri("//AppStranger")
ED_VALIDATOR = Keypair.create_from_uri("//AppEdValidator", crypto_type=0)
ROUTE = "/tasks/arithmetic"


def neuron(uid: int, kp: Keypair, stake: float, permit: bool) -> Neuron:
    return Neuron(uid=uid, hotkey=kp.ss58_address, coldkey=kp.ss58_address, stake=stake,
                  validator_permit=permit, registration_block=uid + 1)


METAGRAPH = Metagraph(netuid=7, block=100, neurons=(
    neuron(0, VALIDATOR, 9000.0, True),
    neuron(1, SMALL, 10.0, True),
    neuron(2, NO_PERMIT, 5000.0, False),
    neuron(3, POOR, 1.0, True),
    neuron(4, ED_VALIDATOR, 990.0, True),
    neuron(5, MINER, 0.0, False),
))


class Calls:
    def __init__(self) -> None:
        self.count = 0


class EchoChunk(BaseModel):
    index: int
    text: str


class EchoRequest(BaseModel):
    text: str
    repeat: int = 3
    delay: float = 0.0
    fail_at: int | None = None


class EchoResponse(BaseModel):
    text: str


class EchoTask(Task[EchoRequest, EchoResponse]):
    """A streaming task for the tests: one chunk per repeat."""

    name = "echo"
    Request = EchoRequest
    Response = EchoResponse
    streaming = True
    Chunk = EchoChunk
    timeout = 1.0

    def synthesize(self, rng: random.Random) -> EchoRequest:
        return EchoRequest(text="hi")

    def score(self, request, responses: Sequence[Any], timings: Sequence[float]) -> list[float]:
        return [1.0 for _ in responses]


class QuickArithmetic(ArithmeticTask):
    timeout = 0.3


def make_app(redis, keys, calls: Calls, *, mode: str = "honest", **miner: Any):
    settings = load_settings(None, miner={"min_validator_stake": 5.0, "max_body_bytes": 2048, **miner},
                             chain={"netuid": 7})

    async def arithmetic(request: ArithmeticRequest) -> Any:
        calls.count += 1
        if mode == "slow":
            await asyncio.sleep(5)
        if mode == "crash":
            raise RuntimeError("secret internal detail /home/miner/model.bin")
        if mode == "bad":
            return {"result": "NaN-ish"}
        if mode == "dict":
            return {"result": solve(request)}
        if mode == "inner_timeout":
            raise TimeoutError("an upstream call of the handler timed out")
        return ArithmeticResponse(result=solve(request))

    async def echo(request: EchoRequest) -> AsyncIterator[EchoChunk]:
        calls.count += 1
        for i in range(request.repeat):
            if request.delay:
                await asyncio.sleep(request.delay)
            if request.fail_at == i:
                raise RuntimeError("boom")
            yield EchoChunk(index=i, text=request.text)

    return create_miner_app(
        [QuickArithmetic(), EchoTask()],
        {"arithmetic": arithmetic, "echo": echo},
        settings,
        keypair=MINER,
        metagraph=StaticMetagraphSource(METAGRAPH),
        redis=redis,
        keys=keys,
    )


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner")


def signed(kp: Keypair = VALIDATOR, body: bytes = b'{"op":"add","a":2,"b":40}', path: str = ROUTE,
           **kw: Any) -> tuple[dict[str, str], bytes]:
    kw.setdefault("receiver_ss58", MINER.ss58_address)
    headers = btauth.sign(kp, method="POST", path=path, body=body, **kw)
    headers["content-type"] = "application/json"
    return headers, body


@pytest.fixture
async def calls() -> Calls:
    return Calls()


@pytest.fixture
async def miner(redis, keys, calls):
    async with client_for(make_app(redis, keys, calls)) as client:
        yield client


async def test_signed_request_from_a_validator_is_answered(miner, calls) -> None:
    headers, body = signed()
    r = await miner.post(ROUTE, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"result": 42}
    headers, body = signed(ED_VALIDATOR, b'{"op":"multiply","a":6,"b":7}')
    r = await miner.post(ROUTE, content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"result": 42}
    assert calls.count == 2


async def test_query_string_is_part_of_the_signature(miner, calls) -> None:
    headers, body = signed(path=ROUTE + "?trace=1&x=%2F")
    r = await miner.post(ROUTE + "?trace=1&x=%2F", content=body, headers=headers)
    assert r.status_code == 200, r.text
    headers, body = signed(path=ROUTE + "?trace=1")
    r = await miner.post(ROUTE + "?trace=2", content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
    assert calls.count == 1


def _forge(headers: dict[str, str]) -> dict[str, str]:
    sig = bytearray(bytes.fromhex(headers[btauth.HEADER_SIGNATURE][2:]))
    sig[0] ^= 1
    return {**headers, btauth.HEADER_SIGNATURE: "0x" + sig.hex()}


def forged() -> tuple[dict[str, str], bytes]:
    headers, body = signed()
    return _forge(headers), body


def tampered() -> tuple[dict[str, str], bytes]:
    headers, _ = signed()
    return headers, b'{"op":"add","a":2,"b":41}'


def without(name: str) -> Any:
    def build() -> tuple[dict[str, str], bytes]:
        headers, body = signed()
        return {k: v for k, v in headers.items() if k != name}, body

    return build


@pytest.mark.parametrize(
    ("case", "build", "status", "code"),
    [
        ("forged signature", forged, 401, "bad_signature"),
        ("tampered body", tampered, 401, "bad_signature"),
        ("wrong receiver", lambda: signed(receiver_ss58=STRANGER.ss58_address), 401, "wrong_receiver"),
        ("unbound request", lambda: signed(receiver_ss58=None), 401, "wrong_receiver"),
        ("stale nonce", lambda: signed(nonce_ns=time.time_ns() - 11 * 10**9), 401, "stale_request"),
        ("future nonce", lambda: signed(nonce_ns=time.time_ns() + 3 * 10**9), 401, "stale_request"),
        ("missing hotkey", without(btauth.HEADER_HOTKEY), 401, "malformed_auth"),
        ("missing signature", without(btauth.HEADER_SIGNATURE), 401, "malformed_auth"),
        ("missing nonce", without(btauth.HEADER_NONCE), 401, "malformed_auth"),
        ("missing version", without(btauth.HEADER_VERSION), 401, "malformed_auth"),
        ("no auth at all", lambda: ({"content-type": "application/json"}, b'{"op":"add","a":1,"b":1}'), 401,
         "malformed_auth"),
        ("unregistered caller", lambda: signed(STRANGER), 403, "not_registered"),
        ("no validator permit", lambda: signed(NO_PERMIT), 403, "no_validator_permit"),
        ("low stake", lambda: signed(POOR), 403, "low_stake"),
        ("malformed JSON", lambda: signed(body=b'{"op":"add","a":1,'), 422, "invalid_request"),
        ("invalid payload", lambda: signed(body=b'{"op":"divide","a":1,"b":2}'), 422, "invalid_request"),
        ("oversize body", lambda: signed(body=b'{"op":"add","a":1,"b":2,"pad":"' + b"x" * 4096 + b'"}'), 413,
         "payload_too_large"),
    ],
)
async def test_refusals_never_reach_the_handler(miner, calls, case, build, status, code) -> None:
    headers, body = build()
    r = await miner.post(ROUTE, content=body, headers=headers)
    assert r.status_code == status, (case, r.text)
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert set(data) == {"error", "reason"} and data["error"] == code and data["reason"], case
    assert calls.count == 0, case


async def test_replay_is_refused(miner, calls) -> None:
    headers, body = signed()
    assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200
    r = await miner.post(ROUTE, content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "replayed_request")
    assert calls.count == 1


async def test_forged_request_does_not_burn_the_nonce(miner, calls) -> None:
    headers, body = signed()
    r = await miner.post(ROUTE, content=body, headers=_forge(headers))
    assert r.status_code == 401
    assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200
    assert calls.count == 1


async def test_streamed_oversize_body_without_content_length(miner, calls) -> None:
    """A chunked body that never declares its size is cut off by the running byte count."""
    payload = b'{"op":"add","a":1,"b":2,"pad":"' + b"x" * 4096 + b'"}'
    headers, _ = signed(body=payload)

    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 512):
            yield payload[i:i + 512]

    r = await miner.post(ROUTE, content=parts(), headers=headers)
    assert "content-length" not in r.request.headers
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    assert calls.count == 0


async def test_chunked_body_within_limit_is_accepted(miner, calls) -> None:
    headers, body = signed()

    async def parts() -> AsyncIterator[bytes]:
        yield body[:5]
        yield body[5:]

    r = await miner.post(ROUTE, content=parts(), headers=headers)
    assert r.status_code == 200 and r.json() == {"result": 42}


async def test_only_post(miner, calls) -> None:
    r = await miner.get(ROUTE)
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
    r = await miner.get("/nowhere")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("slow", 504, "timeout"), ("crash", 500, "handler_error"), ("bad", 500, "invalid_response"),
     ("inner_timeout", 500, "handler_error")],
)
async def test_handler_failures(redis, keys, mode, status, code) -> None:
    calls = Calls()
    async with client_for(make_app(redis, keys, calls, mode=mode)) as miner:
        headers, body = signed()
        started = time.perf_counter()
        r = await miner.post(ROUTE, content=body, headers=headers)
        elapsed = time.perf_counter() - started
    assert (r.status_code, r.json()["error"]) == (status, code)
    assert "Traceback" not in r.text and "secret internal" not in r.text
    assert calls.count == 1
    if mode == "slow":
        assert elapsed < 2.0  # the 0.3 s task timeout cut the 5 s handler short


async def test_dict_answer_is_validated_and_served(redis, keys) -> None:
    async with client_for(make_app(redis, keys, Calls(), mode="dict")) as miner:
        headers, body = signed()
        r = await miner.post(ROUTE, content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"result": 42}


async def test_auth_disabled_serves_anyone(redis, keys) -> None:
    calls = Calls()
    async with client_for(make_app(redis, keys, calls, auth_enabled=False)) as miner:
        r = await miner.post(ROUTE, content=b'{"op":"add","a":1,"b":1}')
        assert r.status_code == 200 and r.json() == {"result": 2}
        r = await miner.post(ROUTE, content=b"x" * 5000)
        assert r.status_code == 413
    assert calls.count == 1


async def test_quota_refuses_with_retry_after(redis, keys) -> None:
    """SMALL holds 10 of 10000 permitted stake: its floor share (1%) of a capacity of 200 is 2 requests."""
    calls = Calls()
    app = make_app(redis, keys, calls, capacity={"arithmetic": 200})
    async with client_for(app) as miner:
        statuses = []
        for _ in range(4):
            headers, body = signed(SMALL)
            r = await miner.post(ROUTE, content=body, headers=headers)
            statuses.append(r.status_code)
        assert statuses == [200, 200, 429, 429]
        assert r.json()["error"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 4320
        # the big validator's share is untouched by the small one's use
        headers, body = signed(VALIDATOR)
        assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200
    assert calls.count == 3


async def test_quota_can_be_switched_off(redis, keys) -> None:
    app = make_app(redis, keys, Calls(), capacity={"arithmetic": 10}, enforce_quota=False)
    async with client_for(app) as miner:
        for _ in range(3):
            headers, body = signed(SMALL)
            assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200


async def test_metagraph_change_takes_effect(redis, keys) -> None:
    """A stranger registered with a permit in the next snapshot is served without a restart."""
    source = StaticMetagraphSource(METAGRAPH)
    settings = load_settings(None, chain={"netuid": 7})

    async def handle(request: ArithmeticRequest) -> ArithmeticResponse:
        return ArithmeticResponse(result=solve(request))

    app = create_miner_app([ArithmeticTask()], {"arithmetic": handle}, settings, keypair=MINER,
                           metagraph=source, redis=redis, keys=keys)
    async with client_for(app) as miner:
        headers, body = signed(STRANGER)
        assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 403
        source.replace(Metagraph(netuid=7, block=101,
                                 neurons=METAGRAPH.neurons + (neuron(6, STRANGER, 100.0, True),)))
        headers, body = signed(STRANGER)
        assert (await miner.post(ROUTE, content=body, headers=headers)).status_code == 200


# -- streaming ----------------------------------------------------------------------------------------

ECHO = "/tasks/echo"


async def test_streaming_sends_ndjson(miner, calls) -> None:
    headers, body = signed(body=b'{"text":"hi","repeat":3}', path=ECHO)
    async with miner.stream("POST", ECHO, content=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [line async for line in r.aiter_lines() if line]
    assert [EchoChunk.model_validate_json(line) for line in lines] == [
        EchoChunk(index=i, text="hi") for i in range(3)
    ]
    assert calls.count == 1


async def test_streaming_timeout_before_first_chunk_is_504(miner) -> None:
    headers, body = signed(body=b'{"text":"hi","repeat":2,"delay":2.0}', path=ECHO)
    r = await miner.post(ECHO, content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (504, "timeout")


async def test_streaming_failure_before_first_chunk_is_500(miner) -> None:
    headers, body = signed(body=b'{"text":"hi","repeat":2,"fail_at":0}', path=ECHO)
    r = await miner.post(ECHO, content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (500, "handler_error")


async def test_streaming_failure_mid_stream_breaks_the_stream(miner) -> None:
    headers, body = signed(body=b'{"text":"hi","repeat":3,"fail_at":2}', path=ECHO)
    with pytest.raises(StreamAborted):  # over real HTTP: an incomplete chunked body (see test_client)
        await miner.post(ECHO, content=body, headers=headers)


async def test_streaming_refusals_apply_too(miner, calls) -> None:
    headers, body = signed(STRANGER, body=b'{"text":"hi"}', path=ECHO)
    assert (await miner.post(ECHO, content=body, headers=headers)).status_code == 403
    assert calls.count == 0


# -- public routes ------------------------------------------------------------------------------------


async def test_capacity_and_health(redis, keys) -> None:
    app = make_app(redis, keys, Calls(), capacity={"arithmetic": 123})
    async with client_for(app) as miner:
        cap = (await miner.get("/capacity")).json()
        assert cap == {"hotkey": MINER.ss58_address, "capacities": {"arithmetic": 123, "echo": 1000},
                       "epoch_seconds": 4320.0, "burst_seconds": 60.0}
        headers, body = signed(STRANGER)
        await miner.post(ROUTE, content=body, headers=headers)
        health = (await miner.get("/health")).json()
    assert health["status"] == "ok"
    assert health["tasks"] == ["arithmetic", "echo"]
    assert 0 <= health["metagraph_age"] < 60
    assert health["requests"] == {"403": 1}


def test_every_task_needs_a_handler(redis, keys) -> None:
    with pytest.raises(ValueError, match="no handler for task"):
        create_miner_app([ArithmeticTask()], {}, load_settings(None), keypair=MINER,
                         metagraph=StaticMetagraphSource(METAGRAPH), redis=redis, keys=keys)


async def test_unexpected_failure_still_answers_json(redis, keys) -> None:
    """Task routes bypass Starlette's error middleware; a bug in a dependency must not leak a traceback."""

    class BrokenSource:
        age_seconds = 0.0

        async def current(self) -> Metagraph:
            raise RuntimeError("disk on fire at /secret/path")

    app = create_miner_app([ArithmeticTask()], {"arithmetic": make_handler_stub()}, load_settings(None),
                           keypair=MINER, metagraph=BrokenSource(), redis=redis, keys=keys)
    async with client_for(app) as miner:
        headers, body = signed()
        r = await miner.post(ROUTE, content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (500, "internal_error")
    assert "secret" not in r.text


def make_handler_stub():
    async def handle(request: ArithmeticRequest) -> ArithmeticResponse:
        raise AssertionError("never reached")

    return handle
