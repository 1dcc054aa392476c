"""The ``llm`` example with its real (tiny, self-built) model: an honest miner scores high, and a miner that
answers with another seed, a blank, the prompt copied back, random tokens or another request's answer
scores low, all through ``LLMTask.score``; the handler serves through the real miner app; the task loads
without torch; the model builds deterministically and loads from a local path like a production model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from examples_helpers import SignedMiner, serve_miner

from inference_subnet.protocol.handlers import load_handler
from inference_subnet.protocol.task import load_task
from inference_subnet.settings import ExamplesSettings
from inference_subnet.tasks.llm.model import LANGUAGE_MODELS, TINY_LLM, build_tiny_llm, load_text_generator
from inference_subnet.tasks.llm.task import LLMChunk, LLMRequest, LLMResponse, LLMTask, Message
from inference_subnet.tasks.tiny import cache_root

TASK = LLMTask()


async def answer(behaviour: str, request: LLMRequest) -> Any:
    handler = load_handler(TASK, {"behaviour": behaviour, "seed": 1})
    chunks = [chunk async for chunk in handler(request)]  # type: ignore[union-attr]
    return TASK.assemble(chunks)


def requests(n: int, seed: int = 3) -> list[LLMRequest]:
    rng = random.Random(seed)
    return [TASK.synthesize(rng) for _ in range(n)]


async def test_honest_scores_high_and_wrong_seed_blank_copied_random_score_low(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another seed's sample is a right answer to log-probabilities (tests/test_llm_verify.py); reproducing
    # the answer is what checks the seed.
    monkeypatch.setenv("ISN_EXAMPLES__LLM_VERIFY", "regenerate")
    generator = load_text_generator()
    vocabulary = generator.tokenizer.vocab_size
    rng = random.Random(9)
    sampled = [r.model_copy(update={"temperature": 0.8}) for r in requests(4)]
    for request in sampled:
        honest = await answer("honest", request)
        wrong = await answer("wrong", request)
        other = await answer("honest", request.model_copy(update={"seed": (request.seed + 99) % 2**32}))
        copied = LLMResponse(text=request.messages[-1].content)
        blank = LLMResponse(text="")
        tokens = [rng.randrange(vocabulary) for _ in range(request.max_tokens)]
        noise = LLMResponse(text=generator.tokenizer.decode(tokens))
        scores = TASK.score(request, [honest, wrong, other, copied, blank, noise, None], [0.2] * 7)
        assert scores[0] >= 0.95, scores
        assert max(scores[1:]) <= 0.3, scores
        assert scores[-1] == 0.0


async def test_greedy_requests_ignore_the_seed_and_score_by_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    # Partial credit for half an answer is regeneration's rule; log-probabilities refuse a false ending.
    monkeypatch.setenv("ISN_EXAMPLES__LLM_VERIFY", "regenerate")
    request = LLMRequest(messages=[Message(role="user", content="Why is the sky blue?")], max_tokens=24,
                         temperature=0.0, seed=5)
    honest = await answer("honest", request)
    reseeded = await answer("honest", request.model_copy(update={"seed": 6}))
    assert honest.text == reseeded.text  # greedy: the seed does not matter, and such a miner is right
    wrong = await answer("wrong", request)  # ignores the request's decoding parameters: samples instead
    generator = load_text_generator()
    half = LLMResponse(text=generator.tokenizer.decode(generator.encode(honest.text)[:12]))
    scores = TASK.score(request, [honest, reseeded, wrong, half], [0.1] * 4)
    assert scores[0] == scores[1] >= 0.95
    assert scores[2] <= 0.3
    assert 0.3 <= scores[3] <= 0.8, "an answer cut in half agrees on half its tokens"


async def test_speed_scales_a_correct_answer_but_never_rescues_a_wrong_one() -> None:
    request = requests(1)[0]
    honest, wrong = await answer("honest", request), await answer("wrong", request)
    fast, slow, late = TASK.score(request, [honest, honest, honest], [0.1, TASK.timeout * 0.6, TASK.timeout])
    assert fast > slow > late >= 0.75
    assert TASK.score(request, [wrong], [0.0])[0] <= 0.3


async def test_scoring_workers_in_threads_agree() -> None:
    """Scoring workers share one model per process from several threads: each gets the same answer."""
    batch = requests(4, seed=11)
    answers = [await answer("honest", r) for r in batch]
    scores = await asyncio.gather(*(
        asyncio.to_thread(LLMTask().score, request, [response], [0.1])
        for request, response in zip(batch * 3, answers * 3)
    ))
    assert all(s[0] >= 0.95 for s in scores), scores


async def test_streamed_chunks_assemble_to_the_models_reply() -> None:
    request = LLMRequest(messages=[Message(role="user", content="Tell me a short story about a fox.")],
                         max_tokens=48, temperature=1.0, seed=42)
    handler = load_handler(TASK, {})
    chunks = [c async for c in handler(request)]  # type: ignore[union-attr]
    assert len(chunks) > 5 and all(isinstance(c, LLMChunk) for c in chunks)
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length") and final.completion_tokens and final.prompt_tokens
    reply = load_text_generator().chat([m.model_dump() for m in request.messages], max_new_tokens=48, seed=42,
                                       temperature=1.0)
    assembled = TASK.assemble(chunks)
    assert assembled.text == reply.text and assembled.completion_tokens == len(reply.token_ids)
    assert assembled.finish_reason == reply.finish_reason


async def test_garbage_miner_streams_an_invalid_chunk() -> None:
    chunks = [c async for c in load_handler(TASK, {"behaviour": "garbage"})(requests(1)[0])]  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        LLMChunk.model_validate(chunks[0])


def test_text_generator_is_deterministic_per_seed() -> None:
    generator = load_text_generator()
    assert load_text_generator() is generator  # once per process
    a = generator.generate("The weather in the valley", max_new_tokens=30, seed=11, temperature=0.9)
    b = generator.generate("The weather in the valley", max_new_tokens=30, seed=11, temperature=0.9)
    c = generator.generate("The weather in the valley", max_new_tokens=30, seed=12, temperature=0.9)
    assert a == b and a != c and a


# -- the handler behind the real miner app ------------------------------------------------------------------


@pytest.fixture
async def miner(redis, keys) -> AsyncIterator[SignedMiner]:  # type: ignore[no-untyped-def]
    async with serve_miner(TASK, redis, keys, netuid=3) as served:
        yield served


async def test_miner_app_streams_the_reply_as_ndjson(miner: SignedMiner) -> None:
    request = LLMRequest(messages=[Message(role="user", content="What is a prime number?")], max_tokens=32,
                         temperature=0.7, seed=77)
    r = await miner.post(request.model_dump_json().encode())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    chunks = [LLMChunk.model_validate_json(line) for line in r.text.splitlines() if line]
    assembled = TASK.assemble(chunks)
    assert TASK.score(request, [assembled], [0.5])[0] >= 0.95
    capacity = (await miner.client.get("/capacity")).json()
    assert capacity["capacities"] == {"llm": TASK.capacity_hint}


# -- loading: no torch for the task, deterministic builds, production paths ---------------------------------


def test_the_task_loads_and_synthesizes_without_torch() -> None:
    code = (
        "import sys, random\n"
        "from inference_subnet.protocol.task import load_task\n"
        "task = load_task('llm')\n"
        "request = task.synthesize(random.Random(1))\n"
        "import inference_subnet.tasks.llm.handler, inference_subnet.validator.gateway.openai\n"
        "print(request.max_tokens, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split()[1:] == ["False", "False"], out.stdout + out.stderr
    assert load_task("llm").describe()["streaming"] is True


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_tiny_model_builds_identically_and_loads_from_a_local_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    build_tiny_llm(first)
    build_tiny_llm(second)
    assert _digest(first) == _digest(second)
    assert json.loads((first / "config.json").read_text())["n_layer"] == 2
    # A local path is what a production operator sets: it goes to from_pretrained unchanged.
    assert LANGUAGE_MODELS.location(str(first)) == str(first)
    assert LANGUAGE_MODELS.location("some-org/some-model") == "some-org/some-model"
    local = load_text_generator(str(first))
    default = load_text_generator()
    assert local is not default
    prompt = [{"role": "user", "content": "hello"}]
    assert local.chat(prompt, max_new_tokens=20, seed=4, temperature=1.0).text == default.chat(
        prompt, max_new_tokens=20, seed=4, temperature=1.0).text


def test_tiny_model_builds_once_into_the_cache(tmp_path: Path) -> None:
    root = cache_root(ExamplesSettings(model_cache=tmp_path / "cache"))
    path = Path(LANGUAGE_MODELS.location(TINY_LLM, root))
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert Path(LANGUAGE_MODELS.location(TINY_LLM, root)) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging directory left behind"


def test_model_cache_is_refused_inside_site_packages() -> None:
    inside = Path(sysconfig.get_paths()["purelib"]) / "isn-models"
    with pytest.raises(ValueError, match="site-packages"):
        cache_root(ExamplesSettings(model_cache=inside))
    assert not inside.exists()
