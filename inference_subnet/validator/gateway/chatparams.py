"""Which OpenAI chat parameters this gateway refuses, and which values of them are harmless.

A client that sends ``tools``, ``response_format: json_object`` or ``top_p: 0.1`` expects a behaviour; a
gateway that ignores the parameter answers something else with a 200, and the client cannot tell. So every
parameter the chat route cannot honour is refused with a 400 naming it (OpenAI's ``unsupported_parameter``),
unless its value asks for nothing (``top_p: 1``, ``tools: []``, ``response_format: {"type": "text"}``...),
which is what libraries send by default. Pure data and one function, so the list is read and tested on its
own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_CHOICES = 1
"""``n`` above this is refused: one request is one miner call and one answer."""


def _none(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _equals(neutral: Any) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and value == neutral
        )

    return check


def _false(value: Any) -> bool:
    return value is None or value is False


def _text_format(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping) and value.get("type") == "text" and len(value) == 1)


def _no_tool_choice(value: Any) -> bool:
    return value is None or value == "none"


def _text_only(value: Any) -> bool:
    return value is None or value == ["text"]


def _one_choice(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CHOICES)


REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (_empty, "tool calling is not supported; send no tools"),
    "tool_choice": (_no_tool_choice, "tool calling is not supported"),
    "functions": (_empty, "function calling is not supported"),
    "function_call": (_no_tool_choice, "function calling is not supported"),
    "response_format": (_text_format, "only plain text answers; JSON modes are not enforced by the miners"),
    "logprobs": (_false, "log probabilities are not returned"),
    "top_logprobs": (_equals(0), "log probabilities are not returned"),
    "logit_bias": (_empty, "the miners' decoding takes no logit bias"),
    "top_p": (_equals(1), "the miners sample the whole distribution (top_p 1)"),
    "presence_penalty": (_equals(0), "the miners' decoding applies no penalties"),
    "frequency_penalty": (_equals(0), "the miners' decoding applies no penalties"),
    "n": (_one_choice, f"at most {MAX_CHOICES} choice per request; send several requests instead"),
    "audio": (_none, "audio output is not supported"),
    "modalities": (_text_only, "only text output"),
    "prediction": (_none, "predicted outputs are not supported"),
    "reasoning_effort": (_none, "the models take no reasoning effort"),
    "verbosity": (_none, "the models take no verbosity"),
    "web_search_options": (_none, "web search is not supported"),
    "store": (_false, "completions are not stored"),
}
"""Parameter -> (whether its value is harmless, why it is refused otherwise)."""

ACCEPTED_AND_IGNORED = frozenset(
    {"user", "safety_identifier", "prompt_cache_key", "metadata", "service_tier", "parallel_tool_calls"}
)
"""Parameters that change nothing about the answer (an end-user id, a cache hint, tags, a tier, tool-call
parallelism without tools): accepted so clients that always send them work, never acted on."""


def refused_parameter(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first parameter of ``body`` this gateway refuses and why, or ``None``."""
    for name, (harmless, why) in REFUSED.items():
        if name in body and not harmless(body[name]):
            return name, f"Unsupported parameter: '{name}' is not supported by this gateway: {why}."
    return None
