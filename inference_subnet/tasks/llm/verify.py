"""Scoring ``llm`` answers from the reference model's log-probabilities of them (``examples.llm_verify =
"logprobs"``): the glue between the task, the reference (in process, or a server) and the pure rules of
:mod:`inference_subnet.scorers.logprobs`.

Tokenization: answers arrive as text, and decoding then re-encoding text need not give back the ids the
miner sampled: a sampled pair of tokens may spell what the tokenizer writes as one, and a token holding
half a character decodes to U+FFFD, which re-encodes as other bytes altogether. So an answer may carry its
``token_ids`` (the reference miner sends them): when they decode to exactly the answer's text they are
what is scored; a miner gains nothing by choosing them, since any ids that spell the text are a reading of
that same text and the model judges each in its context. Otherwise the validator scores the canonical
encoding of the text, the one it can recompute: an honest answer whose sampled ids were not canonical then
loses a little (a merged token scored in a context the model did not see), and one with broken characters
more. Real models rarely sample either; the tiny built-in model, nearly uniform, often does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from inference_subnet.scorers.logprobs import (
    TokenEvidence,
    Verdict,
    padded,
    replay_agreement,
    replay_score,
    verify,
)
from inference_subnet.settings import ExamplesSettings
from inference_subnet.tasks.tiny import ProcessCache

_REMOTES = ProcessCache()


class Reference(Protocol):
    """Where token evidence comes from: the model in this process, or a server holding it."""

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def evidence(self, prompt: Sequence[int], completion: Sequence[int], *, temperature: float,
                 max_tokens: int) -> tuple[list[TokenEvidence], TokenEvidence]: ...


class LocalReference:
    """The model loaded in the validator's process (``examples.llm_model``)."""

    def __init__(self, model: str | None = None) -> None:
        from inference_subnet.tasks.llm.model import load_text_generator

        self.generator = load_text_generator(model)

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.generator.chat_prompt(messages)

    def encode(self, text: str) -> list[int]:
        return self.generator.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.generator.text(ids)

    def evidence(self, prompt: Sequence[int], completion: Sequence[int], *, temperature: float,
                 max_tokens: int) -> tuple[list[TokenEvidence], TokenEvidence]:
        return self.generator.token_logprobs(prompt, completion, temperature=temperature,
                                             max_new_tokens=max_tokens)

    def replay(self, prompt: Sequence[int], completion: Sequence[int], *, temperature: float, max_tokens: int,
               seed: int) -> tuple[list[TokenEvidence], TokenEvidence, list[int]]:
        """The evidence and, from the same pass, the sampler's draws for ``seed``."""
        reading = self.generator.read(prompt, completion, temperature=temperature, max_new_tokens=max_tokens,
                                      seed=seed)
        assert reading.replayed is not None
        return reading.tokens, reading.end, reading.replayed


class ServerReference:
    """A server holding the model (``examples.llm_reference_url``); only its tokenizer is loaded here."""

    def __init__(self, settings: ExamplesSettings) -> None:
        from inference_subnet.tasks.llm.model import load_chat_tokenizer
        from inference_subnet.tasks.llm.remote import RemoteReference

        assert settings.llm_reference_url is not None
        self.tokenizer = load_chat_tokenizer(settings.llm_model)
        self.end_id = min(self.tokenizer.eos_ids) if self.tokenizer.eos_ids else 0
        if self.tokenizer.tokenizer.eos_token_id is not None:
            self.end_id = self.tokenizer.tokenizer.eos_token_id
        self.client = RemoteReference(
            settings.llm_reference_url,
            model=settings.llm_reference_model or settings.llm_model,
            api_key=settings.llm_reference_key,
            top=settings.llm_reference_top,
            timeout=settings.llm_reference_timeout,
        )

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenizer.chat_prompt(messages)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def evidence(self, prompt: Sequence[int], completion: Sequence[int], *, temperature: float,
                 max_tokens: int) -> tuple[list[TokenEvidence], TokenEvidence]:
        return self.client.token_logprobs(prompt, completion, end_id=self.end_id,
                                          vocab_size=self.tokenizer.vocab_size, temperature=temperature)


def reference_for(settings: ExamplesSettings) -> Reference:
    """The configured reference, once per process."""
    if settings.llm_reference_url and settings.llm_verify != "replay":
        key = f"{settings.llm_reference_url}|{settings.llm_reference_model or settings.llm_model}"
        return _REMOTES.get(key, lambda: ServerReference(settings))
    return LocalReference(settings.llm_model)


Answer = tuple[str, str, tuple[int, ...]]
"""An answer as scored: its text, finish reason and the token ids it claims (empty: none)."""


def completion_ids(reference: Reference, text: str, claimed: Sequence[int], *, stops: Sequence[str] = ()
                   ) -> list[int]:
    """The ids to score: the claimed ones when they spell ``text`` exactly, else ``text``'s encoding.

    ``stops``: the request's stop sequences, when the answer claims to have ended at one. A server cuts the
    text where the stop sequence begins, often inside a token, and sends the ids it generated: those are
    taken when they spell ``text`` followed by one of the stop sequences. Re-encoding a cut text would split
    its end into tokens the model never wrote."""
    if claimed and len(claimed) <= 4 * len(text) + 4 and min(claimed) >= 0:
        try:
            whole = reference.decode(claimed)
            if whole == text:
                return list(claimed)
            if whole.startswith(text) and any(whole.startswith(stop, len(text)) for stop in stops if stop):
                return list(claimed)
        except (IndexError, OverflowError, TypeError, ValueError):  # ids outside the vocabulary
            pass
    return reference.encode(text)


def verdicts(reference: Reference, request: Any, answers: Sequence[Answer], *, replay: bool = False
             ) -> dict[Answer, Verdict]:
    """The verdict on each distinct answer to ``request`` (an ``LLMRequest``). With ``replay`` (a
    :class:`LocalReference` only), the reference's sampler must also draw the answer's tokens with the
    request's seed: the verdict's score is the lower of the two."""
    prompt = reference.prompt_ids([m.model_dump() for m in request.messages])
    out: dict[Answer, Verdict] = {}
    for text, finish, claimed in dict.fromkeys(answers):
        completion = completion_ids(reference, text, claimed, stops=request.stop if finish == "stop" else ())
        if ignored := next((stop for stop in request.stop if stop and stop in text), None):
            out[(text, finish, claimed)] = Verdict(0.0, len(completion), 0.0, 0.0, False,
                                                   f"the answer goes on past the stop sequence {ignored!r}")
            continue
        if padded(len(completion), request.max_tokens):
            out[(text, finish, claimed)] = Verdict(0.0, len(completion), 0.0, 0.0, False,
                                          f"{len(completion)} tokens for a budget of {request.max_tokens}: padded")
            continue
        if replay and isinstance(reference, LocalReference):
            tokens, end, drawn = reference.replay(prompt, completion, temperature=request.temperature,
                                                  max_tokens=request.max_tokens, seed=request.seed)
        else:
            drawn = None
            tokens, end = reference.evidence(prompt, completion, temperature=request.temperature,
                                             max_tokens=request.max_tokens)
        verdict = verify(tokens, end, finish_reason=finish, max_tokens=request.max_tokens,
                         temperature=request.temperature, stop_sequences=bool(request.stop))
        if drawn is not None:
            agreement = replay_agreement(completion, drawn, end_ids=reference.generator.eos_ids,
                                         finish_reason=finish, max_tokens=request.max_tokens)
            replayed = replay_score(agreement)
            if replayed < verdict.score:
                verdict = replace(verdict, score=replayed,
                                  reason=f"the seed's draws agree on {agreement:.0%} of positions")
        out[(text, finish, claimed)] = verdict
    return out
