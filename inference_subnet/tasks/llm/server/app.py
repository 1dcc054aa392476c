"""The HTTP side of the OpenAI-compatible server: routes, bounded bodies, OpenAI-shaped answers and errors.

``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or SSE with
``"stream": true`` and ``stream_options.include_usage``), ``GET /health``. Prompt logprobs come in vLLM's
shape, which teacher-forced verification reads::

    choices[0].prompt_logprobs = [None, {"<token id>": {"logprob": -2.1, "rank": 3, "decoded_token": " the"},
                                         ...the top N alternatives...}, ...]
    choices[0].prompt_token_ids = [ids of the prompt]

one entry per prompt token (``None`` for the first, which nothing precedes), each holding at least the
actual token; ``logprobs: N`` gives OpenAI's legacy ``{tokens, token_logprobs, top_logprobs, text_offset}``
(the prompt's tokens too with ``echo``). Every body is read with a cap (413), every budget is capped (400),
and at most ``max_running`` requests decode at once (503 with ``Retry-After`` beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inference_subnet.tasks.llm.server.engine import Engine, Outcome, Position
from inference_subnet.tasks.llm.server.schema import ChatRequest, CompletionRequest, Sampling
from inference_subnet.tasks.llm.task import MAX_TOKENS

M = TypeVar("M", bound=BaseModel)
COMPLETION_DEFAULT_TOKENS = 16
"""OpenAI's default ``max_tokens`` for ``/v1/completions``."""


@dataclass(frozen=True)
class ServerLimits:
    """What one client can make the server hold."""

    max_body_bytes: int = 1_048_576
    max_tokens: int = MAX_TOKENS
    """Largest ``max_tokens`` accepted; also the chat default, within the context left by the prompt."""
    max_running: int = 16
    """Requests decoding at once; more are refused (503) rather than queued without bound."""
    request_timeout: float = 300.0
    """Seconds one request may hold its decoding slot, a stream to a client that stopped reading included:
    a whole answer not decoded by then is 504, a stream is cut."""


class ApiError(Exception):
    """An OpenAI-shaped error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Slots:
    """Requests decoding now, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self) -> Callable[[], None]:
        if self.used >= self.limit:
            raise ApiError(503, f"the server is decoding {self.limit} requests, its limit; retry shortly",
                           kind="server_busy", headers={"retry-after": "1"})
        self.used += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.used -= 1

        return release


class _SlotStream(StreamingResponse):
    """An SSE answer that gives its decoding slot back and closes its generator however it ends, started,
    finished or cut off by a client that went away before the first byte."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], timeout: float) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._content = content
        self._release = release
        self._timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # A client that stops reading blocks the send; the deadline frees the slot anyway (the stream
            # then ends unfinished and the server closes the connection).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await super().__call__(scope, receive, send)
        finally:
            self._release()
            with contextlib.suppress(Exception):
                await self._content.aclose()  # type: ignore[attr-defined]


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, refused (413) past ``cap`` bytes, declared or sent."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"request body exceeds {cap} bytes")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"request body exceeds {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


def parse(model: type[M], body: bytes) -> M:
    """``body`` as ``model``; 400 naming the first field at fault."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(400, f"{where}: {first.get('msg', 'invalid')}", param=where) from None


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def _usage(outcome: Outcome) -> dict[str, int]:
    completion = len(outcome.token_ids)
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": completion,
            "total_tokens": outcome.prompt_tokens + completion}


class OpenAIServer:
    """The routes over one :class:`Engine`."""

    def __init__(self, engine: Engine, limits: ServerLimits) -> None:
        self.engine = engine
        self.limits = limits
        self.slots = _Slots(limits.max_running)
        self.created = int(time.time())

    # -- shared checks ---------------------------------------------------------------------------------------
    def _check_model(self, requested: str | None) -> None:
        if requested is not None and requested != self.engine.name:
            raise ApiError(404, f"The model `{requested}` does not exist; this server serves "
                           f"`{self.engine.name}`.", param="model", kind="NotFoundError")

    def _budget(self, requested: int | None, prompt_tokens: int, *, default: int, allow_zero: bool) -> int:
        """The token budget: ``requested`` within the cap and the context, or ``default`` fitted to both."""
        context = self.engine.context
        room = context - prompt_tokens if context else self.limits.max_tokens
        if requested is None:
            budget = min(default, self.limits.max_tokens, room)
            if budget < (0 if allow_zero else 1):
                raise ApiError(400, f"the prompt's {prompt_tokens} tokens fill this model's {context}-token "
                               "context", param="messages" if not allow_zero else "prompt")
            return budget
        if requested > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens: at most {self.limits.max_tokens}", param="max_tokens")
        if requested < 1 and not allow_zero:
            raise ApiError(400, "max_tokens: at least 1", param="max_tokens")
        if requested > room:
            raise ApiError(400, f"This model's maximum context length is {context} tokens: the prompt has "
                           f"{prompt_tokens} and max_tokens asks for {requested} more", param="max_tokens")
        return requested

    @staticmethod
    def _decoding(request: Sampling) -> tuple[int, float, list[str]]:
        try:
            stops = request.stops()
        except ValueError as exc:
            raise ApiError(400, str(exc), param="stop") from None
        seed = request.seed if request.seed is not None else secrets.randbits(32)
        temperature = 1.0 if request.temperature is None else request.temperature
        return seed, temperature, stops

    async def _whole(self, pieces: AsyncIterator[str]) -> str:
        """All of a decoding's text, within the request deadline (504 beyond)."""
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                async with contextlib.aclosing(pieces):  # type: ignore[type-var]
                    return "".join([piece async for piece in pieces])
        except TimeoutError:
            raise ApiError(504, f"decoding took longer than {self.limits.request_timeout:g}s",
                           kind="timeout") from None

    # -- routes ------------------------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.engine.name, "object": "model", "created": self.created, "owned_by": "inference-subnet",
            "max_model_len": self.engine.context,
        }]})

    async def chat(self, request: Request) -> Response:
        body = parse(ChatRequest, await read_body(request, self.limits.max_body_bytes))
        self._check_model(body.model)
        if body.logprobs:
            raise ApiError(400, "logprobs is not served on /v1/chat/completions; /v1/completions gives them "
                           "(echo, logprobs, prompt_logprobs)", param="logprobs")
        seed, temperature, stops = self._decoding(body)
        ids = await self.engine.chat_ids([m.model_dump() for m in body.messages])
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        budget = self._budget(requested, len(ids), default=self.limits.max_tokens, allow_zero=False)
        release = self.slots.take()
        outcome = Outcome()
        pieces = self.engine.stream(ids, max_tokens=budget, seed=seed, temperature=temperature, stops=stops,
                                    outcome=outcome)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            try:
                text = await self._whole(pieces)
            finally:
                release()
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": outcome.finish_reason}
            if body.return_token_ids:
                choice["token_ids"] = list(outcome.token_ids)
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": self.engine.name,
                "choices": [choice], "usage": _usage(outcome),
            })
        usage = body.include_usage()

        def chunk(delta: dict[str, str], finish: str | None = None, token_ids: list[int] | None = None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            if token_ids is not None:
                choice["token_ids"] = token_ids
            payload: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": self.engine.name,
                "choices": [choice],
            }
            if usage:
                payload["usage"] = None
            return _sse(payload)

        async def events() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(pieces):
                yield chunk({"role": "assistant", "content": ""})
                async for piece in pieces:
                    yield chunk({"content": piece})
            # The reply's ids in its last chunk: a piece of text may end inside a token still being decoded.
            yield chunk({}, outcome.finish_reason, list(outcome.token_ids) if body.return_token_ids else None)
            if usage:
                yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                            "model": self.engine.name, "choices": [], "usage": _usage(outcome)})
            yield _DONE

        return _SlotStream(events(), release, self.limits.request_timeout)

    async def completions(self, request: Request) -> Response:
        body = parse(CompletionRequest, await read_body(request, self.limits.max_body_bytes))
        self._check_model(body.model)
        problem = body.prompt_problem()
        if problem:
            raise ApiError(400, problem, param="prompt")
        wants_logprobs = body.logprobs is not None or body.prompt_logprobs is not None
        if body.stream and wants_logprobs:
            raise ApiError(400, "logprobs and prompt_logprobs are served without stream", param="stream")
        seed, temperature, stops = self._decoding(body)
        if isinstance(body.prompt, str):
            ids = await self.engine.text_ids(body.prompt)
            prompt_text = body.prompt
        else:
            ids = list(body.prompt)
            if max(ids) >= self.engine.vocab_size:
                raise ApiError(400, f"prompt: token ids are below the vocabulary size {self.engine.vocab_size}",
                               param="prompt")
            prompt_text = await self.engine.text_of(ids)
        if wants_logprobs and not ids:
            raise ApiError(400, "prompt: logprobs need at least one prompt token", param="prompt")
        budget = self._budget(body.max_tokens, len(ids), default=COMPLETION_DEFAULT_TOKENS, allow_zero=True)
        release = self.slots.take()
        outcome = Outcome()
        pieces = self.engine.stream(ids, max_tokens=budget, seed=seed, temperature=temperature, stops=stops,
                                    outcome=outcome)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def payload(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": self.engine.name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            usage = body.include_usage()

            async def events() -> AsyncIterator[bytes]:
                async with contextlib.aclosing(pieces):
                    if body.echo and prompt_text:
                        yield _sse(payload(prompt_text, None) | ({"usage": None} if usage else {}))
                    async for piece in pieces:
                        yield _sse(payload(piece, None) | ({"usage": None} if usage else {}))
                yield _sse(payload("", outcome.finish_reason) | ({"usage": None} if usage else {}))
                if usage:
                    yield _sse(payload("", None) | {"choices": [], "usage": _usage(outcome)})
                yield _DONE

            return _SlotStream(events(), release, self.limits.request_timeout)
        try:
            text = await self._whole(pieces)
            answer = payload((prompt_text if body.echo else "") + text, outcome.finish_reason)
            choice = answer["choices"][0]
            if wants_logprobs:
                top = max(body.logprobs or 0, body.prompt_logprobs or 0)
                sequence = ids + outcome.token_ids
                positions = await self.engine.positions(sequence, top)
                wanted = sorted({*sequence, *(i for p in positions if p is not None for i, _ in p.top)})
                names = dict(zip(wanted, await self.engine.token_texts(wanted)))
                if body.logprobs is not None:
                    start = 0 if body.echo else len(ids)
                    choice["logprobs"] = legacy_logprobs(positions[start:], sequence[start:], names, body.logprobs)
                if body.prompt_logprobs is not None:
                    choice["prompt_logprobs"] = vllm_prompt_logprobs(positions[: len(ids)], names,
                                                                      body.prompt_logprobs)
            if body.prompt_logprobs is not None or body.return_token_ids:
                choice["prompt_token_ids"] = ids
                choice["token_ids"] = list(outcome.token_ids)
        finally:
            release()
        answer["usage"] = _usage(outcome)
        return JSONResponse(answer)


def vllm_prompt_logprobs(
    positions: Sequence[Position | None], names: Mapping[int, str], top: int
) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's ``prompt_logprobs``: per prompt token, ``{token id: {logprob, rank, decoded_token}}`` holding
    the actual token and the ``top`` most likely ones (``None`` for the first position). ``names`` gives
    every token's text."""
    out: list[dict[str, dict[str, Any]] | None] = []
    for position in positions:
        if position is None:
            out.append(None)
            continue
        entry = {str(position.token_id): {"logprob": position.logprob, "rank": position.rank,
                                          "decoded_token": names[position.token_id]}}
        for rank, (token_id, logprob) in enumerate(position.top[:top], start=1):
            entry.setdefault(str(token_id), {"logprob": logprob, "rank": rank, "decoded_token": names[token_id]})
        out.append(entry)
    return out


def legacy_logprobs(
    positions: Sequence[Position | None], ids: Sequence[int], names: Mapping[int, str], top: int
) -> dict[str, list[Any]]:
    """OpenAI's legacy completion ``logprobs`` for the tokens ``ids``: ``tokens``, ``token_logprobs``,
    ``top_logprobs`` (the actual token and the ``top`` most likely, by text; ``None`` for the sequence's
    first token) and ``text_offset`` (characters before each token in the answer's text)."""
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = 0
    for position, token_id in zip(positions, ids):
        offsets.append(offset)
        offset += len(names[token_id])
        if position is None:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        token_logprobs.append(position.logprob)
        best = {names[i]: lp for i, lp in position.top[:top]}
        best.setdefault(names[token_id], position.logprob)
        top_logprobs.append(best)
    return {"tokens": [names[i] for i in ids], "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": offsets}


def create_app(engine: Engine, limits: ServerLimits | None = None) -> Starlette:
    """The ASGI app serving ``engine``; every error, routing ones included, in OpenAI's shape."""
    server = OpenAIServer(engine, limits or ServerLimits())

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return ApiError(exc.status_code, str(exc.detail), kind="NotFoundError" if exc.status_code == 404
                        else "invalid_request_error").response()

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
            Route("/v1/completions", server.completions, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    app.state.server = server
    return app
