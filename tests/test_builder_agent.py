"""``inference-subnet new --idea``: the draft-and-repair loop against a real HTTP endpoint on 127.0.0.1 that
replays recorded chat completions: an invalid spec (its problems must go back to the model), a valid spec
whose generated tests fail (their output must go back), and the repaired spec that passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inference_subnet.builder.agent import extract_toml
from inference_subnet.builder.llm import completions_url

KEY = "sk-test-7f3a9c2e51d04b8e"

SPEC_TEMPLATE = '''name = "tally"
description = "Miners count vowels."

[[tasks]]
name = "vowels"
{timeout_key} = 2.0

[tasks.request]
text = {{ type = "str", min_length = 1, max_length = 80 }}

[tasks.response]
count = {{ type = "int", ge = 0 }}

[tasks.reference]
kind = "solver"
code = \'\'\'
{solver}
\'\'\'

[[tasks.score]]
scorer = "{scorer}"
field = "count"
'''
INVALID = SPEC_TEMPLATE.format(solver='return {"count": sum(c in "aeiou" for c in request.text)}',
                               scorer="levenshtein", timeout_key="tmeout")
FAILING = SPEC_TEMPLATE.format(solver='return {"vowels": sum(c in "aeiou" for c in request.text)}',
                               scorer="exact_match", timeout_key="timeout")
FIXED = SPEC_TEMPLATE.format(solver='return {"count": sum(c in "aeiou" for c in request.text)}',
                             scorer="exact_match", timeout_key="timeout")


def completion(content: str) -> dict[str, Any]:
    """A chat completion as OpenAI-compatible servers record it."""
    return {
        "id": "chatcmpl-replay", "object": "chat.completion", "created": 1735689600, "model": "replay-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 240, "total_tokens": 1440},
    }


RECORDED = [
    completion(f"Here is a first draft.\n\n```toml\n{INVALID}```\n"),
    completion(f"```toml\n{FAILING}```"),
    completion(f"Fixed: the solver now returns `count`.\n```toml\n{FIXED}```\nGood luck!"),
]


@dataclass
class Replay:
    """A chat-completions endpoint that answers with recorded completions in order."""

    answers: list[tuple[int, dict[str, Any]]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def replay() -> Iterator[Replay]:
    state = Replay(answers=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.requests.append(body)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            status, answer = (state.answers.pop(0) if self.path == "/v1/chat/completions" and state.answers
                              else (404, {"error": {"message": f"no route {self.path}"}}))
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_new(tmp_path: Path, *args: str, url: str | None, stdin: str = "", timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISN_BUILDER__")}
    env |= {"COLUMNS": "200", "ISN_LOG_LEVEL": "DEBUG"}
    if url is not None:
        env |= {"ISN_BUILDER__BASE_URL": url, "ISN_BUILDER__API_KEY": KEY, "ISN_BUILDER__MODEL": "replay-1"}
    return subprocess.run([sys.executable, "-m", "inference_subnet.cli.main", "new", *args], cwd=tmp_path, env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def test_an_invalid_draft_and_failing_tests_are_repaired_round_by_round(tmp_path: Path, replay: Replay) -> None:
    replay.answers = [(200, c) for c in RECORDED]
    done = run_new(tmp_path, "--idea", "a subnet where miners count vowels", "--yes", url=replay.url)
    output = done.stdout + done.stderr
    flat = " ".join(output.split())
    assert done.returncode == 0, output
    assert KEY not in output, "the API key must never be printed or logged"

    # Each round is reported as it ends.
    assert "round 1/4: invalid spec - 2 problem(s):" in flat
    assert "draft.toml:6: tasks[0].tmeout: unknown key (did you mean timeout?)" in flat
    assert "draft.toml:21: tasks[0].score[0].scorer: unknown scorer 'levenshtein'" in flat
    assert "round 2/4: tests failed" in flat
    assert "round 3/4: tests passed - 6 passed" in flat
    assert "generated tests: 6 passed" in flat

    # What went back to the model: the schema problems, then the failing tests' output.
    assert len(replay.requests) == 3
    assert all(h["authorization"] == f"Bearer {KEY}" for h in replay.headers)
    assert all(r["model"] == "replay-1" for r in replay.requests)
    first, second, third = (r["messages"] for r in replay.requests)
    assert first[0]["role"] == "system" and "levenshtein" not in first[0]["content"]
    assert "a subnet where miners count vowels" in first[1]["content"]
    assert len(second) == 4 and "unknown scorer 'levenshtein'" in second[-1]["content"]
    assert "draft.toml:6: tasks[0].tmeout" in second[-1]["content"]
    assert second[-2] == {"role": "assistant", "content": RECORDED[0]["choices"][0]["message"]["content"]}
    assert len(third) == 6 and "fails its own tests" in third[-1]["content"]
    assert "test_baseline_miner_scores_high[vowels]" in third[-1]["content"]

    # The project on disk (named after the spec, as no --out was given) is the repaired one, green on its own.
    project = tmp_path / "tally"
    assert (project / "tally/spec.toml").read_text() == FIXED
    assert '"count": sum' in (project / "tally/reference.py").read_text()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]


def test_rounds_are_bounded_and_the_last_draft_is_kept(tmp_path: Path, replay: Replay) -> None:
    replay.answers = [(200, RECORDED[0]), (200, RECORDED[0])]
    done = run_new(tmp_path, "--idea", "vowels", "--out", "tally", "--yes", "--max-rounds", "2", url=replay.url)
    flat = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, flat
    assert "round 1/2: invalid spec" in flat and "round 2/2: invalid spec" in flat
    assert "no passing project after 2 round(s) (last: invalid spec)" in flat
    assert len(replay.requests) == 2
    assert (tmp_path / "tally.draft.toml").read_text() == INVALID
    assert not (tmp_path / "tally").exists()


def test_the_draft_is_shown_and_can_be_declined(tmp_path: Path, replay: Replay) -> None:
    replay.answers = [(200, RECORDED[2])]
    done = run_new(tmp_path, "--idea", "vowels", stdin="n\n", url=replay.url)
    flat = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1
    assert 'name = "tally"' in flat and "Generate the project from this spec?" in flat
    assert "round 1/4: declined" in flat and not (tmp_path / "tally").exists()
    # With no --out, the project (and a kept draft) are named after the drafted spec.
    assert (tmp_path / "tally.draft.toml").read_text() == FIXED


def test_endpoint_errors_are_reported_without_the_key(tmp_path: Path, replay: Replay) -> None:
    replay.answers = [(401, {"error": {"message": "invalid api key"}})]
    done = run_new(tmp_path, "--idea", "vowels", "--out", "tally", "--yes", url=replay.url)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "round 1/4: llm error" in " ".join(output.split())
    assert "answered 401" in output and KEY not in output


def test_without_an_endpoint_it_says_so_and_points_to_a_spec(tmp_path: Path) -> None:
    done = run_new(tmp_path, "--idea", "vowels", url=None)
    flat = " ".join(done.stderr.split())
    assert done.returncode == 2
    assert "no LLM endpoint is configured" in flat and "ISN_BUILDER__BASE_URL" in flat
    assert "examples/specs/textops.toml" in flat and "inference-subnet new SPEC.toml" in flat


def test_replies_and_urls_are_read_the_way_servers_write_them() -> None:
    assert extract_toml("text\n```toml\na = 1\n```\nmore") == "a = 1\n"
    assert extract_toml("```\na = 2\n```") == "a = 2\n"
    assert extract_toml("a = 3") == "a = 3\n"
    assert completions_url("https://api.example.com/v1") == "https://api.example.com/v1/chat/completions"
    assert completions_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/v1/chat/completions"
    assert completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
