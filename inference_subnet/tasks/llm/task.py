"""The ``llm`` task: a chat completion (messages, max tokens, temperature, seed), streamed token by token.

Scoring (``examples.llm_verify``) reads the answer by default: one teacher-forced pass of the reference
model over prompt and answer says how likely each answer token was, and :mod:`~inference_subnet.tasks.llm.
verify` checks the answer is what the model produces at the request's temperature (the argmax when greedy).
It costs a fraction of decoding and the model may sit on another server; it does not check the seed.
``replay`` also draws, from the same pass, with the reference sampler and the request's seed: exact, for
miners that run the reference handler.

Or scoring reproduces the answer (``regenerate``): the validator decodes the same conversation with the
same model, seed and temperature, and compares. Token-level agreement is the main signal (an honest miner
matches token for token, greedy or seeded); sentence-embedding similarity is a softer one for answers that drift apart
midway (a different CPU thread count can flip one near-tie). Speed scales the result a little, so a fast
wrong answer is still worth nothing.

This module imports neither torch nor transformers: a gateway can load the task without them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from inference_subnet.protocol.task import Task
from inference_subnet.scorers import cosine_similarity, token_match_rate
from inference_subnet.settings import ExamplesSettings
from inference_subnet.tasks.llm.model import FinishReason, load_embedder, load_text_generator
from inference_subnet.tasks.tiny import example_settings, speed_scaled

MAX_TOKENS = 512
MAX_STOPS = 4
"""Most stop sequences in a request (OpenAI's limit too)."""
MAX_STOP_CHARS = 64
TOKEN_WEIGHT = 0.8
"""Share of token agreement in an answer's agreement; the rest is embedding similarity."""
SIMILARITY_FLOOR = 0.5
"""Embedding cosine at or below which the soft signal gives nothing (unrelated texts sit around 0.2-0.4)."""


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class LLMRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=64, description="The conversation so far.")
    max_tokens: int = Field(64, ge=1, le=MAX_TOKENS, description="Most tokens in the reply.")
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, description="0 decodes greedily; above, samples with the request's seed."
    )
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds sampling: the same seed gives the same reply.")
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_STOPS,
        description="The reply ends before the first of these (not included); a string is one sequence.",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: object) -> object:
        """OpenAI's ``stop`` is a string or a list of strings; ``null`` means none."""
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


_TOKEN_IDS_DESCRIPTION = (
    "The completion's token ids, end-of-turn excluded (optional): a validator scoring by log-probabilities "
    "scores these when they decode to `text`, else the canonical encoding of `text`."
)


class LLMResponse(BaseModel):
    text: str = Field(max_length=200_000)
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    token_ids: list[int] | None = Field(None, max_length=2 * MAX_TOKENS, description=_TOKEN_IDS_DESCRIPTION)


class LLMChunk(BaseModel):
    """A piece of the reply; the last chunk carries the finish reason and the token counts."""

    delta: str = Field(max_length=200_000, description="The next piece of text (empty in the last chunk).")
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    token_ids: list[int] | None = Field(None, max_length=2 * MAX_TOKENS, description=_TOKEN_IDS_DESCRIPTION)


_SYSTEM = "You are a helpful assistant. Answer briefly."
_PROMPTS = (
    "Tell me a short story about a fox.",
    "What is the capital of the moon?",
    "Give me a recipe for a simple soup.",
    "Why is the sky blue?",
    "Describe the market on a Saturday morning.",
    "How do I take care of a small garden?",
    "Write two sentences about an old ship.",
    "What does a validator do in an inference network?",
    "Explain what a prime number is.",
    "Which train should I take to reach the coast?",
    "What did the librarian find on the top shelf?",
    "Summarise the weather in the valley this spring.",
)
_TEMPERATURES = (0.0, 0.6, 0.8, 1.0, 1.2)
_STOPS = ((".",), ("\n",), (" the", " a"), ("?", "!"))
STOP_SHARE = 0.25
"""Share of synthetic challenges that carry stop sequences: users send them, so a miner that ignores them
(or cuts answers short and claims a stop) must be seen in synthetic rounds too."""


class LLMTask(Task[LLMRequest, LLMResponse]):
    name = "llm"
    Request = LLMRequest
    Response = LLMResponse
    streaming = True
    Chunk = LLMChunk
    timeout = 5.0
    """Sized for the built-in tiny model and small models on a CPU (tens of times their p90 here); a subnet
    serving a large model subclasses the task with its own."""
    capacity_hint = 3_600
    """About one request a second over a 72-minute epoch: what one CPU-served small model sustains."""
    default_handler = "inference_subnet.tasks.llm.handler:make_handler"

    def synthesize(self, rng: random.Random) -> LLMRequest:
        messages = [Message(role="system", content=_SYSTEM)] if rng.random() < 0.5 else []
        messages.append(Message(role="user", content=rng.choice(_PROMPTS)))
        return LLMRequest(
            messages=messages,
            max_tokens=rng.choice((16, 32, 48, 64)),
            temperature=rng.choice(_TEMPERATURES),
            seed=rng.randrange(2**32),
            stop=list(rng.choice(_STOPS)) if rng.random() < STOP_SHARE else [],
        )

    def assemble(self, chunks: Sequence[BaseModel]) -> LLMResponse:
        parts = [LLMChunk.model_validate(c) if not isinstance(c, LLMChunk) else c for c in chunks]
        last = next((c for c in reversed(parts) if c.finish_reason is not None), None)
        return LLMResponse(
            text="".join(c.delta for c in parts),
            finish_reason=last.finish_reason if last and last.finish_reason else "length",
            prompt_tokens=(last.prompt_tokens or 0) if last else 0,
            completion_tokens=(last.completion_tokens or 0) if last else 0,
            token_ids=last.token_ids if last else None,
        )

    def score(
        self, request: LLMRequest, responses: Sequence[LLMResponse | None], timings: Sequence[float]
    ) -> list[float]:
        if all(r is None for r in responses):
            return [0.0] * len(responses)
        settings = example_settings()
        if settings.llm_verify in ("logprobs", "replay"):
            return self._score_by_logprobs(request, responses, timings, settings)
        return self._score_by_regenerating(request, responses, timings)

    def _score_by_logprobs(
        self, request: LLMRequest, responses: Sequence[LLMResponse | None], timings: Sequence[float],
        settings: ExamplesSettings,
    ) -> list[float]:
        from inference_subnet.tasks.llm.verify import reference_for, verdicts

        answers = [(r.text, r.finish_reason, tuple(r.token_ids or ())) for r in responses if r is not None]
        judged = verdicts(reference_for(settings), request, answers, replay=settings.llm_verify == "replay")
        return [
            0.0 if r is None
            else speed_scaled(judged[(r.text, r.finish_reason, tuple(r.token_ids or ()))].score, seconds,
                              self.timeout)
            for r, seconds in zip(responses, timings)
        ]

    def _score_by_regenerating(
        self, request: LLMRequest, responses: Sequence[LLMResponse | None], timings: Sequence[float]
    ) -> list[float]:
        generator = load_text_generator()
        reference = generator.chat(
            [m.model_dump() for m in request.messages],
            max_new_tokens=request.max_tokens,
            seed=request.seed,
            temperature=request.temperature,
            stop=request.stop,
        )
        # An exact reproduction needs no embedding (its similarity is 1): honest answers, the common case,
        # cost the validator one decoding and no embedder call.
        differing = sorted({r.text for r in responses if r is not None and r.text != reference.text})
        similarity = {reference.text: 1.0}
        if differing:
            vectors = load_embedder().embed([reference.text, *differing])
            for text, vector in zip(differing, vectors[1:]):
                similarity[text] = cosine_similarity(vector, vectors[0])
        reference_ids = generator.encode(reference.text)
        scores = []
        for response, seconds in zip(responses, timings):
            if response is None:
                scores.append(0.0)
                continue
            tokens = token_match_rate(generator.encode(response.text), reference_ids)
            soft = max(0.0, (similarity[response.text] - SIMILARITY_FLOOR) / (1.0 - SIMILARITY_FLOOR))
            agreement = TOKEN_WEIGHT * tokens + (1.0 - TOKEN_WEIGHT) * soft
            scores.append(speed_scaled(agreement, seconds, self.timeout))
        return scores
