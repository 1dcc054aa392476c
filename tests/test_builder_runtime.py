"""The machinery generated projects call at run time: field types (their generated annotations, random and
wrong values), synthesizers, the spec-to-scorer mapping, and miner behaviours around an owner's answer."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, create_model

from inference_subnet.builder.fields import FIELD_TYPES, BoxModel, FieldSpec
from inference_subnet.builder.handlers import spec_handler
from inference_subnet.builder.runtime import Hooks, SpecTask
from inference_subnet.builder.scoring import build_scorer, embedding_similarity
from inference_subnet.builder.spec import TaskSpec, parse_spec
from inference_subnet.builder.synthesis import (
    GeneratorSynthesizer,
    ReferenceCache,
    ReplaySynthesizer,
    TemplateSynthesizer,
    read_recorded,
)
from inference_subnet.protocol.behaviours import GARBAGE, behaviour_of, with_behaviour


def model_of(name: str, fields: dict[str, FieldSpec]) -> type[BaseModel]:
    """The model the generated code would define: its annotation and Field(...) text, evaluated."""
    namespace = {"Annotated": Annotated, "Literal": Literal, "Field": Field, "BoxModel": BoxModel}
    definitions: dict[str, Any] = {}
    for field_name, spec in fields.items():
        annotation = eval(spec.annotation(), namespace)  # noqa: S307 - our own generated source text
        call = spec.field_call()
        definitions[field_name] = (annotation, eval(call, namespace)) if call else (annotation, ...)
    return create_model(name, **definitions)


# --- field types ----------------------------------------------------------------------------------------

@st.composite
def field_specs(draw: st.DrawFn) -> FieldSpec:
    kind = draw(st.sampled_from(FIELD_TYPES))
    data: dict[str, Any] = {"type": kind}
    if kind in ("int", "float", "list[int]", "list[float]"):
        low = draw(st.one_of(st.none(), st.integers(-10**6, 10**6)))
        width = draw(st.integers(2, 10**6))
        if low is not None:
            data["ge"] = low
        if draw(st.booleans()):
            data["le"] = (low if low is not None else -width // 2) + width
    if kind == "str" or kind.startswith("list") or kind == "boxes":
        low = draw(st.integers(0, 6))
        data["min_length"] = low
        data["max_length"] = low + draw(st.integers(2, 60))
    if kind == "choice":
        data["choices"] = draw(st.lists(st.text("abcxyz", min_size=1, max_size=5), min_size=2, max_size=5,
                                        unique=True))
    if kind == "list[str]":
        data["item_max_length"] = draw(st.integers(1, 30))
    data["optional"] = draw(st.booleans())
    spec = FieldSpec.model_validate(data)
    assert spec.problems() == []
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=field_specs(), seed=st.integers(0, 2**32))
def test_random_and_wrong_values_satisfy_the_generated_model(spec: FieldSpec, seed: int) -> None:
    model = model_of("M", {"v": spec})
    rng = random.Random(seed)
    value = spec.random_value(rng)
    parsed = model.model_validate({"v": value}).v
    wrong = spec.wrong_value(parsed, rng)
    model.model_validate({"v": wrong.model_dump() if isinstance(wrong, BaseModel) else wrong})
    bounded_flat = spec.type in ("int", "float") and spec.ge is not None and spec.le is not None \
        and spec.le - spec.ge < 1
    if not bounded_flat and value not in ([], "", None):
        assert wrong != (value if not isinstance(parsed, list) else [
            v.model_dump() if isinstance(v, BaseModel) else v for v in parsed])


def test_field_problems_name_the_key_at_fault() -> None:
    assert FieldSpec(type="str", ge=1).problems() == [("ge", "ge/le apply to numeric fields, not str")]
    assert FieldSpec(type="int", le=2.5).problems() == [("le", "an integer field needs an integer le, got 2.5")]
    assert FieldSpec(type="choice").problems()[0][0] == "choices"
    assert FieldSpec(type="list[int]", item_max_length=3).problems()[0][0] == "item_max_length"


def test_boxes_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="x0 < x1"):
        BoxModel(x0=5, y0=0, x1=1, y1=3)


# --- synthesis ------------------------------------------------------------------------------------------

TEXT_TASK = '''
name = "t"
[[tasks]]
name = "shout"
timeout = 1.0
[tasks.request]
text = { type = "str", min_length = 1, max_length = 30 }
mood = { type = "choice", choices = ["calm", "angry"] }
level = { type = "int", ge = 0, le = 100 }
words = { type = "list[str]", min_length = 2, max_length = 3, item_max_length = 12 }
[tasks.response]
text = { type = "str", max_length = 60 }
[tasks.synthesize]
fields.text = { template = "{a} {b}!" }
fields.level = { min = 40, max = 42 }
fields.words = { words = ["alpha", "beta"] }
fields.mood = { choices = ["angry"] }
vocab.a = ["big", "small"]
vocab.b = ["dog", "cat"]
[tasks.reference]
kind = "solver"
code = "return {'text': request.text.upper()}"
[[tasks.score]]
scorer = "exact_match"
field = "text"
'''


def text_task() -> tuple[TaskSpec, type[BaseModel], type[BaseModel]]:
    spec = parse_spec(TEXT_TASK).tasks[0]
    return spec, model_of("ShoutRequest", spec.request), model_of("ShoutResponse", spec.response)


def test_template_synthesis_follows_the_spec_and_its_seed() -> None:
    spec, request_model, _ = text_task()
    synth = TemplateSynthesizer(spec, request_model)
    made = [synth(random.Random(3)) for _ in range(2)]
    assert made[0] == made[1]
    many = [synth(random.Random(seed)) for seed in range(40)]
    assert {r.text for r in many} == {f"{a} {b}!" for a in ("big", "small") for b in ("dog", "cat")}
    assert {r.level for r in many} <= {40, 41, 42} and {r.mood for r in many} == {"angry"}
    assert all(set(" ".join(r.words).split()) <= {"alpha", "beta"} for r in many)


def test_replay_reads_requests_and_request_log_rows_and_skips_the_rest(tmp_path: Path) -> None:
    spec, request_model, _ = text_task()
    good = {"text": "hi", "mood": "calm", "level": 3, "words": ["a", "b"]}
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        json.dumps({"task": "shout", "payload": {**good, "text": "from the log"}}),
        json.dumps({"task": "other", "payload": good}),
        json.dumps({**good, "level": 1000}),
        "{not json",
        "",
    ]))
    recorded = read_recorded(path, "shout", request_model)
    assert [r.text for r in recorded] == ["hi", "from the log"]
    replay = ReplaySynthesizer(recorded, TemplateSynthesizer(spec, request_model))
    assert {replay(random.Random(s)).text for s in range(20)} == {"hi", "from the log"}
    empty = ReplaySynthesizer([], TemplateSynthesizer(spec, request_model))
    assert empty(random.Random(1)).text.endswith("!")


def test_a_generator_reference_is_cached_for_scoring_and_the_cache_is_bounded() -> None:
    _, request_model, response_model = text_task()
    cache = ReferenceCache(size=2)

    def generate(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
        text = f"n{rng.randint(0, 10**9)}"
        return {"text": text, "mood": "calm", "level": 1, "words": ["x", "y"]}, {"text": text.upper()}

    synth = GeneratorSynthesizer(generate, request_model, response_model, cache)
    rng = random.Random(0)
    first, second, third = synth(rng), synth(rng), synth(rng)
    assert cache.get(first) is None, "the oldest reference was evicted"
    assert cache.get(third) == response_model(text=third.text.upper())
    assert len(cache) == 2 and cache.get(second) is not None


# --- scoring --------------------------------------------------------------------------------------------

def scorer_task(response: str, terms: str, timeout: float = 2.0) -> tuple[TaskSpec, type[BaseModel]]:
    text = f'''
name = "t"
[[tasks]]
name = "s"
timeout = {timeout}
[tasks.request]
x = {{ type = "int" }}
[tasks.response]
{response}
[tasks.reference]
kind = "solver"
code = "return {{}}"
{terms}
'''
    spec = parse_spec(text).tasks[0]
    return spec, model_of("R", spec.response)


CASES = [
    ('v = { type = "str" }', 'scorer = "exact_match"\nfield = "v"\nnormalise = true',
     {"v": "Hello  World"}, {"v": "hello world"}, {"v": "hello"}, 0.0),
    ('v = { type = "float" }', 'scorer = "numeric_tolerance"\nfield = "v"\nabs_tol = 0.01',
     {"v": 1.0}, {"v": 1.005}, {"v": 1.1}, 0.0),
    ('v = { type = "str" }', 'scorer = "token_f1"\nfield = "v"', {"v": "a b c d"}, {"v": "d c b a"},
     {"v": "a x"}, 1 / 3),
    ('v = { type = "list[int]" }', 'scorer = "token_match_rate"\nfield = "v"', {"v": [1, 2, 3, 4]},
     {"v": [1, 2, 3, 4]}, {"v": [1, 2, 0, 0]}, 0.5),
    ('v = { type = "list[float]" }', 'scorer = "cosine_similarity"\nfield = "v"', {"v": [1.0, 0.0]},
     {"v": [2.0, 0.0]}, {"v": [0.0, 1.0]}, 0.0),
    ('v = { type = "str" }', 'scorer = "char_error_rate"\nfield = "v"', {"v": "abcd"}, {"v": "abcd"},
     {"v": "abcx"}, 0.75),
    ('v = { type = "str" }', 'scorer = "word_error_rate"\nfield = "v"', {"v": "a b c d"}, {"v": "a b c d"},
     {"v": "a b x d e f g h i"}, 0.0),
    ('v = { type = "boxes" }', 'scorer = "matched_boxes"\nfield = "v"\nmeasure = "recall"',
     {"v": [{"x0": 0, "y0": 0, "x1": 10, "y1": 10, "label": "a"}, {"x0": 20, "y0": 20, "x1": 30, "y1": 30}]},
     {"v": [{"x0": 20, "y0": 20, "x1": 30, "y1": 30}, {"x0": 1, "y0": 0, "x1": 10, "y1": 10, "label": "a"}]},
     {"v": [{"x0": 0, "y0": 0, "x1": 10, "y1": 10, "label": "a"}]}, 0.5),
    ('v = { type = "list[str]" }', 'scorer = "accuracy"\nfield = "v"', {"v": ["a", "b"]}, {"v": ["a", "b"]},
     {"v": ["a", "c"]}, 0.5),
    ('p = { type = "list[float]" }\ny = { type = "list[bool]" }',
     'scorer = "roc_auc"\nfield = "p"\nreference_field = "y"',
     {"p": [0.1, 0.9, 0.2, 0.8], "y": [False, True, False, True]},
     {"p": [0.2, 0.7, 0.3, 0.6], "y": []}, {"p": [0.9, 0.1, 0.8, 0.2], "y": []}, 0.0),
    ('p = { type = "list[float]" }\ny = { type = "list[bool]" }',
     'scorer = "brier_quality"\nfield = "p"\nreference_field = "y"',
     {"p": [0.0, 1.0], "y": [False, True]}, {"p": [0.0, 1.0], "y": []}, {"p": [1.0, 0.0], "y": []}, 0.0),
]


@pytest.mark.parametrize(("response", "term", "reference", "honest", "wrong", "expected_wrong"), CASES,
                         ids=[c[1].split('"')[1] for c in CASES])
def test_each_ready_scorer_gives_an_honest_answer_full_marks_and_a_wrong_one_less(
    response: str, term: str, reference: dict[str, Any], honest: dict[str, Any], wrong: dict[str, Any],
    expected_wrong: float,
) -> None:
    spec, model = scorer_task(response, f"[[tasks.score]]\n{term}")
    scorer = build_scorer(spec)
    ref = model.model_validate(reference)
    got = scorer.score(None, [model.model_validate(honest), model.model_validate(wrong), None], [0.1, 0.1, 0.1],
                       ref)  # type: ignore[arg-type]
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(expected_wrong, abs=1e-9) and got[2] == 0.0


def test_terms_are_weighted_and_latency_counts_against_the_timeout() -> None:
    spec, model = scorer_task('v = { type = "int" }', '''
[[tasks.score]]
scorer = "exact_match"
field = "v"
weight = 3
[[tasks.score]]
scorer = "latency"
target = 0.5
weight = 1
''', timeout=2.5)
    scorer = build_scorer(spec)
    right = model(v=1)
    assert scorer.score(None, [right, right, model(v=2)], [0.2, 1.5, 0.2], model(v=1)) == [  # type: ignore[arg-type]
        pytest.approx(1.0), pytest.approx((3 + 0.5) / 4), pytest.approx(0.25)]


def test_with_no_reference_only_reference_free_terms_count() -> None:
    spec, model = scorer_task('v = { type = "int" }', '''
[[tasks.score]]
scorer = "exact_match"
field = "v"
[[tasks.score]]
scorer = "latency"
target = 0.5
''')
    scorer = build_scorer(spec)
    assert scorer.score(None, [model(v=5), None], [1.25, 0.1], None) == [pytest.approx(0.5), 0.0]  # type: ignore[arg-type]
    only_reference, model = scorer_task('v = { type = "int" }', '[[tasks.score]]\nscorer = "exact_match"\nfield = "v"')
    assert build_scorer(only_reference).score(None, [model(v=5)], [0.1], None) == [1.0]  # type: ignore[arg-type]


def test_custom_terms_are_the_owners_functions_and_must_be_given() -> None:
    spec, model = scorer_task('v = { type = "int" }', '''
[[tasks.score]]
scorer = "custom"
code = "return 1.0"
''')
    with pytest.raises(LookupError, match="custom scorer with no function"):
        build_scorer(spec)
    seen: list[Any] = []
    scorer = build_scorer(spec, custom={0: lambda q, r, ref, lat: seen.append((r.v, lat)) or 2.0})
    assert scorer.score(None, [model(v=7)], [0.3], None) == [1.0], "clipped into [0, 1]"  # type: ignore[arg-type]
    assert seen == [(7, 0.3)]


def test_embedding_similarity_ranks_a_paraphrase_above_an_unrelated_text() -> None:
    same = embedding_similarity("the cat sat on the mat", "the cat sat on the mat")
    close = embedding_similarity("the cat sat on the mat", "a cat was sitting on a mat")
    far = embedding_similarity("the cat sat on the mat", "quarterly interest rates rose sharply")
    assert same == pytest.approx(1.0, abs=1e-4) and close > far and far < 0.5


# --- the task and its miner behaviours --------------------------------------------------------------------

STREAM_SPEC = '''
name = "t"
[[tasks]]
name = "upper"
timeout = 0.2
streaming = true
stream_field = "text"
[tasks.request]
text = { type = "str", min_length = 1, max_length = 40 }
[tasks.response]
text = { type = "str", max_length = 40 }
length = { type = "int", ge = 0 }
[tasks.reference]
kind = "solver"
code = "return {'text': request.text.upper(), 'length': len(request.text)}"
[[tasks.score]]
scorer = "char_error_rate"
field = "text"
[[tasks.score]]
scorer = "exact_match"
field = "length"
'''


def make_task(spec_text: str, *, streaming: bool) -> SpecTask:
    spec = parse_spec(spec_text).tasks[0]
    request_model = model_of("Req", spec.request)
    response_model = model_of("Resp", spec.response)
    chunk_fields = {n: (str, "") if n == spec.stream_field else (Any, None) for n in spec.response}
    solver = eval(f"lambda request: ({spec.reference.code.removeprefix('return ')})")  # noqa: S307

    class _Task(SpecTask):
        definition = spec
        package = "tests"
        name = spec.name
        Request = request_model
        Response = response_model
        Chunk = create_model("Chunk", **chunk_fields) if streaming else None
        timeout = spec.timeout
        hooks = Hooks(solver=solver)

    _Task.streaming = streaming
    return _Task()


def behaving(task: SpecTask, answer: Any, behaviour: str) -> Any:
    """The owner's answer as a miner with ``behaviour`` runs it: the framework applies the behaviour."""
    return with_behaviour(task, spec_handler(task, answer), behaviour_of({"behaviour": behaviour}))


async def collect(handler: Any, request: BaseModel) -> list[Any]:
    return [c async for c in handler(request)]


async def test_streaming_answers_are_split_word_by_word_and_assemble_back() -> None:
    task = make_task(STREAM_SPEC, streaming=True)
    request = task.Request(text="many small words here")
    reference = task.reference(request)
    handler = behaving(task, lambda r: task.hooks.solver(r), "honest")
    chunks = await collect(handler, request)
    assert [c.text for c in chunks] == ["MANY ", "SMALL ", "WORDS ", "HERE"]
    assert chunks[-1].length == 21 and all(c.length is None for c in chunks[:-1])
    assert task.assemble(chunks) == reference
    assert task.score(request, [task.assemble(chunks)], [0.01]) == [1.0]

    async def pieces(r: BaseModel) -> Any:  # an owner's own streaming answer: text pieces
        for piece in ("MANY SMALL ", "WORDS HERE"):
            yield piece
        yield {"text": "", "length": 21}

    streamed = await collect(behaving(task, pieces, "honest"), request)
    assert task.assemble(streamed) == reference
    wrong = task.assemble(await collect(behaving(task, pieces, "wrong"), request))
    assert wrong != reference and task.score(request, [wrong], [0.01])[0] < 0.5


async def test_behaviours_wrap_an_owners_answer_like_the_examples_do() -> None:
    task = make_task(STREAM_SPEC.replace("streaming = true\nstream_field = \"text\"\n", ""), streaming=False)
    request = task.Request(text="abc def")

    async def answer(r: BaseModel) -> dict[str, Any]:
        return {"text": r.text.upper(), "length": len(r.text)}

    honest = await behaving(task, answer, "honest")(request)
    assert honest == task.reference(request)
    wrong = await behaving(task, answer, "wrong")(request)
    assert isinstance(wrong, task.Response) and wrong.text != "ABC DEF" and wrong.length != 7
    assert await behaving(task, answer, "garbage")(request) == GARBAGE
    flaky = behaving(task, answer, "flaky")
    outcomes = []
    for _ in range(20):
        try:
            await flaky(request)
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("failed")
    assert outcomes == ["ok", "failed"] * 10  # every second request fails, whatever the seed
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(behaving(task, answer, "slow")(request), task.timeout)
    with pytest.raises(ValueError, match="unknown behaviour"):
        behaving(task, answer, "lazy")
