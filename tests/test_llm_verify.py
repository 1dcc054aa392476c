"""The ``llm`` example verified by log-probabilities, with its real tiny model: on a fixed set of prompts an
honest miner scores at least 0.9 and another model, a truncated, shuffled or random answer at most 0.2
(greedy); sampled at 0.8, another model, random tokens, the greedy reply and an answer cut short but
claiming the budget ran out score at most 0.2, and with ``replay`` every fault does. The evidence of an
OpenAI-compatible server (the project's own, vLLM-shaped ``prompt_logprobs``) equals the in-process
model's, and a validator pointed at it scores alike (coarser when sampled: the server resolves 20 tokens);
the server's answer is bounded. ``regenerate`` stays selectable and still checks the seed."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import fmean

import pytest

from inference_subnet.settings import ExamplesSettings
from inference_subnet.tasks.llm.faults import faulty, other_model, reply
from inference_subnet.tasks.llm.model import TextGenerator, load_text_generator
from inference_subnet.tasks.llm.remote import ReferenceError, RemoteReference
from inference_subnet.tasks.llm.server import BackgroundServer, load_engine
from inference_subnet.tasks.llm.task import LLMRequest, LLMResponse, LLMTask, Message
from inference_subnet.tasks.llm.verify import LocalReference, ServerReference, verdicts

TASK = LLMTask()
PROMPTS = (
    "Why is the sky blue?",
    "Tell me a short story about a fox.",
    "Explain what a prime number is.",
    "What is the capital of the moon?",
    "Give me a recipe for a simple soup.",
    "Describe the market on a Saturday morning.",
)
ALWAYS_CAUGHT = ("other model", "truncated (claims length)", "random")
"""Faults caught at every temperature. At 0 every fault is; sampled, see ``test_what_sampling_hides``."""


def fixed_requests(temperature: float) -> list[LLMRequest]:
    return [LLMRequest(messages=[Message(role="user", content=p)], max_tokens=64, temperature=temperature, seed=i)
            for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def generator() -> TextGenerator:
    return load_text_generator()


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> TextGenerator:
    return other_model(tmp_path_factory.mktemp("other-llm"))


def scores_by_fault(generator: TextGenerator, other: TextGenerator, temperature: float) -> dict[str, list[float]]:
    rng = random.Random(11)
    table: dict[str, list[float]] = {}
    for request in fixed_requests(temperature):
        honest = reply(generator, request)
        answers = {"honest": honest, **faulty(generator, other, request, honest, rng)}
        scores = TASK.score(request, list(answers.values()), [0.1] * len(answers))
        for name, score in zip(answers, scores):
            table.setdefault(name, []).append(score)
    return table


def test_greedy_honest_scores_high_and_every_fault_low(generator: TextGenerator, other: TextGenerator) -> None:
    table = scores_by_fault(generator, other, 0.0)
    assert min(table.pop("honest")) >= 0.9
    for name, scores in table.items():
        assert max(scores) <= 0.2, (name, scores)


def test_sampled_honest_scores_high_and_detectable_faults_low(generator: TextGenerator, other: TextGenerator) -> None:
    table = scores_by_fault(generator, other, 0.8)
    assert min(table["honest"]) >= 0.9, table["honest"]
    for name in (*ALWAYS_CAUGHT, "greedy instead of sampled"):
        assert fmean(table[name]) <= 0.2, (name, table[name])
        assert max(table[name]) <= 0.5, (name, table[name])


def test_what_sampling_hides(generator: TextGenerator, other: TextGenerator) -> None:
    """Sampled, an answer cut short that claims the model stopped is itself a likely sample whenever the
    model's end-of-turn is likely there (the tiny model's is, everywhere); its shuffled tokens are nearly as
    likely as in order because that model barely reads its context. Seed replay (``llm_verify = "replay"``)
    or regeneration catch both; plain log-probabilities cannot, and say so."""
    table = scores_by_fault(generator, other, 0.8)
    assert fmean(table["truncated (claims stop)"]) >= 0.5
    assert fmean(table["shuffled"]) >= 0.5


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_replay_with_the_seed_catches_what_sampling_hides(
    generator: TextGenerator, other: TextGenerator, monkeypatch: pytest.MonkeyPatch, temperature: float
) -> None:
    """``replay``: the same forward pass, drawn from with the request's seed, repeats an honest miner's
    every token, so every fault scores low, another seed's honest sample too."""
    monkeypatch.setenv("ISN_EXAMPLES__LLM_VERIFY", "replay")
    rng = random.Random(11)
    for request in fixed_requests(temperature):
        honest = reply(generator, request)
        answers = {"honest": honest, **faulty(generator, other, request, honest, rng)}
        if temperature > 0:
            answers["another seed"] = reply(generator, request.model_copy(update={"seed": request.seed + 1}))
        scores = dict(zip(answers, TASK.score(request, list(answers.values()), [0.1] * len(answers))))
        assert scores.pop("honest") >= 0.9
        assert max(scores.values()) <= 0.2, sorted(scores.items())


@pytest.mark.parametrize("temperature", [0.0, 0.8])
async def test_the_framework_s_wrong_miner_scores_low(temperature: float) -> None:
    """The local subnet's ``wrong`` behaviour (every chunk corrupted, token ids included) through the real
    handler, scored by the default verification."""
    from inference_subnet.protocol.handlers import load_handler

    for request in fixed_requests(temperature)[:3]:
        answers = []
        for behaviour in ("honest", "wrong"):
            handler = load_handler(TASK, {"behaviour": behaviour, "seed": 1})
            answers.append(TASK.assemble([chunk async for chunk in handler(request)]))  # type: ignore[union-attr]
        honest, wrong = TASK.score(request, answers, [0.1, 0.1])
        assert honest >= 0.9 and wrong <= 0.2, (honest, wrong)


def test_token_ids_that_do_not_spell_the_text_are_ignored(generator: TextGenerator) -> None:
    request = fixed_requests(0.0)[0]
    honest = reply(generator, request)
    assert honest.token_ids
    lying = honest.model_copy(update={"token_ids": list(reversed(honest.token_ids))})
    broken = honest.model_copy(update={"token_ids": [10**9]})
    scores = TASK.score(request, [honest, lying, broken, honest.model_copy(update={"token_ids": None})], [0.1] * 4)
    assert scores[0] >= 0.9
    assert scores[1] == scores[2] == scores[3], "ids that do not decode to the text fall back to its encoding"


def test_padding_past_the_budget_scores_nothing_without_reading_it(generator: TextGenerator) -> None:
    request = fixed_requests(0.8)[0].model_copy(update={"max_tokens": 16})
    honest = reply(generator, request)
    padded = LLMResponse(text=honest.text + " filler" * 200, finish_reason="length")
    assert TASK.score(request, [padded], [0.1]) == [0.0]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(load_engine()) as running:
        yield running


def test_server_evidence_equals_the_in_process_model(generator: TextGenerator, server: BackgroundServer) -> None:
    request = fixed_requests(0.8)[1]
    honest = reply(generator, request)
    prompt = generator.chat_prompt([m.model_dump() for m in request.messages])
    local, local_end = generator.token_logprobs(prompt, honest.token_ids or [], temperature=0.0)
    client = RemoteReference(server.base_url, model=generator.name, top=20)
    try:
        remote, remote_end = client.token_logprobs(prompt, honest.token_ids or [], end_id=min(generator.eos_ids),
                                                   vocab_size=len(generator.tokenizer), temperature=0.0)
    finally:
        client.close()
    assert [t.rank for t in remote] == [t.rank for t in local]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(remote, local)) < 1e-3


def test_a_validator_pointed_at_a_server_scores_like_one_holding_the_model(
    generator: TextGenerator, other: TextGenerator, server: BackgroundServer
) -> None:
    """Greedy, the server's ranks are exact, so the scores are the same. Sampled, the server resolves only
    its top 20 tokens, so its evidence is coarser: honest answers still pass and the budget and argmax
    cheats are still caught, but random text and another model hide in the tiny model's flat tail (20 of
    its 1024 tokens hold a few percent of the mass; a real model's top 20 hold most of it)."""
    settings = ExamplesSettings(llm_reference_url=server.base_url, llm_reference_model=generator.name)
    remote, local = ServerReference(settings), LocalReference()
    rng = random.Random(5)
    for temperature in (0.0, 0.8):
        for request in fixed_requests(temperature)[:3]:
            honest = reply(generator, request)
            answers = {"honest": honest, **faulty(generator, other, request, honest, rng)}
            keys = {name: (r.text, r.finish_reason, tuple(r.token_ids or ())) for name, r in answers.items()}
            by_server, by_model = verdicts(remote, request, list(keys.values())), verdicts(local, request,
                                                                                            list(keys.values()))
            score = {name: by_server[key].score for name, key in keys.items()}
            assert score.pop("honest") >= 0.9
            if temperature == 0:
                assert all(by_server[k].score == by_model[k].score for k in keys.values())
                assert max(score.values()) <= 0.2, score
            else:
                assert score["truncated (claims length)"] <= 0.2 and score["greedy instead of sampled"] <= 0.2


HOSTILE_BODIES = {
    "endless": b"x" * 10_000_000,
    "shape": json.dumps({"choices": [{"text": "hi"}]}).encode(),
    "count": json.dumps({"choices": [{"prompt_logprobs": [None]}]}).encode(),
}


class _Hostile(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the standard library's spelling
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = HOSTILE_BODIES[self.server.mode]  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("mode", "message"), [("endless", "more than"), ("shape", "did not answer"),
                                               ("count", "entries for")])
def test_a_server_answering_too_much_or_the_wrong_shape_is_an_error_not_a_score(mode: str, message: str) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.mode = mode  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client = RemoteReference(f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", max_bytes=1_000_000,
                             timeout=5.0)
    try:
        with pytest.raises(ReferenceError, match=message):
            client.token_logprobs([1, 2, 3], [4, 5], end_id=0, vocab_size=10, temperature=0.8)
    finally:
        client.close()
        httpd.shutdown()
        httpd.server_close()


def test_an_unreachable_server_is_an_error_naming_it_without_its_password() -> None:
    client = RemoteReference("http://user:hunter2@127.0.0.1:9/v1", model="m", timeout=2.0)
    with pytest.raises(ReferenceError, match="127.0.0.1:9") as caught:
        client.token_logprobs([1, 2], [3], end_id=0, vocab_size=10, temperature=0.0)
    client.close()
    assert "hunter2" not in str(caught.value)


def test_regeneration_is_still_selectable_and_checks_the_seed(
    generator: TextGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = fixed_requests(0.8)[2]
    honest = reply(generator, request)
    reseeded = reply(generator, request.model_copy(update={"seed": request.seed + 1}))
    by_logprobs = TASK.score(request, [honest, reseeded], [0.1, 0.1])
    assert min(by_logprobs) >= 0.9, "any honest sample is a right answer to log-probabilities"
    monkeypatch.setenv("ISN_EXAMPLES__LLM_VERIFY", "regenerate")
    by_regenerating = TASK.score(request, [honest, reseeded], [0.1, 0.1])
    assert by_regenerating[0] >= 0.9 and by_regenerating[1] <= 0.3


def test_the_key_of_the_reference_server_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from inference_subnet.cli.main import app

    monkeypatch.setenv("ISN_EXAMPLES__LLM_REFERENCE_KEY", "sk-very-secret-value")
    monkeypatch.setenv("ISN_EXAMPLES__LLM_REFERENCE_URL", "http://user:pw-secret@127.0.0.1:8000/v1")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "sk-very-secret-value" not in result.output and "pw-secret" not in result.output
    assert "llm_reference_key" in result.output


async def test_synthetic_challenges_carry_stops_and_honest_answers_to_them_score_high() -> None:
    """A share of synthetic challenges ask for stop sequences, as users do; the honest handler's answers to
    them verify, and the same answer run past the stop sequence scores nothing."""
    from inference_subnet.protocol.handlers import load_handler

    rng = random.Random(5)
    challenges = [TASK.synthesize(rng) for _ in range(40)]
    with_stops = [c for c in challenges if c.stop]
    assert 4 <= len(with_stops) <= 20
    handler = load_handler(TASK, {"behaviour": "honest", "seed": 1})
    stopped = 0
    for request in with_stops[:6]:
        honest = TASK.assemble([chunk async for chunk in handler(request)])  # type: ignore[union-attr]
        assert not any(stop in honest.text for stop in request.stop)
        # The token ids the model wrote: the last ones run past the cut, into the stop sequence.
        [score] = TASK.score(request, [honest], [0.1])
        assert score >= 0.9, (request.stop, honest.text, score)
        if honest.finish_reason == "stop":
            stopped += 1
            past = honest.model_copy(update={"text": honest.text + request.stop[0] + " more", "token_ids": None})
            assert TASK.score(request, [past], [0.1]) == [0.0]
            # Ids that spell the text and then something that is no stop sequence are not taken as written.
            other = honest.model_copy(update={"token_ids": [*honest.token_ids, *honest.token_ids]})
            assert TASK.score(request, [other], [0.1])[0] <= TASK.score(request, [honest], [0.1])[0]
    assert stopped >= 1
