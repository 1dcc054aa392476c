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
