"""The OpenAI-compatible surface, driven by the official ``openai`` client: a gateway in process serving the
``llm`` example, two real miner processes (``inference-subnet miner --task llm``) running the tiny model, a
real Redis and SQLite. The text the client receives must be exactly what the model produces for the seed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from test_gateway_helpers import (
    LocalSubnet,
    free_port,
    fresh_database,
    seed_evidence,
    serve_in_process,
    sqlite_url,
    stop_in_process,
)

from inference_subnet.chain.types import Metagraph
from inference_subnet.miner.sources import StaticMetagraphSource
from inference_subnet.settings import load_settings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import connect
from inference_subnet.store.sql import Database, RequestLog
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.tasks.llm.model import load_text_generator
from inference_subnet.tasks.llm.task import LLMTask
from inference_subnet.validator.client import MinerClient
from inference_subnet.validator.gateway.apikeys import ApiKeyStore
from inference_subnet.validator.gateway.app import create_gateway_app
from inference_subnet.validator.managing import QuotaBook, ScoreBook

Chat = list[dict[str, str]]
MESSAGES: Chat = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a short story about a fox."},
]


def expected(max_tokens: int, seed: int, temperature: float, messages: Chat = MESSAGES) -> str:
    """What the model itself writes for this conversation and seed (the tiny model, loaded here too)."""
    generator = load_text_generator()
    return generator.chat(messages, max_new_tokens=max_tokens, seed=seed, temperature=temperature).text


@pytest.fixture(scope="module")
async def subnet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> AsyncIterator[LocalSubnet]:
    net = LocalSubnet(tmp_path_factory.mktemp("openai"), redis_url)
    net.setup(["honest", "honest"], tasks=("llm",))
    net.start_miners()
    try:
        await net.wait_ready(timeout=60.0)
        yield net
    finally:
        net.stop()


@dataclass
class Gateway:
    url: str
    api_key: str
    db: Database

    def client(self, api_key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key or self.api_key, max_retries=0,
                                  timeout=60.0)

    async def log_rows(self) -> list[RequestLog]:
        async with self.db.sessions() as session:
            return list((await session.scalars(select(RequestLog).order_by(RequestLog.id))).all())


@pytest.fixture(scope="module")
async def gateway(
    subnet: LocalSubnet, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    redis = connect(redis_url)  # a cluster client too, for a redis+cluster:// URL
    keys = Keys(subnet=f"oai{free_port()}", netuid=1, role="validator")
    db = await fresh_database(sqlite_url(tmp_path_factory.mktemp("openai-db")))
    settings = load_settings(
        gateway={"api_key_cache_seconds": 0, "usage_refresh_seconds": 0, "first_byte_timeout": 30.0,
                 "total_deadline_seconds": 60.0, "log_flush_seconds": 0.05},
    )
    metagraph = subnet.metagraph()
    quota = QuotaBook(redis, keys, settings.validator.quotas)
    await quota.set_stakes(metagraph, subnet.validator.ss58_address)
    score_book = ScoreBook(redis, keys, settings.validator.scoring)
    for m in subnet.miners:
        await quota.set_capacity(metagraph.by_uid[m.uid].identity, {"llm": 1000})
    await seed_evidence(score_book, [metagraph.by_uid[m.uid].identity for m in subnet.miners], ["llm"])
    client = MinerClient(subnet.validator)
    app = create_gateway_app(
        settings, tasks={"llm": LLMTask()}, redis=redis, keys=keys,
        metagraph=StaticMetagraphSource(metagraph),
        miner_client=client, quota_book=quota, score_book=score_book,
        db=db, exclude_hotkeys=[subnet.validator.ss58_address],
    )
    port = free_port()
    server, task = await serve_in_process(app, port)
    _, plain = await ApiKeyStore(db).create("openai-test", rate_per_minute=1000, max_concurrent=20)
    try:
        yield Gateway(f"http://127.0.0.1:{port}", plain, db)
    finally:
        await stop_in_process(server, task)
        await client.aclose()
        await db.aclose()
        await redis.aclose()


async def test_chat_completion_is_the_models_text_for_the_seed(gateway: Gateway) -> None:
    async with gateway.client() as client:
        completion = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=24, temperature=0.8, seed=7  # type: ignore[arg-type]
        )
    want = await asyncio.to_thread(expected, 24, 7, 0.8)
    assert completion.object == "chat.completion" and completion.model == "llm"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == want
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streamed_chat_completion_streams_and_joins_to_the_models_text(gateway: Gateway) -> None:
    async with gateway.client() as client:
        stream = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=40, temperature=1.0, seed=123, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    want = await asyncio.to_thread(expected, 40, 123, 1.0)
    content = [c for c in chunks if c.choices]
    assert len(content) > 3, "the answer must stream in several chunks"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert content[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content) == want
    assert content[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_greedy_answers_agree_and_unseeded_answers_are_served(gateway: Gateway) -> None:
    async with gateway.client() as client:
        ask = [{"role": "user", "content": "Why is the sky blue?"}]
        greedy = [
            await client.chat.completions.create(model="llm", messages=ask, max_tokens=16, temperature=0)  # type: ignore[arg-type]
            for _ in range(2)
        ]
        unseeded = await client.chat.completions.create(model="llm", messages=ask, max_tokens=8)  # type: ignore[arg-type]
    want = await asyncio.to_thread(expected, 16, 0, 0.0, ask)
    assert [g.choices[0].message.content for g in greedy] == [want, want]
    assert unseeded.choices[0].finish_reason in ("stop", "length")


async def test_models_list_and_errors_in_openais_shape(gateway: Gateway) -> None:
    async with gateway.client() as client:
        assert [m.id async for m in client.models.list()] == ["llm"]
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        assert "llm" in missing.value.message
        with pytest.raises(openai.BadRequestError) as too_long:  # OpenAI answers 400 for a bad value
            await client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=100_000)  # type: ignore[arg-type]
        assert "max_tokens" in too_long.value.message and too_long.value.param == "max_tokens"
    async with gateway.client(api_key="isn_not-a-key") as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="llm", messages=MESSAGES)  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "llm", "messages": []},
                            headers={"Authorization": f"Bearer {gateway.api_key}"})
        assert r.status_code == 400 and r.json()["error"] == {
            "message": r.json()["error"]["message"], "type": "invalid_request_error", "param": "messages",
            "code": "invalid_value",
        }


async def test_openai_requests_go_through_the_request_log(gateway: Gateway) -> None:
    before = len(await gateway.log_rows())
    async with gateway.client() as client:
        await client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=4, seed=1)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=4, seed=1, stream=True  # type: ignore[arg-type]
        )
        _ = [c async for c in stream]
    for _ in range(200):
        rows = await gateway.log_rows()
        if len(rows) >= before + 2:
            break
        await asyncio.sleep(0.05)
    new = rows[before:]
    assert [(r.task, r.status) for r in new] == [("llm", 200), ("llm", 200)]
    assert all(r.miner_uid in (1, 2) for r in new)


async def test_the_openai_routes_exist_only_with_a_chat_task(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    settings = load_settings(database_url=sqlite_url(tmp_path))
    common: dict[str, Any] = {
        "redis": redis, "keys": keys, "miner_client": None, "quota_book": None,
        "metagraph": StaticMetagraphSource(Metagraph(netuid=1, block=1, neurons=())),
        "score_book": ScoreBook(redis, keys, settings.validator.scoring),
    }
    plain = create_gateway_app(settings, tasks={"arithmetic": ArithmeticTask()}, **common)
    chat = create_gateway_app(settings, tasks={"arithmetic": ArithmeticTask(), "llm": LLMTask()}, **common)
    assert "/v1/chat/completions" not in plain.openapi()["paths"]
    schema = chat.openapi()
    assert {"/v1/chat/completions", "/v1/models"} <= set(schema["paths"])
    assert "messages" in schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]


# -- the surface clients rely on: stop, refusals by name, strict types, one error shape, headers, usage ----


def _stop_inside(text: str) -> str:
    """A word from the middle of ``text`` (past its first few characters) to use as a stop sequence."""
    for word in text[6:].split():
        if len(word) >= 2 and word.isascii() and word.isprintable():
            return word
    raise AssertionError(f"no usable word in {text!r}")


async def test_stop_ends_the_answer_before_the_sequence_streamed_or_not(gateway: Gateway) -> None:
    full = await asyncio.to_thread(expected, 40, 5, 0.0)
    stop = _stop_inside(full)
    want = full[: full.find(stop)]
    assert want and len(want) < len(full)
    async with gateway.client() as client:
        completion = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=40, temperature=0, seed=5, stop=stop  # type: ignore[arg-type]
        )
        stream = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=40, temperature=0, seed=5, stop=[stop, "\x00never"],  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert completion.choices[0].message.content == want
    assert completion.choices[0].finish_reason == "stop"
    content = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in content) == want
    assert content[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens  # type: ignore[union-attr]


async def test_the_task_scores_an_honest_stopped_answer_against_a_stopped_reference() -> None:
    from inference_subnet.tasks.llm.task import LLMRequest, LLMResponse

    full = await asyncio.to_thread(expected, 40, 5, 0.0)
    stop = _stop_inside(full)
    request = LLMRequest.model_validate({"messages": MESSAGES, "max_tokens": 40, "temperature": 0.0, "seed": 5,
                                         "stop": stop})
    honest = LLMResponse(text=full[: full.find(stop)], finish_reason="stop")
    ignoring = LLMResponse(text=full, finish_reason="length")  # a miner that ignores `stop`
    scores = await asyncio.to_thread(LLMTask().score, request, [honest, ignoring], [0.1, 0.1])
    assert scores[0] > 0.9 and scores[1] < scores[0] - 0.2


async def test_unsupported_parameters_are_refused_by_name(gateway: Gateway) -> None:
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    async with gateway.client() as client:
        with pytest.raises(openai.BadRequestError) as tools:
            await client.chat.completions.create(model="llm", messages=MESSAGES, tools=[weather])  # type: ignore[arg-type,list-item]
        assert tools.value.status_code == 400 and tools.value.param == "tools"
        assert tools.value.code == "unsupported_parameter" and "'tools'" in tools.value.message
        assert tools.value.type == "invalid_request_error"
        refused = {
            "response_format": {"response_format": {"type": "json_object"}},
            "logprobs": {"logprobs": True},
            "top_p": {"top_p": 0.5},
            "presence_penalty": {"presence_penalty": 0.5},
            "logit_bias": {"logit_bias": {"42": 10}},
            "n": {"n": 2},
        }
        for name, extra in refused.items():
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="llm", messages=MESSAGES, **extra)  # type: ignore[arg-type]
            assert (caught.value.param, caught.value.code) == (name, "unsupported_parameter"), name
        # Harmless values of the same parameters, and `user`, are served.
        served = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=2, top_p=1, n=1, presence_penalty=0, tools=[],  # type: ignore[arg-type]
            response_format={"type": "text"}, logprobs=False, user="end-user-7",
        )
        assert served.choices[0].message.content is not None
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        auth = {"Authorization": f"Bearer {gateway.api_key}"}
        base = {"model": "llm", "messages": MESSAGES, "max_tokens": 2}
        strict = await http.post("/v1/chat/completions", json={**base, "stream": "yes"}, headers=auth)
        assert strict.status_code == 400
        assert strict.json()["error"] | {"message": ""} == {
            "message": "", "type": "invalid_request_error", "param": "stream", "code": "invalid_type"}
        unknown = await http.post("/v1/chat/completions", json={**base, "temprature": 0.5}, headers=auth)
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "temprature"
        assert unknown.json()["error"]["code"] == "unknown_parameter"
        stops = await http.post("/v1/chat/completions", json={**base, "stop": ["a", "b", "c", "d", "e"]},
                                headers=auth)
        assert stops.status_code == 400 and stops.json()["error"]["param"] == "stop"


async def test_models_retrieve_and_one_error_shape_under_v1(gateway: Gateway) -> None:
    async with gateway.client() as client:
        model = await client.models.retrieve("llm")
        assert (model.id, model.object) == ("llm", "model")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("gpt-4o")
        assert missing.value.code == "model_not_found" and "llm" in missing.value.message
    auth = {"Authorization": f"Bearer {gateway.api_key}"}
    huge = b'{"model": "llm", "messages": [], "pad": "' + b"x" * 2_000_000 + b'"}'
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answers = {
            ("GET", "/v1/nothing"): (404, "not_found_error"),
            ("GET", "/v1/chat/completions"): (405, "invalid_request_error"),
            ("GET", "/v1/tasks/llm"): (405, "invalid_request_error"),
            ("POST", "/v1/tasks/nope"): (404, "not_found_error"),
            ("POST", "/v1/chat/completions"): (413, "invalid_request_error"),
            ("POST", "/v1/tasks/llm"): (413, "invalid_request_error"),
        }
        for (method, path), (status, kind) in answers.items():
            r = await http.request(method, path, headers=auth, content=huge if method == "POST" and status == 413
                                   else None)
            error = r.json()["error"]
            assert (r.status_code, error["type"]) == (status, kind), (method, path, r.text[:200])
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
            assert r.headers["x-request-id"].startswith("req_")
        bad_task = await http.post("/v1/tasks/llm", json={"messages": []}, headers=auth)
        assert bad_task.status_code == 422 and bad_task.json()["error"]["type"] == "invalid_request_error"
        # The service routes keep the project's own shape.
        for method, path, status in (("GET", "/nothing", 404), ("POST", "/health", 405)):
            r = await http.request(method, path)
            assert r.status_code == status and set(r.json()) == {"error", "reason"}
        r = await http.post("/ready", content=huge)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


async def test_rate_limits_answer_429_in_openais_shape_with_the_keys_headers(gateway: Gateway) -> None:
    _, plain = await ApiKeyStore(gateway.db).create("paced", rate_per_minute=120, max_concurrent=4)
    async with gateway.client(api_key=plain) as client:
        first = await client.chat.completions.with_raw_response.create(
            model="llm", messages=MESSAGES, max_tokens=2  # type: ignore[arg-type]
        )
        second = await client.chat.completions.with_raw_response.create(
            model="llm", messages=MESSAGES, max_tokens=2  # type: ignore[arg-type]
        )
    # 120/min: one request each 500 ms, a burst of 10.
    assert first.headers["x-ratelimit-limit-requests"] == "120"
    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "9", "8"]
    assert first.headers["x-ratelimit-reset-requests"] == "500ms"
    _, slow = await ApiKeyStore(gateway.db).create("one-a-minute", rate_per_minute=1, max_concurrent=4)
    async with gateway.client(api_key=slow) as client:
        await client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    response = limited.value.response
    assert response.json()["error"]["type"] == "rate_limit_error" and limited.value.code == "rate_limited"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-limit-requests"] == "1" and int(response.headers["retry-after"]) >= 50


async def test_request_ids_are_echoed_when_sane_and_logged(gateway: Gateway) -> None:
    async with gateway.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llm", messages=MESSAGES, max_tokens=3, seed=2,  # type: ignore[arg-type]
            extra_headers={"x-request-id": "trace-42.a:b"},
        )
        too_long = await client.models.with_raw_response.list(extra_headers={"x-request-id": "y" * 129})
    assert raw.headers["x-request-id"] == "trace-42.a:b"
    assert raw.request_id == "trace-42.a:b"  # what the openai client exposes
    generated = too_long.headers["x-request-id"]
    assert generated.startswith("req_") and len(generated) == 36
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        body = {"model": "llm", "messages": MESSAGES, "max_tokens": 3, "stream": True}
        auth = {"Authorization": f"Bearer {gateway.api_key}", "x-request-id": "stream-1"}
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as streamed:
            assert streamed.headers["x-request-id"] == "stream-1"
            assert streamed.headers["x-ratelimit-limit-requests"] == "1000"
            assert int(streamed.headers["x-ratelimit-remaining-requests"]) >= 0
            assert (await streamed.aread()).endswith(b"data: [DONE]\n\n")
        for sent in (b"has spaces", "caf\u00e9".encode("latin-1"), b"a\tb"):
            r = await http.get("/v1/models", headers={"x-request-id": sent})
            assert r.status_code == 401 and r.headers["x-request-id"].startswith("req_"), sent
    completion = raw.parse()
    for _ in range(200):
        rows = {r.request_id: r for r in await gateway.log_rows()}
        if "trace-42.a:b" in rows:
            break
        await asyncio.sleep(0.05)
    row = rows["trace-42.a:b"]
    assert completion.usage is not None
    assert (row.prompt_tokens, row.completion_tokens) == (completion.usage.prompt_tokens,
                                                          completion.usage.completion_tokens)


async def test_langchain_chat_openai_against_the_gateway(gateway: Gateway) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    full = await asyncio.to_thread(expected, 40, 5, 0.0)
    stop = _stop_inside(full)
    llm = ChatOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, model="llm", temperature=0,  # type: ignore[arg-type]
                     seed=5, max_tokens=40, max_retries=0, timeout=60, stream_usage=True)
    message = await llm.ainvoke(MESSAGES, stop=[stop])
    assert message.content == full[: full.find(stop)]
    assert message.response_metadata["finish_reason"] == "stop"
    parts = [part async for part in llm.astream(MESSAGES)]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + part
    assert joined.content == full and len(parts) > 3
    assert joined.usage_metadata is not None and joined.usage_metadata["output_tokens"] > 0

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    with pytest.raises(openai.BadRequestError) as refused:
        await llm.bind_tools([weather]).ainvoke(MESSAGES)
    assert refused.value.param == "tools" and "'tools' is not supported" in refused.value.message


async def test_usage_per_key_in_the_log_and_the_cli(gateway: Gateway) -> None:
    import json
    import subprocess
    import sys

    key, plain = await ApiKeyStore(gateway.db).create("usage", rate_per_minute=1000, max_concurrent=4)
    usages = []
    async with gateway.client(api_key=plain) as client:
        for seed in (1, 2):
            done = await client.chat.completions.create(model="llm", messages=MESSAGES, max_tokens=6, seed=seed)  # type: ignore[arg-type]
            assert done.usage is not None
            usages.append(done.usage)
        stream = await client.chat.completions.create(
            model="llm", messages=MESSAGES, max_tokens=6, seed=3, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        last = [c async for c in stream][-1]
        assert last.usage is not None
        usages.append(last.usage)
        with pytest.raises(openai.BadRequestError):  # refused before the pipeline: no log row, no tokens
            await client.chat.completions.create(model="llm", messages=MESSAGES, top_p=0.2)  # type: ignore[arg-type]
    for _ in range(200):
        rows = [r for r in await gateway.log_rows() if r.key_id == key.id]
        if len(rows) >= 3:
            break
        await asyncio.sleep(0.05)
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in rows) == sorted(
        (u.prompt_tokens, u.completion_tokens) for u in usages)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inference_subnet.cli.main", "gateway", "keys", "usage", *args,
             "--database-url", gateway.db.url], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL,
        )

    shown = await asyncio.to_thread(cli, "--key", str(key.id), "--period", "1h", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [{
        "key_id": key.id, "name": "usage", "requests": 3, "served": 3,
        "prompt_tokens": sum(u.prompt_tokens for u in usages),
        "completion_tokens": sum(u.completion_tokens for u in usages),
        "total_tokens": sum(u.total_tokens for u in usages),
    }]
    table = await asyncio.to_thread(cli, "--period", "1h")
    assert table.returncode == 0 and "usage" in table.stdout and str(sum(u.total_tokens for u in usages)) in table.stdout
    bad = await asyncio.to_thread(cli, "--period", "yesterday")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --period: 'yesterday' is not a period such as 30m, 24h, 7d or 2w"]
