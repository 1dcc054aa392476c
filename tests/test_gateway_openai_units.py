"""The pure parts of the OpenAI surface on their own: stop sequences over split pieces, the table of refused
parameters, request ids and rate-limit durations, the one error shape, usage periods."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from inference_subnet.tasks.llm.stops import StopState, cut_at_stops
from inference_subnet.tasks.llm.task import LLMRequest
from inference_subnet.validator.gateway.chatparams import REFUSED, refused_parameter
from inference_subnet.validator.gateway.errors import error_type, is_v1, openai_error
from inference_subnet.validator.gateway.reqheaders import duration, ratelimit_headers, sane_request_id
from inference_subnet.validator.gateway.usage import parse_period

text = st.text(alphabet="abc \u00e9", max_size=60)


def _reference(full: str, stops: list[str]) -> str:
    hits = [i for i in (full.find(s) for s in stops if s) if i >= 0]
    return full[: min(hits)] if hits else full


@hsettings(max_examples=400, deadline=None)
@given(full=text, cuts=st.lists(st.integers(0, 60), max_size=12), stops=st.lists(text.filter(bool), max_size=4))
def test_stops_cut_at_the_first_sequence_however_the_text_is_split(
    full: str, cuts: list[int], stops: list[str]
) -> None:
    bounds = sorted({0, len(full), *(c for c in cuts if c <= len(full))})
    pieces = [full[a:b] for a, b in zip(bounds, bounds[1:])]
    state = StopState()
    out = list(cut_at_stops(iter(pieces), stops, state))
    want = _reference(full, stops)
    assert "".join(out) == want == state.text
    assert state.stopped == (want != full or any(s and s in full for s in stops))


def test_a_stop_closes_the_decoding_behind_it() -> None:
    closed = []

    def decoding() -> object:
        try:
            yield from ("one ", "tw", "o three", " four")
        finally:
            closed.append(True)

    state = StopState()
    assert list(cut_at_stops(decoding(), ["two"], state)) == ["one "]  # "tw" was held back, then dropped
    assert state.stopped and closed == [True]


def test_the_llm_request_takes_openais_stop_spellings_within_bounds() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    assert LLMRequest.model_validate({**base, "stop": "\n"}).stop == ["\n"]
    assert LLMRequest.model_validate({**base, "stop": None}).stop == []
    assert LLMRequest.model_validate({**base, "stop": ["a", "b"]}).stop == ["a", "b"]
    for bad in (["a"] * 5, ["x" * 65], [""], [1]):
        with pytest.raises(ValueError):
            LLMRequest.model_validate({**base, "stop": bad})


def test_refused_parameters_are_named_and_harmless_values_pass() -> None:
    assert refused_parameter({"tools": [{"type": "function"}]}) == (
        "tools", "Unsupported parameter: 'tools' is not supported by this gateway: tool calling is not "
        "supported; send no tools.")
    refused = {
        "response_format": {"type": "json_schema", "json_schema": {}}, "tool_choice": "auto", "top_p": 0.9,
        "frequency_penalty": -1, "logit_bias": {"1": 2}, "logprobs": True, "top_logprobs": 2, "n": 3,
        "store": True, "modalities": ["text", "audio"],
    }
    for name, value in refused.items():
        assert refused_parameter({name: value}) is not None and refused_parameter({name: value})[0] == name
    harmless = {
        "response_format": {"type": "text"}, "tool_choice": "none", "top_p": 1, "frequency_penalty": 0.0,
        "logit_bias": {}, "logprobs": False, "top_logprobs": 0, "n": 1, "tools": [], "store": False,
        "modalities": ["text"], "user": "u-1", "audio": None,
    }
    assert refused_parameter(harmless) is None
    assert refused_parameter({"top_p": True}) is not None  # a bool is not the number 1
    assert set(REFUSED) >= {"tools", "tool_choice", "response_format", "logprobs", "logit_bias", "top_p",
                            "presence_penalty", "frequency_penalty", "n"}


def test_request_ids_and_rate_limit_durations() -> None:
    assert sane_request_id("req-1.a:B_2") == "req-1.a:B_2"
    for bad in ("", "a b", "x" * 129, "a\nb", "caf\u00e9", None):
        assert sane_request_id(bad) is None
    assert [duration(s) for s in (0, 0.5, 1, 1.25, 60, 125.5)] == ["0ms", "500ms", "1s", "1.25s", "1m0s", "2m5.5s"]
    assert ratelimit_headers(60, 3, 2.0) == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "2s"}


def test_one_error_shape_with_openais_types() -> None:
    assert [error_type(s) for s in (400, 401, 403, 404, 405, 413, 422, 429, 500, 503)] == [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "invalid_request_error", "invalid_request_error", "invalid_request_error", "rate_limit_error",
        "server_error", "server_error"]
    assert openai_error(400, "unsupported_parameter", "no", "tools").model_dump() == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "tools",
                  "code": "unsupported_parameter"}}
    assert is_v1("/v1/tasks/x") and is_v1("/v1") and not is_v1("/v10") and not is_v1("/ready")


def test_usage_periods() -> None:
    assert parse_period("30m") == dt.timedelta(minutes=30)
    assert parse_period(" 7d") == dt.timedelta(days=7)
    for bad in ("", "0h", "1y", "-1d", "1.5h", "9999999d", "3650000d"):
        with pytest.raises(ValueError):
            parse_period(bad)


async def test_every_answer_gets_a_request_id_even_a_crash() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from inference_subnet.validator.gateway.reqheaders import ResponseHeaders, add_response_headers

    async def fine(_: object) -> PlainTextResponse:
        add_response_headers({"x-ratelimit-limit-requests": "7"})
        return PlainTextResponse("ok", headers={"x-request-id": "from-the-handler"})

    async def crash(_: object) -> PlainTextResponse:
        raise RuntimeError("secret detail")

    app = Starlette(routes=[Route("/v1/ok", fine), Route("/v1/crash", crash), Route("/crash", crash)],
                    middleware=[Middleware(ResponseHeaders)])  # inside the server-error layer, as the gateway
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        ok = await http.get("/v1/ok", headers={"x-request-id": "mine-1"})
        assert ok.headers.get_list("x-request-id") == ["mine-1"]  # the gateway's id wins, once
        assert ok.headers["x-ratelimit-limit-requests"] == "7"
        crashed = await http.get("/v1/crash")
        assert crashed.status_code == 500 and "secret" not in crashed.text
        assert crashed.json()["error"]["type"] == "server_error"
        assert crashed.headers["x-request-id"].startswith("req_")
        service = await http.get("/crash")
        assert service.status_code == 500
        assert service.json() == {"error": "internal_error", "reason": "internal error"}
