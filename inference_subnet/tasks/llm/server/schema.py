"""The request bodies the OpenAI-compatible server accepts, each field bounded.

Fields a client may send that the server does not use (``user``, ``presence_penalty``, ...) are ignored, as
real servers do; fields whose meaning it cannot honour (``n`` above 1, chat ``logprobs``) are refused with a
reason rather than silently answered wrongly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOPS = 4
MAX_STOP_CHARS = 128
MAX_TOP_LOGPROBS = 20
"""Most alternatives per position (OpenAI's own cap for ``logprobs``/``top_logprobs``)."""
MAX_PROMPT_CHARS = 200_000
MAX_PROMPT_IDS = 32_768
"""Most token ids in a ``prompt`` given as ids; the model's context bounds it further."""
MAX_SEED = 2**63


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class Sampling(BaseModel):
    """What both endpoints share: the model, the budget and the decoding parameters."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=512)
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="One choice per request.")

    def stops(self) -> list[str]:
        """``stop`` as a list, each string non-empty and bounded (:class:`ValueError` otherwise)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"stop: at most {MAX_STOPS} sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop: each sequence must have 1 to {MAX_STOP_CHARS} characters")
        return stops

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    return_token_ids: bool = Field(False, description="vLLM's: the reply's token ids in its choice (and chunks).")


class CompletionRequest(Sampling):
    prompt: str | list[int] = Field(..., description="Text, or token ids (vLLM's spelling).")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    prompt_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS,
        description="vLLM's: per prompt token, its logprob and rank plus this many alternatives.",
    )
    return_token_ids: bool = False

    def prompt_problem(self) -> str | None:
        """Why ``prompt`` cannot be used, or ``None``."""
        if isinstance(self.prompt, str):
            if len(self.prompt) > MAX_PROMPT_CHARS:
                return f"prompt: at most {MAX_PROMPT_CHARS} characters"
            return None
        if not self.prompt:
            return "prompt: an empty list of token ids"
        if len(self.prompt) > MAX_PROMPT_IDS:
            return f"prompt: at most {MAX_PROMPT_IDS} token ids"
        if any(i < 0 for i in self.prompt):
            return "prompt: token ids are not negative"
        return None
