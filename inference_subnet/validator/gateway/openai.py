"""An OpenAI-compatible surface for chat-shaped tasks: ``POST /v1/chat/completions`` and ``GET /v1/models``.

It is another route adapter over the same pipeline as ``/v1/tasks/{name}`` (:class:`Gateway`): the same
API keys, per-key limits, routing with failover, request log and organic scoring. Only the shapes differ:
OpenAI's request and response bodies, server-sent events (``data: {...}`` chunks, then ``data: [DONE]``)
for ``stream: true``, and errors as ``{"error": {"message", "type", "param", "code"}}`` (:mod:`.errors`),
so the official ``openai`` clients work against a gateway unchanged.

Nothing a client asks for is silently dropped: the body is read strictly (``"stream": "yes"`` is a 400, not
``true``), an unknown parameter is a 400 naming it, and a known one the gateway cannot honour (``tools``,
``response_format`` JSON modes, ``logprobs``, ``top_p`` below 1...) is a 400 ``unsupported_parameter``
naming it (:mod:`.chatparams`). ``stop`` goes to the task when its Request has a ``stop`` field.

A task is chat-shaped when its Request has ``messages`` (role and text content), ``max_tokens``,
``temperature`` and ``seed``, its Response has ``text``, and, when it streams, its Chunk has ``delta``
(``finish_reason``, ``prompt_tokens`` and ``completion_tokens`` are read when present). ``model`` in a
request names the task. A request without a seed gets a random one: like OpenAI's, unseeded sampling
differs from call to call, yet the miner's answer stays reproducible for scoring.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from inference_subnet.protocol.task import Task
from inference_subnet.validator.gateway.answers import GatewayError, served_headers
from inference_subnet.validator.gateway.chatparams import ACCEPTED_AND_IGNORED, REFUSED, refused_parameter
from inference_subnet.validator.gateway.errors import OpenAIError, OpenAIErrorDetail, openai_error_response

if TYPE_CHECKING:  # the pipeline these routes adapt; app.py includes them, so only its type is named here
    from inference_subnet.validator.gateway.app import Gateway

SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
CHAT_FIELDS = frozenset({"messages", "max_tokens", "temperature", "seed"})


# -- OpenAI's shapes (the subset this gateway serves) -------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts (joined).")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool = False


_REFUSED_FIELDS = {
    name: (Any, Field(None, description=f"Refused unless harmless: {why}."))
    for name, (_, why) in REFUSED.items() if name != "n"
}
_IGNORED_FIELDS = {name: (Any, Field(None, description="Accepted, has no effect.")) for name in ACCEPTED_AND_IGNORED}


class _ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, read strictly: no coercion (``"stream": "yes"`` is refused), no
    unknown parameters."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str = Field(max_length=256, description="The chat task to run (see `GET /v1/models`).")
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Preferred over `max_tokens`.")
    temperature: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, description="Same seed, same answer; a random one when absent.")
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per request.")
    stop: str | list[str] | None = Field(
        None, description="Up to 4 sequences; the answer ends before the first (not included)."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None


ChatCompletionRequest = create_model(
    "ChatCompletionRequest",
    __base__=_ChatCompletionRequest,
    __module__=__name__,
    __doc__=_ChatCompletionRequest.__doc__,
    **_REFUSED_FIELDS,
    **_IGNORED_FIELDS,
)
"""The request with the refused and ignored parameters declared too: they appear in the OpenAPI schema, and
a harmless value of a refused one (``top_p: 1``) passes the strict read."""


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "inference-subnet"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# -- which tasks, and the mapping ---------------------------------------------------------------------------


def is_chat_task(task: Task) -> bool:
    """Whether ``task`` has the chat shape this adapter maps (see the module docstring)."""
    if not CHAT_FIELDS <= set(task.Request.model_fields) or "text" not in task.Response.model_fields:
        return False
    return not task.streaming or (task.Chunk is not None and "delta" in task.Chunk.model_fields)


def task_payload(chat: Any, seed: int, *, stops: bool = False) -> bytes:
    """The task Request body for an OpenAI request (validated afterwards by the task's own model)."""
    payload: dict[str, Any] = {
        "messages": [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in chat.messages
        ],
        "seed": chat.seed if chat.seed is not None else seed,
    }
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    if chat.temperature is not None:
        payload["temperature"] = chat.temperature
    if chat.stop is not None:
        if not stops:
            raise GatewayError(400, "unsupported_parameter", f"Unsupported parameter: 'stop' is not supported "
                               f"by model {chat.model!r}.", param="stop")
        payload["stop"] = chat.stop
    return json.dumps(payload).encode()


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    return openai_error_response(status, code, message, headers, param=param)


def _invalid(exc: ValidationError) -> GatewayError:
    """A 400 for a body that is not a valid request, naming the first parameter at fault as OpenAI does."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    param = loc[0] if loc else None
    kind = str(err.get("type", ""))
    where = ".".join(loc) or "body"
    if kind == "extra_forbidden":
        return GatewayError(400, "unknown_parameter", f"Unrecognized request argument supplied: {where}",
                            param=param)
    code = "invalid_type" if kind.endswith("_type") or kind in ("union_tag_invalid", "literal_error") else (
        "invalid_value")
    return GatewayError(400, code, f"Invalid value for '{where}': {err.get('msg', 'invalid')}", param=param)


def _body_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise GatewayError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request", "the body must be a JSON object")
    return data


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class _ChunkEncoder:
    """Miner chunks to OpenAI ``chat.completion.chunk`` events: the role in the first, the finish reason
    in the last, and the usage after it when the client asked for it."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = _completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.first = True
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.broken = False

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": choices, **extra,
        }
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def encode(self, chunk: BaseModel) -> bytes:
        delta: dict[str, Any] = {}
        if self.first:
            delta["role"] = "assistant"
            self.first = False
        text = getattr(chunk, "delta", "")
        if text:
            delta["content"] = text
        finish = getattr(chunk, "finish_reason", None)
        self.prompt_tokens = getattr(chunk, "prompt_tokens", None) or self.prompt_tokens
        self.completion_tokens = getattr(chunk, "completion_tokens", None) or self.completion_tokens
        if not delta and finish is None:
            return b""
        out = self._event([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])
        if finish is not None and self.include_usage:
            usage = _usage(self.prompt_tokens, self.completion_tokens).model_dump()
            out += self._event([], usage=usage)
        return out

    def error(self, reason: str) -> bytes:
        self.broken = True
        body = OpenAIError(error=OpenAIErrorDetail(message=reason, type="server_error", code="stream_broken"))
        return b"data: " + body.model_dump_json().encode() + b"\n\n"


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, to stand alone in an OpenAPI request body."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


# -- the routes ---------------------------------------------------------------------------------------------

_REQUEST_SCHEMA = _inline_refs(ChatCompletionRequest.model_json_schema())
_bearer = HTTPBearer(auto_error=False, description="An API key from `inference-subnet gateway keys create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": description}
    for status, description in (
        (401, "Missing, invalid or revoked API key."),
        (400, "Not a valid chat completion request, or a parameter the gateway does not support "
              "(`param` names it)."),
        (404, "`model` names no chat task of this gateway."),
        (429, "The key's requests-per-minute or concurrency limit is reached."),
        (503, "No miner could serve the request."),
    )
}


def chat_router(tasks: Sequence[Task]) -> APIRouter | None:
    """The OpenAI-compatible routes for the chat-shaped ``tasks``; ``None`` when there are none."""
    chat_tasks = {t.name: t for t in tasks if is_chat_task(t)}
    if not chat_tasks:
        return None
    router = APIRouter(tags=["openai"])
    names = ", ".join(sorted(chat_tasks))

    async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Any:
        gateway: Gateway = request.app.state.gateway
        return gateway, await gateway.authenticate(credentials, request)

    @router.get("/v1/models", summary="The chat models (tasks) of this gateway", responses=_ERRORS)
    async def models(
        request: Request, credentials: Credentials
    ) -> Response:
        try:
            await authenticate(request, credentials)
        except GatewayError as exc:
            return _error(exc.status, exc.code, exc.reason, exc.headers)
        listing = ModelList(data=[Model(id=name) for name in sorted(chat_tasks)])
        return JSONResponse(listing.model_dump())

    @router.get("/v1/models/{model_id}", summary="One chat model (task)", response_model=Model,
                responses=_ERRORS)
    async def model(request: Request, credentials: Credentials, model_id: str) -> Response:
        try:
            await authenticate(request, credentials)
        except GatewayError as exc:
            return _error(exc.status, exc.code, exc.reason, exc.headers)
        if model_id not in chat_tasks:
            return _error(404, "model_not_found", f"The model {model_id[:256]!r} does not exist; models: {names}",
                          param="model")
        return JSONResponse(Model(id=model_id).model_dump())

    @router.post(
        "/v1/chat/completions",
        summary="OpenAI-compatible chat completion (JSON, or server-sent events with `stream: true`)",
        response_model=ChatCompletion,
        responses={200: {"content": {SSE: {"schema": {"type": "string"}}}}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
            }
        },
    )
    async def chat_completions(
        request: Request, credentials: Credentials
    ) -> Response:
        try:
            gateway, key = await authenticate(request, credentials)
            body = await request.body()
            data = _body_object(body)
            if (refused := refused_parameter(data)) is not None:
                raise GatewayError(400, "unsupported_parameter", refused[1], param=refused[0])
            try:
                chat = ChatCompletionRequest.model_validate(data)
            except ValidationError as exc:
                raise _invalid(exc) from None
            task = chat_tasks.get(chat.model)
            if task is None:
                raise GatewayError(404, "model_not_found", f"The model {chat.model!r} does not exist; "
                                   f"models: {names}", param="model")
            payload = task_payload(chat, secrets.randbelow(2**32), stops="stop" in task.Request.model_fields)
            try:
                task_request = task.Request.model_validate_json(payload)  # as the miner will parse it
            except ValidationError as exc:
                raise _invalid(exc) from None
            if chat.stream:
                if not task.streaming:
                    raise GatewayError(400, "unsupported_parameter", f"model {chat.model!r} does not stream",
                                       param="stream")
                return await _stream(gateway, task, key, task_request, chat, len(body))
            served, _ = await gateway.run(task, key, task_request, request_bytes=len(body))
        except GatewayError as exc:
            return _error(exc.status, exc.code, exc.reason, exc.headers, exc.param)
        answer = served.response
        prompt = getattr(answer, "prompt_tokens", None) or 0
        completion = getattr(answer, "completion_tokens", None) or 0
        result = ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=chat.model,
            choices=[
                Choice(
                    message=AssistantMessage(content=getattr(answer, "text", "")),
                    finish_reason=getattr(answer, "finish_reason", None) or "stop",
                )
            ],
            usage=_usage(prompt, completion),
        )
        headers = served_headers(served)
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)

    return router


async def _stream(
    gateway: Gateway, task: Task, key: Any, task_request: BaseModel, chat: Any, size: int
) -> StreamingResponse:
    relay = await gateway.open(task, key, task_request, request_bytes=size)
    encoder = _ChunkEncoder(chat.model, bool(chat.stream_options and chat.stream_options.include_usage))

    async def events() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(relay.stream(encoder.encode, encoder.error)) as parts:
            async for part in parts:
                if part:
                    yield part
        if not encoder.broken:
            yield DONE

    return StreamingResponse(events(), media_type=SSE, headers={
        **served_headers(relay.opened), "Cache-Control": "no-cache",
    })

