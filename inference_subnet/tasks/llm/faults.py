"""Wrong ``llm`` answers that look right: what a validator's verification must catch, for tests and
benchmarks alike.

Each turns an honest reply (text, finish reason, token ids) into a faulty one that is still a valid
``LLMResponse``: another model's reply, the reply cut short, its tokens shuffled, random tokens, or (for a
sampled request) the greedy reply, all with token ids that spell their text, as a careful cheat would send.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from inference_subnet.tasks.llm.model import FinishReason, TextGenerator, build_tiny_llm, load_text_generator
from inference_subnet.tasks.llm.task import LLMRequest, LLMResponse

OTHER_SEED = 7
"""Seed of the other tiny model: same architecture, same tokenizer, other weights."""


def other_model(cache: Path, seed: int = OTHER_SEED) -> TextGenerator:
    """A differently seeded tiny model, built into ``cache`` and loaded like any local model."""
    folder = cache / f"tiny-llm-other-{seed}"
    if not (folder / "config.json").exists():
        build_tiny_llm(folder, seed=seed)
    return load_text_generator(str(folder))


def reply(generator: TextGenerator, request: LLMRequest, *, temperature: float | None = None) -> LLMResponse:
    """``generator``'s reply to ``request`` as a miner sends it (token ids included)."""
    out = generator.chat([m.model_dump() for m in request.messages], max_new_tokens=request.max_tokens,
                         seed=request.seed, temperature=request.temperature if temperature is None else temperature)
    return LLMResponse(text=out.text, finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
                       completion_tokens=len(out.token_ids), token_ids=list(out.token_ids))


def _from_ids(generator: TextGenerator, ids: list[int], finish: FinishReason) -> LLMResponse:
    return LLMResponse(text=generator.text(ids), finish_reason=finish, completion_tokens=len(ids), token_ids=ids)


def faulty(generator: TextGenerator, other: TextGenerator, request: LLMRequest, honest: LLMResponse,
           rng: random.Random) -> Mapping[str, LLMResponse]:
    """The faulty answers to ``request``, by name."""
    ids = list(honest.token_ids or generator.encode(honest.text))
    half = ids[: len(ids) // 2]
    shuffled = ids[:]
    while len(shuffled) > 1 and shuffled == ids:
        rng.shuffle(shuffled)
    vocabulary = len(generator.tokenizer)
    specials = generator.eos_ids | set(generator.tokenizer.all_special_ids)
    noise = [t for t in (rng.randrange(vocabulary) for _ in range(4 * max(len(ids), 4))) if t not in specials]
    faults: dict[str, LLMResponse] = {
        "other model": reply(other, request),
        "truncated (claims stop)": _from_ids(generator, half, "stop"),
        "truncated (claims length)": _from_ids(generator, half, "length"),
        "shuffled": _from_ids(generator, shuffled, honest.finish_reason),
        "random": _from_ids(generator, noise[: max(len(ids), 4)], honest.finish_reason),
    }
    if request.temperature > 0:
        faults["greedy instead of sampled"] = reply(generator, request, temperature=0.0)
    return faults

