"""A minimal client of an OpenAI-compatible ``/v1/chat/completions`` endpoint: a hosted API, a local server,
or a subnet's gateway. Non-streaming, one deadline per call, and the key never appears in an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self, TypedDict

import httpx
from pydantic import SecretStr


class Message(TypedDict):
    role: str
    content: str


class LLMError(RuntimeError):
    """The endpoint failed or answered something that is not a chat completion."""


def completions_url(base_url: str) -> str:
    """``.../v1/chat/completions`` whether ``base_url`` ends in ``/v1`` (the OpenAI convention) or not."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class ChatClient:
    """``complete(messages) -> text`` against one endpoint and model."""

    def __init__(self, base_url: str, *, model: str, api_key: SecretStr | None = None, timeout: float = 120.0,
                 temperature: float = 0.2, transport: httpx.BaseTransport | None = None) -> None:
        self.url = completions_url(base_url)
        self.model = model
        self.temperature = temperature
        headers = {"content-type": "application/json"}
        if api_key is not None and api_key.get_secret_value():
            headers["authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0),
                                  limits=httpx.Limits(max_connections=2), transport=transport)

    def complete(self, messages: Sequence[Message]) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": self.temperature}
        try:
            response = self._http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise LLMError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise LLMError(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"{self.url} did not answer a chat completion: {response.text[:300]}") from None
        if not isinstance(content, str) or not content.strip():
            raise LLMError(f"{self.url} answered an empty completion")
        return content

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
