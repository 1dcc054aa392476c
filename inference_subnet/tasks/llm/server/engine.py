"""The model work behind the server: seeded decoding streamed piece by piece, cut at stop sequences as the
miner and the validator cut them (:func:`~inference_subnet.tasks.llm.model.with_stops`), and teacher-forced
logprobs of a given token sequence.

Everything that touches the model runs on one dedicated thread, as in the reference miner: concurrent
requests interleave token by token instead of fighting over the CPU, and the event loop stays free to
accept and stream. Decoding is the very loop the reference miner and the validator run
(:meth:`TextGenerator.decode`), so the server's text for a (prompt, seed, temperature) is theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from inference_subnet.tasks.llm.model import FinishReason, TextGenerator, with_stops

_END = object()


@dataclass
class Outcome:
    """A finished decoding's totals, filled in as :meth:`Engine.stream` runs."""

    prompt_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    text: str = ""


@dataclass(frozen=True)
class Position:
    """One token of a teacher-forced sequence: its logprob given the tokens before it, its 1-based rank in
    that distribution, and the ``top`` most likely tokens there as (id, logprob), best first."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


class Engine:
    """A loaded :class:`TextGenerator` served under ``name``."""

    def __init__(self, generator: TextGenerator, name: str) -> None:
        self.generator = generator
        self.name = name
        self.context = generator.context
        self.vocab_size = int(generator.model.config.vocab_size)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isn-llm-server")

    async def _run(self, work: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    # -- prompts ---------------------------------------------------------------------------------------------
    async def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return list(await self._run(self.generator.chat_prompt, messages))

    async def text_ids(self, text: str) -> list[int]:
        return list(await self._run(self.generator.encode, text))

    async def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text (special tokens spelled out; half a character reads as U+FFFD)."""
        return list(await self._run(self._texts, list(ids)))

    async def text_of(self, ids: Sequence[int]) -> str:
        """The text of a token sequence, as a reply would read."""
        return str(await self._run(self.generator.text, list(ids)))

    def _texts(self, ids: list[int]) -> list[str]:
        tokenizer = self.generator.tokenizer
        with self.generator._tokenizer_lock:  # shared with every other user of the loaded model
            return [str(tokenizer.decode([i], skip_special_tokens=False)) for i in ids]

    # -- decoding --------------------------------------------------------------------------------------------
    async def stream(
        self, prompt_ids: list[int], *, max_tokens: int, seed: int, temperature: float, stops: Sequence[str],
        outcome: Outcome,
    ) -> AsyncIterator[str]:
        """Text pieces of the reply to ``prompt_ids``, cut at the first stop sequence; ``outcome`` holds the
        totals once the iteration ends. Closing the iterator early stops the decoding."""
        outcome.prompt_tokens = len(prompt_ids)
        if max_tokens < 1:
            return
        generator = self.generator
        decoding = await self._run(
            lambda: with_stops(
                generator.decode(prompt_ids, max_new_tokens=max_tokens, seed=seed, temperature=temperature), stops
            )
        )
        pieces = iter(decoding)
        try:
            while (piece := await self._run(next, pieces, _END)) is not _END:
                outcome.text += piece
                yield piece
        finally:
            outcome.token_ids = list(decoding.token_ids)
            outcome.finish_reason = decoding.finish_reason
            close = getattr(pieces, "close", None)
            if close is not None:  # after any step still running: the thread runs one thing at a time
                await self._run(close)

    # -- teacher forcing -------------------------------------------------------------------------------------
    async def positions(self, ids: list[int], top: int) -> list[Position | None]:
        """Per token of ``ids``: ``None`` for the first (nothing precedes it), then its :class:`Position`."""
        return list(await self._run(self._positions, ids, top))

    def _positions(self, ids: list[int], top: int) -> list[Position | None]:
        import torch

        if len(ids) < 2:
            return [None] * len(ids)
        with torch.inference_mode():
            logits = self.generator.model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits
            rows = torch.log_softmax(logits[0, :-1].float(), dim=-1)
            targets = torch.tensor(ids[1:], dtype=torch.long)
            actual = rows.gather(1, targets[:, None])
            ranks = (rows > actual).sum(dim=1) + 1
            best = torch.topk(rows, top, dim=1) if top else None
        out: list[Position | None] = [None]
        for i, token in enumerate(ids[1:]):
            alternatives = (
                list(zip(best.indices[i].tolist(), best.values[i].tolist())) if best is not None else []
            )
            out.append(Position(int(token), float(actual[i, 0]), int(ranks[i]), alternatives))
        return out
