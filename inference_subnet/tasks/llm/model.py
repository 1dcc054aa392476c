"""The causal language model behind the ``llm`` example, for miners and validators alike.

``examples.llm_model`` names the model: a hub id or a local path goes to ``from_pretrained`` unchanged
(production); the default, ``inference-subnet/tiny-llm``, is a 2-layer GPT-2 with a byte-level BPE
tokenizer trained on the text shipped next to this module, built deterministically into the model cache
on first use and then loaded through the very same ``from_pretrained`` path. Its text is nonsense; the
reproduce-and-compare scoring is what a subnet does with a real model.

Decoding is a small loop of our own rather than ``model.generate``: it draws from a private
``torch.Generator`` seeded by the request, so the same (prompt, seed, temperature) gives the same tokens in
any process, whatever else the process samples meanwhile, and it yields token by token for streaming.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inference_subnet.scorers.logprobs import TokenEvidence
from inference_subnet.tasks.llm.stops import StopState, cut_at_stops
from inference_subnet.tasks.tiny import (
    ModelLoader,
    ProcessCache,
    example_settings,
    fill_parameters,
    set_threads,
)

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]
"""Why decoding stopped: the model ended its turn, or the token budget ran out (the task's answers carry it)."""

TINY_LLM = "inference-subnet/tiny-llm"
"""The default model id: built locally, never downloaded."""
_TINY_SEED = 1_000_003
_CORPUS = Path(__file__).with_name("corpus.txt")
_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, the template of the tiny model; production models bring their own."""


def build_tiny_llm(directory: Path, seed: int = _TINY_SEED) -> None:
    """Write the tiny model and its tokenizer to ``directory`` with ``save_pretrained``: same bytes on
    every machine with the same library versions, in about a second. Another ``seed`` builds another
    model over the same tokenizer (a wrong miner's, in tests and benchmarks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=list(_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS.read_text(encoding="utf-8").splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=128,
        n_layer=2,
        n_head=4,
        bos_token_id=eos[1],
        eos_token_id=eos[0],
        pad_token_id=eos[1],
    )
    model = GPT2LMHeadModel(config)
    fill_parameters(model, seed, std=0.05)
    model.generation_config = GenerationConfig(eos_token_id=eos, bos_token_id=eos[1], pad_token_id=eos[1])
    hf_logging.disable_progress_bar()
    model.save_pretrained(directory)


LANGUAGE_MODELS = ModelLoader(TINY_LLM, "tiny-llm-v1", build_tiny_llm)


@dataclass
class Generation:
    """One decoding, consumed piece by piece: iterate for the text deltas, then read the totals."""

    pieces: Iterator[str]
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        return self.pieces


@dataclass(frozen=True)
class Reading:
    """One teacher-forced pass over a completion (:meth:`TextGenerator.read`)."""

    tokens: list[TokenEvidence]
    """The evidence for each completion token."""
    end: TokenEvidence
    """The evidence for ending the turn after the last token."""
    replayed: list[int] | None = None
    """With a seed: the token the model's sampler draws at each completion position and after the last."""


class TextGenerator:
    """A loaded model and tokenizer. Thread-safe: each decoding has its own state and random generator."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        eos = model.generation_config.eos_token_id if model.generation_config else None
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(ids)
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        # transformers 5 renamed the KV cache argument (and output) from ``past_key_values`` to ``cache``.
        # A fast tokenizer is not safe to call from several threads at once (scoring workers do).
        self._tokenizer_lock = threading.Lock()
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"

    # -- what the other examples use --------------------------------------------------------------------
    def generate(self, prompt: str, *, max_new_tokens: int, seed: int, temperature: float = 1.0) -> str:
        """A continuation of ``prompt`` (raw text, no chat template); the same for the same seed."""
        return self._finish(self.decode(self.encode(prompt), max_new_tokens=max_new_tokens, seed=seed,
                                        temperature=temperature)).text

    # -- chat ----------------------------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The token ids of a conversation through the model's chat template, ready for the reply."""
        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
            )
        return self.encode(text)

    def chat(
        self, messages: Sequence[Mapping[str, str]], *, max_new_tokens: int, seed: int, temperature: float,
        stop: Sequence[str] = (),
    ) -> Generation:
        """The whole reply to a conversation (``.text``, ``.token_ids``, ``.finish_reason``)."""
        return self._finish(self.stream_chat(messages, max_new_tokens=max_new_tokens, seed=seed,
                                             temperature=temperature, stop=stop))

    def stream_chat(
        self, messages: Sequence[Mapping[str, str]], *, max_new_tokens: int, seed: int, temperature: float,
        stop: Sequence[str] = (),
    ) -> Generation:
        """The reply as it is decoded: iterate for text pieces. With ``stop`` the reply ends before the
        first stop sequence (finish reason ``stop``, the sequence itself not included)."""
        generation = self.decode(self.chat_prompt(messages), max_new_tokens=max_new_tokens, seed=seed,
                                 temperature=temperature)
        return with_stops(generation, stop)

    # -- the decoding loop ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, ids: Sequence[int]) -> str:
        """The text of token ids, as a miner's answer carries it (special tokens dropped)."""
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def decode(
        self, prompt_ids: Sequence[int], *, max_new_tokens: int, seed: int, temperature: float
    ) -> Generation:
        """Seeded decoding of up to ``max_new_tokens`` after ``prompt_ids``: greedy at temperature 0,
        else sampling from the tempered distribution with a generator seeded by ``seed``."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        ids = list(prompt_ids)
        if self.context:
            room = self.context - max_new_tokens
            if room < 1:
                raise ValueError(
                    f"max_new_tokens {max_new_tokens} leaves no room in a {self.context}-token context"
                )
            ids = ids[-room:]
        generation = Generation(pieces=iter(()), prompt_tokens=len(ids))
        generation.pieces = self._pieces(generation, ids, max_new_tokens, seed, temperature)
        return generation

    def _pieces(
        self, out: Generation, prompt_ids: list[int], max_new_tokens: int, seed: int, temperature: float
    ) -> Iterator[str]:
        """Text deltas, never splitting a character: the text decoded so far is re-read from a few tokens
        back, and a delta is released only when it does not end in half a character. The reply's text is
        the concatenation of the deltas, streamed or not, so both read the same."""
        ids = out.token_ids
        prefix = read = 0
        for token in self._tokens(prompt_ids, max_new_tokens, seed, temperature):
            if token in self.eos_ids:
                out.finish_reason = "stop"
                break
            ids.append(token)
            before = self.text(ids[prefix:read])
            now = self.text(ids[prefix:])
            if len(now) > len(before) and not now.endswith("\ufffd"):
                piece = now[len(before):]
                prefix, read = read, len(ids)
                out.text += piece
                yield piece
        rest = self.text(ids[prefix:])
        before = self.text(ids[prefix:read])
        if len(rest) > len(before):
            out.text += rest[len(before):]
            yield rest[len(before):]

    def _tokens(
        self, prompt_ids: list[int], max_new_tokens: int, seed: int, temperature: float
    ) -> Iterator[int]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        past = None
        step = torch.tensor([prompt_ids or [self.model.config.bos_token_id or 0]], dtype=torch.long)
        for _ in range(max_new_tokens):
            # inference_mode per step, never held across a yield: decodings interleave on one thread.
            with torch.inference_mode():
                out = self.model(input_ids=step, use_cache=True, **{self._cache_arg: past})
                past = getattr(out, self._cache_arg)
                logits = out.logits[0, -1].float()
                if temperature <= 0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
            yield token
            if token in self.eos_ids:
                return
            step = torch.tensor([[token]], dtype=torch.long)

    # -- verification ---------------------------------------------------------------------------------
    def token_logprobs(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        temperature: float,
        top_p: float = 1.0,
        max_new_tokens: int | None = None,
    ) -> tuple[list[TokenEvidence], TokenEvidence]:
        """The evidence for each completion token under the request's distribution, and for ending the
        turn after the last one (the likeliest of the end-of-sequence tokens), from one teacher-forced
        forward pass over prompt and completion: what verifying a completion costs instead of decoding it.

        The prompt is cut from the left as :meth:`decode` cuts it for ``max_new_tokens`` (default: the
        completion's length), so the positions the miner decoded from are the ones scored."""
        reading = self.read(prompt_ids, completion_ids, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens)
        return reading.tokens, reading.end

    def read(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        temperature: float,
        top_p: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> Reading:
        """:meth:`token_logprobs`, and with a ``seed`` the tokens this model's own sampler draws at each
        position from the same forward pass (:attr:`Reading.replayed`): the draws :meth:`decode` makes for
        that seed when the completion is its own, at no second pass, since a draw consumes the seeded
        generator alike whatever the distribution."""
        import torch

        completion = list(completion_ids)
        prompt = list(prompt_ids) or [self.model.config.bos_token_id or 0]
        if self.context:
            budget = max(max_new_tokens or 0, len(completion), 1)
            room = self.context - budget
            if room < 1:
                raise ValueError(f"a {budget}-token completion leaves no room in a {self.context}-token context")
            prompt = prompt[-room:]
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([prompt + completion], dtype=torch.long)).logits[0]
        # Row i predicts token i + 1: the rows from the prompt's last token on predict the completion, and
        # the last row predicts what follows it (the end of the turn, for a ``stop``).
        rows = logits[len(prompt) - 1 :].float()
        replayed = None
        if seed is not None:
            if temperature <= 0:
                replayed = [int(t) for t in torch.argmax(rows, dim=-1)]
            else:
                generator = torch.Generator().manual_seed(seed)
                tempered = torch.softmax(rows / temperature, dim=-1)
                replayed = [int(torch.multinomial(tempered[i], 1, generator=generator)) for i in range(len(rows))]
        scale = 1.0 / temperature if temperature > 0 else 1.0
        logp = torch.log_softmax(rows * scale, dim=-1)
        probs = logp.exp()
        eos = sorted(self.eos_ids)
        end_token = eos[int(torch.argmax(logp[-1, eos]))] if eos else 0
        chosen = torch.tensor([*completion, end_token], dtype=torch.long)
        own = logp.gather(1, chosen[:, None])[:, 0]
        above_mask = logp > own[:, None]
        rank = above_mask.sum(dim=1) + 1
        mass_above = (probs * above_mask).sum(dim=1)
        best = logp.max(dim=1).values
        if temperature > 0 and top_p < 1.0:
            # The nucleus: the likeliest tokens whose mass reaches top_p, renormalised.
            sorted_p, order = probs.sort(dim=1, descending=True)
            keep_sorted = (sorted_p.cumsum(dim=1) - sorted_p) < top_p
            keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
            logp = torch.where(keep, logp - torch.log((probs * keep).sum(dim=1, keepdim=True)), -torch.inf)
            probs = logp.exp()
            own = torch.where(keep.gather(1, chosen[:, None])[:, 0], logp.gather(1, chosen[:, None])[:, 0], own)
            best = logp.max(dim=1).values
        plogp = torch.where(probs > 0, probs * logp, torch.zeros_like(probs))
        entropy = -plogp.sum(dim=1)
        variance = (torch.where(probs > 0, probs * logp * logp, torch.zeros_like(probs))).sum(dim=1) - entropy**2
        evidence = [
            TokenEvidence(float(own[i]), int(rank[i]), float(best[i]), float(mass_above[i]),
                          float(entropy[i]), max(float(variance[i]), 0.0))
            for i in range(len(chosen))
        ]
        return Reading(evidence[:-1], evidence[-1], replayed)

    @staticmethod
    def _finish(generation: Generation) -> Generation:
        for _ in generation:
            pass
        return generation


def with_stops(generation: Generation, stop: Sequence[str]) -> Generation:
    """``generation`` cut at the first of ``stop`` (see :mod:`~inference_subnet.tasks.llm.stops`); unchanged
    without stop sequences."""
    if not stop:
        return generation
    state = StopState()
    raw = generation.pieces

    def pieces() -> Iterator[str]:
        yield from cut_at_stops(raw, stop, state)
        generation.text = state.text
        if state.stopped:
            generation.finish_reason = "stop"

    generation.pieces = pieces()
    return generation


def load_text_generator(model: str | None = None) -> TextGenerator:
    """The generator for ``model`` (default: ``examples.llm_model``), loaded once per process. Blocking:
    call it off the event loop."""
    name = model or example_settings().llm_model

    def open_model(location: str) -> TextGenerator:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(location)
        lm = AutoModelForCausalLM.from_pretrained(location)
        lm.eval()
        lm.requires_grad_(False)
        log.info("loaded LLM %s", name)
        return TextGenerator(lm, tokenizer, name)

    return LANGUAGE_MODELS.load(name, open_model)


class ChatTokenizer:
    """The tokenizer of a model without the model: what a validator needs when an inference server holds
    the model (``examples.llm_reference_url``). Thread-safe like :class:`TextGenerator`."""

    def __init__(self, tokenizer: Any, eos_ids: frozenset[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.vocab_size = len(tokenizer)
        self._lock = threading.Lock()

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        with self._lock:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
            )
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """``ids`` as text, the way :class:`TextGenerator` writes a reply (special tokens skipped)."""
        with self._lock:
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


_TOKENIZERS = ProcessCache()


def load_chat_tokenizer(model: str | None = None) -> ChatTokenizer:
    """The tokenizer of ``model`` (default: ``examples.llm_model``) and its end-of-turn ids (the tokenizer's
    EOS and the generation config's), once per process; the built-in tiny model is built first. Blocking."""
    name = model or example_settings().llm_model

    def load() -> ChatTokenizer:
        from transformers import AutoTokenizer, GenerationConfig
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        location = LANGUAGE_MODELS.location(name)
        tokenizer = AutoTokenizer.from_pretrained(location)
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        try:
            eos = GenerationConfig.from_pretrained(location).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            eos = None
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return ChatTokenizer(tokenizer, frozenset(ids))

    return _TOKENIZERS.get(name, load)


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), from the weights its package ships
    (checked against their pinned sha256 by the ``detect`` example's loader)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]


_EMBEDDER = ProcessCache()


def load_embedder() -> Embedder:
    """The sentence embedder, loaded once per process (blocking: call it off the event loop)."""

    def load() -> Embedder:
        from transformers.utils import logging as hf_logging

        from inference_subnet.tasks.detect.embedder import load_embedder as load_checked

        hf_logging.disable_progress_bar()
        set_threads(example_settings().threads)
        return Embedder(load_checked())

    return _EMBEDDER.get("all-MiniLM-L6-v2", load)
