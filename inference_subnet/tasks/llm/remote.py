"""The reference model behind an OpenAI-compatible server: a validator verifies a large model's completions
without loading it, from the server's ``prompt_logprobs``.

One call per completion: ``POST /v1/completions`` with the prompt and completion as token ids (so the
server scores exactly the tokens the validator scores, whatever its own text handling), the end-of-turn
token appended (its evidence decides a ``stop``), ``max_tokens: 1`` and ``prompt_logprobs: top``. The
answer's ``choices[0].prompt_logprobs`` is vLLM's shape: one entry per prompt token, the first ``null``,
each a map from token id to ``{"logprob", "rank", "decoded_token"}`` holding the prompt's own token and the
``top`` likeliest. Those are the untempered log-probabilities; tempering and the nucleus are applied here
(:func:`~inference_subnet.scorers.logprobs.evidence_from_top`).

The server is a peer like any other: the answer is read up to ``max_bytes`` within ``timeout`` seconds in
all, and anything not of that shape is a :class:`ReferenceError`, never a score.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from inference_subnet.redaction import redact_url
from inference_subnet.scorers.logprobs import TokenEvidence, evidence_from_top

MAX_TOP = 20
"""vLLM's default ``max_logprobs``: the most alternatives per position a stock server returns."""


class ReferenceError(RuntimeError):
    """The reference server failed, or answered something that is not prompt log-probabilities."""


def completions_url(base_url: str) -> str:
    """``.../v1/completions`` whether ``base_url`` ends in ``/v1`` (the OpenAI convention) or not."""
    base = base_url.rstrip("/")
    if base.endswith("/completions"):
        return base
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


class RemoteReference:
    """Token evidence for completions from a server's ``prompt_logprobs``."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: SecretStr | None = None,
        top: int = MAX_TOP,
        timeout: float = 10.0,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if not 1 <= top <= 100:
            raise ValueError(f"top must be 1 to 100, got {top}")
        self.url = completions_url(base_url)
        self.shown = redact_url(self.url)
        """The URL as errors name it: a password in it masked."""
        self.model = model
        self.top = top
        self.timeout = timeout
        self.max_bytes = max_bytes
        headers = {"content-type": "application/json"}
        if api_key is not None and api_key.get_secret_value():
            headers["authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=4),
        )

    def close(self) -> None:
        self._http.close()

    def prompt_logprobs(self, ids: Sequence[int]) -> list[dict[int, tuple[float, int]]]:
        """The server's ``{token id: (logprob, rank)}`` for each token of ``ids`` after the first."""
        body = {
            "model": self.model,
            "prompt": list(ids),
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": self.top,
        }
        raw = self._post(body)
        try:
            entries = json.loads(raw)["choices"][0]["prompt_logprobs"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ReferenceError(f"{self.shown} did not answer prompt_logprobs: {raw[:200]!r}") from None
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise ReferenceError(
                f"{self.shown} answered {len(entries) if isinstance(entries, list) else 'no'} prompt_logprobs "
                f"entries for {len(ids)} tokens"
            )
        return [_entry(e, self.shown) for e in entries[1:]]

    def token_logprobs(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        end_id: int,
        vocab_size: int,
        temperature: float,
        top_p: float = 1.0,
    ) -> tuple[list[TokenEvidence], TokenEvidence]:
        """The same evidence as the in-process model's ``TextGenerator.token_logprobs``, from the server."""
        if not prompt_ids:
            raise ValueError("the prompt must hold at least one token")
        ids = [*prompt_ids, *completion_ids, end_id]
        positions = self.prompt_logprobs(ids)[len(prompt_ids) - 1 :]
        evidence = []
        for token, top in zip([*completion_ids, end_id], positions):
            if token not in top:
                raise ReferenceError(f"{self.shown} left token {token} out of its own prompt_logprobs")
            logprob, rank = top[token]
            others = {t: lp for t, (lp, _) in top.items()}
            if rank < 1:  # a server that gives no ranks: at least as low as the known tokens above it
                rank = 1 + sum(lp > logprob for lp in others.values())
            if rank > self.top:  # the server adds the prompt's own token beyond its top: not one of them
                others.pop(token, None)
            evidence.append(evidence_from_top(logprob, rank, others, temperature=temperature,
                                              vocab_size=vocab_size, top_p=top_p))
        return evidence[:-1], evidence[-1]

    def _post(self, body: dict[str, Any]) -> bytes:
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream("POST", self.url, json=body) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ReferenceError(f"{self.shown} answered more than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise ReferenceError(f"{self.shown} took more than {self.timeout:g} s")
                    chunks.append(chunk)
                raw = b"".join(chunks)
                if response.status_code != 200:
                    raise ReferenceError(f"{self.shown} answered {response.status_code}: {raw[:200]!r}")
                return raw
        except httpx.HTTPError as exc:
            raise ReferenceError(f"{self.shown}: {type(exc).__name__}: {exc}") from None


def _entry(entry: Any, url: str) -> dict[int, tuple[float, int]]:
    if not isinstance(entry, dict) or not entry:
        raise ReferenceError(f"{url} answered a prompt_logprobs entry that is not a map: {str(entry)[:100]}")
    out: dict[int, tuple[float, int]] = {}
    for key, value in entry.items():
        try:
            token, logprob = int(key), float(value["logprob"])
            rank = int(value.get("rank") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ReferenceError(f"{url} answered a malformed prompt_logprobs item: {str(value)[:100]}") from None
        if math.isnan(logprob) or logprob > 1e-6:
            raise ReferenceError(f"{url} answered a log-probability of {logprob}")
        out[token] = (min(logprob, 0.0), rank)
    return out
