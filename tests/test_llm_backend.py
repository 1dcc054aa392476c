"""Miners on real OpenAI-compatible inference servers: ``inference-subnet llm serve`` answers like vLLM (chat
and completions, JSON and SSE, usage, stop sequences, vLLM-shaped prompt logprobs, bounded inputs), and the
``openai_backend`` handler streams from it exactly what the built-in handler computes, cuts off a hostile
server's endless line or stream with a clear error, reports an unreachable server, never shows its key, and
serves a real miner process behind signed requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from test_miner_processes import setup_subnet
from typer.testing import CliRunner

from inference_subnet.cli.main import app as cli
from inference_subnet.miner.process import MinerProcess
from inference_subnet.protocol import btauth
from inference_subnet.protocol.handlers import load_handler
from inference_subnet.tasks.llm.openai_backend import BackendError, check_backend, config_from, make_handler
from inference_subnet.tasks.llm.server import BackgroundServer, Engine, ServerLimits, load_engine
from inference_subnet.tasks.llm.task import LLMChunk, LLMRequest, LLMTask, Message

TASK = LLMTask()
BACKEND = "inference_subnet.tasks.llm.openai_backend:make_handler"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_engine()


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[BackgroundServer]:
    with BackgroundServer(engine) as running:
        yield running


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def ask(content: str, *, max_tokens: int = 24, temperature: float = 0.0, seed: int = 0) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=content)], max_tokens=max_tokens,
                      temperature=temperature, seed=seed)


async def chunks_of(handler: Any, request: LLMRequest) -> list[LLMChunk]:
    return [chunk async for chunk in handler(request)]


def sse_payloads(lines: Iterator[str]) -> list[Any]:
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- the server -------------------------------------------------------------------------------------------


def test_models_lists_the_served_model(http: httpx.Client, engine: Engine) -> None:
    listed = http.get("/models").json()
    assert [m["id"] for m in listed["data"]] == [engine.name]
    assert listed["data"][0]["max_model_len"] == engine.context == 1024


def test_chat_streams_the_same_reply_it_answers_whole_with_usage_last(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 20,
            "temperature": 0.8, "seed": 11}
    whole = http.post("/chat/completions", json=body).json()
    assert whole["object"] == "chat.completion"
    assert whole["usage"]["completion_tokens"] <= 20
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/chat/completions", json=stream) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_payloads(response.iter_lines())
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == whole["choices"][0]["message"]["content"] and text
    assert events[-3]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(e["usage"] is None for e in events[:-2])  # include_usage: null until the usage chunk


def test_max_tokens_and_seed_are_honoured(http: httpx.Client) -> None:
    base = {"messages": [{"role": "user", "content": "Tell me a short story about a fox."}], "temperature": 1.0}
    replies = {}
    for seed in (1, 1, 2):
        answer = http.post("/chat/completions", json={**base, "max_tokens": 7, "seed": seed}).json()
        assert answer["usage"]["completion_tokens"] <= 7
        replies.setdefault(seed, []).append(answer["choices"][0]["message"]["content"])
    assert replies[1][0] == replies[1][1] != replies[2][0]


def test_a_stop_sequence_cuts_the_reply_streamed_or_not(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Describe the market on a Saturday morning."}],
            "max_tokens": 40, "temperature": 0.9, "seed": 5}
    full = http.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    cut = http.post("/chat/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert (cut["message"]["content"], cut["finish_reason"]) == (expected, "stop")
    with http.stream("POST", "/chat/completions", json={**body, "stop": stop, "stream": True}) as response:
        events = sse_payloads(response.iter_lines())
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert streamed == expected and events[-2]["choices"][0]["finish_reason"] == "stop"


def test_prompt_logprobs_have_vllms_shape_and_agree_with_decoding(http: httpx.Client, engine: Engine) -> None:
    """Teacher forcing over a prompt followed by its own greedy reply ranks every reply token first: the
    logprobs are those of the model that decodes."""
    chat = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "Why is the sky blue?"}],
                                                 "max_tokens": 12, "temperature": 0}).json()
    prompt = {"prompt": "Why is the sky blue?", "max_tokens": 12, "temperature": 0}
    greedy = http.post("/completions", json=prompt).json()["choices"][0]
    answer = http.post("/completions", json={**prompt, "max_tokens": 1, "prompt": greedy_ids(http, greedy),
                                             "prompt_logprobs": 2, "echo": True, "logprobs": 1}).json()
    choice = answer["choices"][0]
    ids = choice["prompt_token_ids"]
    positions = choice["prompt_logprobs"]
    assert len(positions) == len(ids) and positions[0] is None
    asked = len(engine.generator.encode("Why is the sky blue?"))
    for token_id, entry in zip(ids[1:], positions[1:]):
        actual = entry[str(token_id)]
        assert actual["logprob"] <= 0 and actual["rank"] >= 1 and isinstance(actual["decoded_token"], str)
        assert 2 <= len(entry) <= 3 and sorted(e["rank"] for e in entry.values())[:2] == [1, 2]
    assert [positions[i][str(ids[i])]["rank"] for i in range(asked, len(ids))] == [1] * (len(ids) - asked)
    legacy = choice["logprobs"]
    assert len(legacy["tokens"]) == len(ids) + 1 and legacy["token_logprobs"][0] is None
    assert "".join(legacy["tokens"]) == choice["text"]
    assert legacy["token_logprobs"][1:len(ids)] == [positions[i][str(ids[i])]["logprob"] for i in range(1, len(ids))]
    assert answer["usage"]["prompt_tokens"] == len(ids)
    assert chat["usage"]["prompt_tokens"] > asked  # chat prompts go through the chat template


def greedy_ids(http: httpx.Client, greedy: dict[str, Any]) -> list[int]:
    """The prompt's ids followed by the ids of its greedy reply."""
    answer = http.post("/completions", json={"prompt": "Why is the sky blue?", "max_tokens": 12, "temperature": 0,
                                             "return_token_ids": True}).json()["choices"][0]
    assert answer["text"] == greedy["text"]
    return [*answer["prompt_token_ids"], *answer["token_ids"]]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 513}, 400,
         "max_tokens: at most 512"),
        ("/chat/completions", {"messages": []}, 400, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n:"),
        ("/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404,
         "The model `gpt-4` does not exist"),
        ("/completions", {"prompt": [5, 99_999]}, 400, "vocabulary size"),
        ("/completions", {"prompt": "x", "max_tokens": 10, "logprobs": 21}, 400, "logprobs"),
        ("/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
        ("/completions", {"prompt": list(range(700)) * 2, "max_tokens": 1}, 400, "maximum context length is 1024"),
        ("/completions", {"prompt": "x", "prompt_logprobs": 1, "stream": True}, 400, "without stream"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(http: httpx.Client, path: str, body: dict[str, Any], status: int,
                                               says: str) -> None:
    answer = http.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]


def test_bodies_are_capped_declared_or_streamed(engine: Engine) -> None:
    with BackgroundServer(engine, limits=ServerLimits(max_body_bytes=4096)) as small, \
            httpx.Client(base_url=small.base_url, timeout=30) as client:
        body = json.dumps({"prompt": "x" * 5000}).encode()
        assert client.post("/completions", content=body).status_code == 413

        def chunked() -> Iterator[bytes]:
            for _ in range(10):
                yield body[:1000]

        refused = client.post("/completions", content=chunked())
        assert refused.status_code == 413 and "4096 bytes" in refused.json()["error"]["message"]
        assert client.post("/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_decoding_slots_are_bounded_and_given_back_by_a_client_that_leaves(engine: Engine) -> None:
    with BackgroundServer(engine, limits=ServerLimits(max_running=1)) as one, \
            httpx.Client(base_url=one.base_url, timeout=30) as client:
        slots = one.server.config.app.state.server.slots  # type: ignore[attr-defined]
        body = {"prompt": "the cat", "max_tokens": 500, "stream": True}
        with client.stream("POST", "/completions", json=body) as response:
            next(response.iter_lines())
        for _ in range(500):  # the server notices the disconnect on its next write
            if slots.used == 0:
                break
            time.sleep(0.01)
        assert slots.used == 0
        slots.used = 1  # as if one request were decoding
        busy = client.post("/completions", json={"prompt": "x"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        slots.used = 0
        assert client.post("/completions", json={"prompt": "x"}).status_code == 200


def test_a_request_past_its_deadline_is_504_or_a_cut_stream(engine: Engine) -> None:
    """512 greedy tokens take the tiny model about a second here; the deadline is a fifth of that."""
    body = {"prompt": "the cat", "max_tokens": 512, "temperature": 0}
    with BackgroundServer(engine, limits=ServerLimits(request_timeout=0.2)) as short, \
            httpx.Client(base_url=short.base_url, timeout=30) as client:
        whole = client.post("/completions", json=body)
        assert whole.status_code == 504 and "longer than 0.2s" in whole.json()["error"]["message"]
        lines: list[str] = []
        with client.stream("POST", "/completions", json={**body, "stream": True}) as response:
            with contextlib.suppress(httpx.HTTPError):  # the server closes the unfinished stream
                lines.extend(line for line in response.iter_lines() if line)
        assert lines and "data: [DONE]" not in lines
        assert short.server.config.app.state.server.slots.used == 0  # type: ignore[attr-defined]
    with BackgroundServer(engine) as patient, httpx.Client(base_url=patient.base_url, timeout=30) as client:
        assert client.post("/completions", json=body).json()["usage"]["completion_tokens"] == 512


# -- the backend handler ----------------------------------------------------------------------------------


async def test_the_backend_streams_what_the_built_in_handler_computes(server: BackgroundServer) -> None:
    backend = load_handler(TASK, {"base_url": server.base_url}, BACKEND)
    reference = load_handler(TASK, {})
    rng = random.Random(4)
    requests = [ask("Why is the sky blue?", temperature=0.0),
                *(TASK.synthesize(rng) for _ in range(3)),
                ask("Give me a recipe for a simple soup.", max_tokens=48, temperature=1.2, seed=99)]
    for request in requests:
        ours, theirs = await chunks_of(backend, request), await chunks_of(reference, request)
        assert [c.delta for c in ours] == [c.delta for c in theirs], request
        # The text, finish reason and counts; the built-in handler also sends its token ids, which an
        # OpenAI-compatible server does not return.
        assert TASK.assemble(ours).model_dump(exclude={"token_ids"}) == TASK.assemble(theirs).model_dump(
            exclude={"token_ids"}
        )
        last = ours[-1]
        assert last.completion_tokens == theirs[-1].completion_tokens and last.completion_tokens <= request.max_tokens
        assert last.prompt_tokens == theirs[-1].prompt_tokens > 0
        assert TASK.score(request, [TASK.assemble(ours)], [0.1])[0] >= 0.95


async def test_an_unreachable_backend_is_a_clear_error() -> None:
    port = free_port()
    handler = make_handler({"base_url": f"http://127.0.0.1:{port}/v1"})
    with pytest.raises(BackendError, match=rf"cannot reach http://127\.0\.0\.1:{port}/v1: ConnectError"):
        await chunks_of(handler, ask("hello"))


async def test_an_upstream_error_answer_names_its_reason(server: BackgroundServer) -> None:
    handler = make_handler({"base_url": server.base_url, "model": "not-served"})
    with pytest.raises(BackendError, match=r"answered HTTP 404: The model `not-served` does not exist"):
        await chunks_of(handler, ask("hello"))


# -- a hostile inference server ------------------------------------------------------------------------------

LIMIT = 64 * 1024 * 1024
"""Bytes a hostile server writes at most: a handler that never stopped reading would see them all."""
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'


class Hostile:
    """A raw HTTP server on 127.0.0.1 that answers every request with ``mode``'s bytes, bounded: it stops
    writing after 64 MiB or when the client goes away. Records the heads it received."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.heads: list[bytes] = []
        self.sent = 0

    async def __aenter__(self) -> Hostile:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(min(length, 1_048_576))
            for part in self._answer():
                writer.write(part)
                await writer.drain()
                self.sent += len(part)
                if self.sent > LIMIT:
                    break
                if self.mode == "trickle":
                    await asyncio.sleep(0.05)
            if self.mode in ("stall", "silent"):
                await asyncio.wait_for(reader.read(), 30)  # until the client goes away
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    def _answer(self) -> Iterator[bytes]:
        if self.mode == "silent":
            return
        if self.mode == "error":
            body = b'{"error": {"message": "model overloaded\\ntry later", "type": "server_error"}}'
            yield b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
            yield str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            return
        yield SSE_HEAD + (b"content-encoding: gzip\r\n" if self.mode == "gzip" else b"") + b"\r\n"
        if self.mode == "long_line":
            yield b'data: {"choices":[{"index":0,"delta":{"content":"'
            while True:
                yield b"x" * 16384
        if self.mode in ("endless", "trickle"):
            while True:
                yield TOKEN
        yield TOKEN
        if self.mode == "midstream_error":
            yield b'data: {"error": {"message": "CUDA out of memory", "code": 500}}\n\n'
        if self.mode == "done":
            yield b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(
    ("mode", "options", "message"),
    [
        ("long_line", {}, "a line passed its cap of 65536 bytes"),
        # (a deadline far off: on a loaded machine the cap, not the clock, must be what stops the stream)
        ("endless", {"max_stream_bytes": 1_000_000, "timeout": 120.0}, "the stream passed its cap of 1000000 bytes"),
        ("trickle", {"timeout": 1.0}, "did not finish within 0.95s"),
        ("stall", {"timeout": 1.0}, "did not finish within 0.95s"),
        ("silent", {"timeout": 1.0}, "did not answer within 0.95s"),
        ("silent", {"timeout": 4.0, "first_byte_timeout": 0.5}, "did not answer within 0.5s"),
        ("error", {}, "answered HTTP 503: model overloaded try later"),
        ("midstream_error", {}, "failed mid-stream: CUDA out of memory"),
        ("gzip", {}, "sent a 'gzip'-encoded stream it was not asked for"),
        ("truncated", {}, "ended the stream before the reply's end"),
    ],
)
async def test_a_hostile_server_is_cut_off_with_a_clear_error(mode: str, options: dict[str, Any],
                                                              message: str) -> None:
    async with Hostile(mode) as hostile:
        handler = make_handler({"base_url": hostile.base_url, **options})
        with pytest.raises(BackendError) as caught:
            await chunks_of(handler, ask("hello"))
        error = str(caught.value)
        assert error.startswith(hostile.base_url) and error.endswith(message), error
        assert "\n" not in error
        assert hostile.sent < LIMIT / 4  # the handler stopped reading long before the server's own bound


async def test_the_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Hostile("done") as hostile:
        monkeypatch.setenv("ISN_EXAMPLES__LLM_BACKEND_URL", hostile.base_url)
        monkeypatch.setenv("ISN_EXAMPLES__LLM_BACKEND_API_KEY", "sk-very-secret")
        handler = make_handler({})
        chunks = await chunks_of(handler, ask("hello"))
        assert [c.delta for c in chunks] == ["hi", ""]
        assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == ("stop", 3, 1)
        head = hostile.heads[0].decode()
        assert "authorization: bearer sk-very-secret" in head.lower()
        assert "POST /v1/chat/completions " in head
        shown = CliRunner().invoke(cli, ["config", "show"])
        assert shown.exit_code == 0 and "sk-very-secret" not in shown.output
        assert json.loads(shown.output)["examples"]["llm_backend_url"] == hostile.base_url


async def test_the_key_stays_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://user:pw-secret@127.0.0.1:{free_port()}/v1"
    handler = make_handler({"base_url": url, "api_key": "sk-very-secret"})
    with pytest.raises(BackendError) as caught:
        await chunks_of(handler, ask("hello"))
    assert "pw-secret" not in str(caught.value) and "sk-very-secret" not in str(caught.value)
    assert "cannot reach http://***@127.0.0.1:" in str(caught.value)
    await asyncio.sleep(0.1)  # the start-up check of /v1/models ran meanwhile and logged its warning
    assert "sk-very-secret" not in caplog.text and "pw-secret" not in caplog.text


async def test_the_start_up_check_warns_of_a_model_the_server_does_not_list(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inference_subnet.tasks.llm.openai_backend")
    await check_backend(config_from({"base_url": server.base_url, "model": "llama-70b"}))
    assert "does not list model 'llama-70b' (it lists inference-subnet/tiny-llm)" in caplog.text
    caplog.clear()
    await check_backend(config_from({"base_url": server.base_url}))
    assert "serves inference-subnet/tiny-llm" in caplog.text and "WARNING" not in caplog.text


def test_a_miner_without_a_backend_url_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    _, _, _, metagraph = setup_subnet(tmp_path)
    args = ["miner", "--wallet-path", str(tmp_path / "wallets"), "--wallet-name", "miner", "--metagraph-file",
            str(metagraph), "--task", "llm", "--handler", BACKEND]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --handler: examples.llm_backend_url is not set"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_llm_serve_bad_input_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = CliRunner().invoke(cli, ["llm", "serve", "--port", str(taken.getsockname()[1])])
    assert busy.exit_code == 2 and busy.output.startswith("error: --host/--port: cannot listen on 127.0.0.1:")
    missing = CliRunner().invoke(cli, ["llm", "serve", "--port", str(free_port()), "--model", str(tmp_path / "none")])
    assert missing.exit_code == 2 and missing.output.startswith(f"error: --model: cannot load {tmp_path / 'none'}")
    for result in (busy, missing):
        assert len(result.output.strip().splitlines()) == 1, result.output


# -- a real miner on a real server --------------------------------------------------------------------------


@contextlib.contextmanager
def llm_serve(port: int) -> Iterator[subprocess.Popen[str]]:
    """``inference-subnet llm serve`` in a child process, ready when ``/health`` answers."""
    proc = subprocess.Popen([sys.executable, "-m", "inference_subnet.cli.main", "llm", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"llm serve exited: {proc.stderr.read() if proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("llm serve did not become ready")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


async def signed_llm(url: str, validator: Any, miner: str, request: LLMRequest) -> httpx.Response:
    body = request.model_dump_json().encode()
    headers = btauth.sign(validator, method="POST", path=TASK.route, body=body, receiver_ss58=miner)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url + TASK.route, content=body, headers={**headers, "content-type": "application/json"})


async def test_a_miner_process_answers_signed_requests_from_the_server(tmp_path: Path, redis_url: str) -> None:
    miner, validator, _, metagraph = setup_subnet(tmp_path)
    port = free_port()
    env = {"REDIS_URL": redis_url, "ISN_SUBNET_NAME": f"llmbackend{free_port()}",
           "ISN_EXAMPLES__LLM_BACKEND_URL": f"http://127.0.0.1:{port}/v1"}
    down = {**env, "ISN_EXAMPLES__LLM_BACKEND_URL": f"http://127.0.0.1:{free_port()}/v1"}
    common: dict[str, Any] = {"wallet_path": tmp_path / "wallets", "wallet_name": "miner",
                              "metagraph_file": metagraph, "tasks": ["llm"], "extra_args": ["--handler", BACKEND]}
    request = ask("What is the capital of the moon?", max_tokens=16, temperature=0.8, seed=3)
    expected = TASK.assemble(await chunks_of(load_handler(TASK, {}), request))
    with llm_serve(port):
        served = MinerProcess(port=free_port(), env=env, **common).start()
        orphan = MinerProcess(port=free_port(), env=down, **common).start()
        try:
            await asyncio.gather(served.wait_ready_async(60), orphan.wait_ready_async(60))
            answer = await signed_llm(served.url, validator, miner.ss58_address, request)
            assert answer.status_code == 200, answer.text
            lines = [LLMChunk.model_validate_json(line) for line in answer.text.splitlines() if line.strip()]
            assert TASK.assemble(lines) == expected
            failed = await signed_llm(orphan.url, validator, miner.ss58_address, request)
            assert (failed.status_code, failed.json()["error"]) == (502, "upstream_error")
            assert "127.0.0.1" not in failed.text  # the miner's private server stays in its own log
            for _ in range(100):
                if "cannot reach" in orphan.tail(40):
                    break
                await asyncio.sleep(0.05)
            tail = orphan.tail(40)
            assert "handler of task llm failed: cannot reach http://127.0.0.1:" in tail, tail
            assert "Traceback" not in tail
        finally:
            served.stop()
            orphan.stop()
