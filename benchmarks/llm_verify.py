"""What verifying one ``llm`` answer costs a validator, by log-probabilities against re-generation, and what
each catches: the same requests, answers and model in one run.

Run: ``python3 benchmarks/llm_verify.py``. For each of ``PROMPTS`` at temperature 0 and 0.8 (64 tokens):

  * miner: the reference model decodes the reply (the baseline: what the answer cost);
  * validator: ``LLMTask.score`` of that one answer, with a fresh task each time, by
    ``examples.llm_verify = "logprobs"`` (one teacher-forced pass in process), by ``logprobs`` against
    the project's OpenAI-compatible server on 127.0.0.1 (``examples.llm_reference_url``: one
    ``prompt_logprobs`` call), by ``replay`` (the same pass, drawn from with the request's seed) and by
    ``regenerate``; each as a share of the miner's time (target <= 0.15
    for logprobs);
  * quality: the mean (and worst) score of honest answers and of faulty ones (another model, truncated,
    shuffled, random, greedy instead of sampled: :mod:`inference_subnet.tasks.llm.faults`) per method.

Results are printed and written to ``benchmarks/results/llm_verify.json``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from inference_subnet.tasks.llm.faults import faulty, other_model, reply
from inference_subnet.tasks.llm.model import load_text_generator
from inference_subnet.tasks.llm.server import BackgroundServer, load_engine
from inference_subnet.tasks.llm.task import LLMRequest, LLMTask, Message

RESULTS = Path(__file__).resolve().parent / "results" / "llm_verify.json"
PROMPTS = (
    "Why is the sky blue?",
    "Tell me a short story about a fox.",
    "Explain what a prime number is.",
    "What is the capital of the moon?",
    "Give me a recipe for a simple soup.",
    "Describe the market on a Saturday morning.",
    "How do I take care of a small garden?",
    "Write two sentences about an old ship.",
)
TEMPERATURES = (0.0, 0.8)
MAX_TOKENS = 64
REPEATS = 3
"""Timed scorings per answer and method (the median is kept)."""
MAX_SECONDS = 240.0


def _method(name: str, url: str) -> None:
    os.environ["ISN_EXAMPLES__LLM_VERIFY"] = {"regenerate": "regenerate", "replay": "replay"}.get(name, "logprobs")
    if name == "logprobs via server":
        os.environ["ISN_EXAMPLES__LLM_REFERENCE_URL"] = url
    else:
        os.environ.pop("ISN_EXAMPLES__LLM_REFERENCE_URL", None)


METHODS = ("logprobs", "replay", "logprobs via server", "regenerate")


def main() -> None:
    console = Console(width=170)
    generator = load_text_generator()
    with tempfile.TemporaryDirectory() as folder, BackgroundServer(load_engine()) as server:
        other = other_model(Path(folder))
        os.environ["ISN_EXAMPLES__LLM_REFERENCE_MODEL"] = generator.name
        rng = random.Random(2024)
        miner: list[float] = []
        cost: dict[str, list[float]] = {m: [] for m in METHODS}
        quality: dict[tuple[float, str, str], list[float]] = {}
        deadline = time.monotonic() + MAX_SECONDS
        for method in METHODS:  # warm every path once: models, embedder, the server's first call
            _method(method, server.base_url)
            warm = LLMRequest(messages=[Message(role="user", content="hi")], max_tokens=8, temperature=0.8)
            LLMTask().score(warm, [reply(generator, warm), reply(other, warm)], [0.1, 0.1])
        for temperature in TEMPERATURES:
            for i, prompt in enumerate(PROMPTS):
                request = LLMRequest(messages=[Message(role="user", content=prompt)], max_tokens=MAX_TOKENS,
                                     temperature=temperature, seed=i)
                t0 = time.perf_counter()
                honest = reply(generator, request)
                miner.append(time.perf_counter() - t0)
                answers = {"honest": honest, **faulty(generator, other, request, honest, rng)}
                for method in METHODS:
                    _method(method, server.base_url)
                    runs = []
                    for _ in range(REPEATS):
                        t0 = time.perf_counter()
                        LLMTask().score(request, [honest], [miner[-1]])
                        runs.append(time.perf_counter() - t0)
                    cost[method].append(statistics.median(runs))
                    scores = LLMTask().score(request, list(answers.values()), [0.1] * len(answers))
                    for name, score in zip(answers, scores):
                        quality.setdefault((temperature, name, method), []).append(score)
                if time.monotonic() > deadline:
                    break

    miner_p50 = statistics.median(miner)
    costs = {m: {"score_ms": statistics.median(v) * 1e3, "share": statistics.median(v) / miner_p50}
             for m, v in cost.items()}
    table = Table(title=f"scoring one llm answer ({len(miner)} answers of up to {MAX_TOKENS} tokens, "
                        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}): "
                        f"miner decodes in {miner_p50 * 1e3:.1f} ms (p50, the baseline)")
    for column in ("method", "score ms (p50)", "share of the miner's time"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, figures in costs.items():
        table.add_row(method, f"{figures['score_ms']:.1f}", f"{figures['share']:.3f}")
    console.print(table)

    faults = list(dict.fromkeys(name for _, name, _ in quality))
    for temperature in TEMPERATURES:
        scores = Table(title=f"mean score (worst in brackets) at temperature {temperature:g}: honest should be "
                             f">= 0.9, every fault <= 0.2")
        scores.add_column("answer")
        for method in METHODS:
            scores.add_column(method, justify="right")
        for name in faults:
            row = [quality.get((temperature, name, m)) for m in METHODS]
            if not any(row):
                continue
            worst = min if name == "honest" else max
            scores.add_row(name, *(f"{statistics.fmean(v):.2f} ({worst(v):.2f})" if v else "-" for v in row))
        console.print(scores)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "answers": len(miner), "max_tokens": MAX_TOKENS, "miner_p50_ms": miner_p50 * 1e3,
        "cost": costs,
        "quality": [{"temperature": t, "answer": n, "method": m, "mean": statistics.fmean(v), "min": min(v),
                     "max": max(v)} for (t, n, m), v in quality.items()],
    }, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
