"""The subnet spec: a TOML file naming the subnet and its tasks, validated here with errors that name the
field and its line.

Validation has two layers. Pydantic checks the shape (types, required keys, known scorer names); then
:func:`check` checks what only the whole spec knows (a scorer's field exists in the response, a template's
slots have words, a reference exists where a scorer needs one, code compiles). Both report
:class:`Problem` with a dotted path and the TOML line of the nearest written key.
"""

from __future__ import annotations

import difflib
import keyword
import re
import types
import string
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference_subnet.builder.fields import LISTS, FieldSpec
from inference_subnet.builder.locate import key_lines, line_of
from inference_subnet.protocol.task import BUILTIN_TASKS

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
PROJECT = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
RESERVED_FIELDS = frozenset({"model_config", "model_fields", "schema", "json", "dict", "copy"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- synthesis -----------------------------------------------------------------------------------------

class SynthField(_Strict):
    """How template synthesis fills one request field (default: a random value within its limits)."""

    choices: list[Any] | None = Field(None, description="Pick one of these values.")
    template: str | None = Field(None, description="Text with {slot} placeholders filled from `vocab`.")
    words: list[str] | None = Field(None, description="Random text made of these words.")
    min: float | None = Field(None, description="Numbers: lowest synthetic value (within the field's limits).")
    max: float | None = Field(None, description="Numbers: highest synthetic value.")


class SynthesizeSpec(_Strict):
    """Where synthetic requests come from."""

    kind: Literal["template", "replay", "generator"] = "template"
    fields: dict[str, SynthField] = Field(default_factory=dict)
    vocab: dict[str, list[str]] = Field(default_factory=dict, description="Words for template slots.")
    path: str | None = Field(None, description="replay: JSONL of recorded requests, relative to the spec.")
    code: str | None = Field(
        None, description="generator: body of `generate(rng)`, returning a request or (request, reference)."
    )
    function: str | None = Field(None, description="generator: `module:function` instead of `code`.")


# --- reference and miner -------------------------------------------------------------------------------

class ReferenceSpec(_Strict):
    """What the validator compares answers against."""

    kind: Literal["solver", "model", "generator", "none"] = "none"
    code: str | None = Field(
        None, description="solver: body of `solve(request)`; model: body of `solve(request, model)`."
    )
    load: str | None = Field(None, description="model: body of `load()`, run once on the validator.")
    function: str | None = Field(None, description="`module:function(request)` instead of code.")


class MinerSpec(_Strict):
    """The baseline miner (default: the reference solver, where there is one)."""

    code: str | None = Field(None, description="Body of `async def answer(request)`, returning a response.")


class TestSpec(_Strict):
    """What the generated tests require of the baseline and of a wrong miner."""

    honest_min: float = Field(0.9, ge=0, le=1, description="Lowest mean quality of the baseline miner.")
    wrong_max: float = Field(0.6, ge=0, le=1, description="Highest mean quality of a wrong miner.")
    samples: int = Field(12, ge=1, le=500, description="Synthetic requests each test scores.")


# --- scoring -------------------------------------------------------------------------------------------

class _Term(_Strict):
    weight: float = Field(1.0, gt=0, description="Share of this term in the task's quality.")


class _FieldTerm(_Term):
    field: str = Field(description="Response field compared.")
    reference_field: str | None = Field(None, description="Field of the reference; default: `field`.")

    @property
    def ref_field(self) -> str:
        return self.reference_field or self.field


class ExactMatch(_FieldTerm):
    scorer: Literal["exact_match"]
    normalise: bool = False


class NumericTolerance(_FieldTerm):
    scorer: Literal["numeric_tolerance"]
    abs_tol: float = Field(0.0, ge=0)
    rel_tol: float = Field(1e-9, ge=0)


class TokenF1(_FieldTerm):
    scorer: Literal["token_f1"]


class TokenMatchRate(_FieldTerm):
    scorer: Literal["token_match_rate"]


class CosineSimilarity(_FieldTerm):
    scorer: Literal["cosine_similarity"]


class EmbeddingSimilarity(_FieldTerm):
    scorer: Literal["embedding_similarity"]


class CharErrorRate(_FieldTerm):
    scorer: Literal["char_error_rate"]


class WordErrorRate(_FieldTerm):
    scorer: Literal["word_error_rate"]


class MatchedBoxes(_FieldTerm):
    scorer: Literal["matched_boxes"]
    threshold: float = Field(0.5, gt=0, le=1)
    measure: Literal["f1", "precision", "recall"] = "f1"
    match_labels: bool = True


class Accuracy(_FieldTerm):
    scorer: Literal["accuracy"]


class RocAuc(_FieldTerm):
    scorer: Literal["roc_auc"]


class BrierQuality(_FieldTerm):
    scorer: Literal["brier_quality"]


class Reproduce(_FieldTerm):
    scorer: Literal["reproduce"]
    compare: Literal[
        "exact_match", "token_match_rate", "token_f1", "cosine_similarity", "numeric_tolerance", "char_error_rate"
    ] = "exact_match"
    abs_tol: float = Field(0.0, ge=0)
    rel_tol: float = Field(1e-9, ge=0)


class Latency(_Term):
    scorer: Literal["latency"]
    target: float = Field(gt=0, description="Seconds at or under which speed scores 1.")


class Reliability(_Term):
    scorer: Literal["reliability"]


class Custom(_Term):
    scorer: Literal["custom"]
    code: str | None = Field(
        None, description="Body of `score(request, response, reference, latency) -> float` in [0, 1]."
    )
    function: str | None = Field(None, description="`module:function` with that signature, instead of code.")
    needs_reference: bool = False


ScoreTerm = Annotated[
    ExactMatch | NumericTolerance | TokenF1 | TokenMatchRate | CosineSimilarity | EmbeddingSimilarity
    | CharErrorRate | WordErrorRate | MatchedBoxes | Accuracy | RocAuc | BrierQuality | Reproduce | Latency
    | Reliability | Custom,
    Field(discriminator="scorer"),
]
SCORERS: tuple[str, ...] = (
    "exact_match", "numeric_tolerance", "token_f1", "token_match_rate", "cosine_similarity",
    "embedding_similarity", "char_error_rate", "word_error_rate", "matched_boxes", "accuracy", "roc_auc",
    "brier_quality", "reproduce", "latency", "reliability", "custom",
)
REFERENCE_FREE = frozenset({"latency", "reliability"})


def needs_reference(term: Any) -> bool:
    if isinstance(term, Custom):
        return term.needs_reference
    return term.scorer not in REFERENCE_FREE


# --- the spec ------------------------------------------------------------------------------------------

class TaskSpec(_Strict):
    """One task: what miners receive and answer, how the validator makes challenges and scores answers."""

    name: str = Field(description="Task name and route (`/tasks/NAME`): lower case, digits, underscores.")
    description: str = ""
    streaming: bool = False
    stream_field: str | None = Field(None, description="Streaming: the str response field sent in pieces.")
    timeout: float = Field(10.0, gt=0, le=600, description="Seconds a miner has to answer.")
    capacity: int = Field(1000, gt=0, description="Requests per epoch a typical miner can serve.")
    request: dict[str, FieldSpec] = Field(min_length=1)
    response: dict[str, FieldSpec] = Field(min_length=1)
    synthesize: SynthesizeSpec = Field(default_factory=SynthesizeSpec)
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)
    miner: MinerSpec = Field(default_factory=MinerSpec)
    score: list[ScoreTerm] = Field(min_length=1)
    tests: TestSpec = Field(default_factory=TestSpec)

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Task"

    @property
    def model_prefix(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def has_baseline(self) -> bool:
        """A working miner exists without the owner writing one."""
        return self.miner.code is not None or self.reference.kind in ("solver", "model")


class Spec(_Strict):
    """A whole subnet."""

    name: str = Field(description="Project name: lower case, digits, `-` or `_` (the package uses `_`).")
    description: str = ""
    version: str = "0.1.0"
    tasks: list[TaskSpec] = Field(min_length=1)
    validator: dict[str, Any] = Field(
        default_factory=dict, description="Validator settings for the generated config (`[validator]`)."
    )

    @property
    def package(self) -> str:
        return self.name.replace("-", "_")

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} in spec {self.name!r} (tasks: {', '.join(t.name for t in self.tasks)})")


# --- errors --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def where(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "(spec)"

    def render(self, source: str = "spec") -> str:
        at = f"{source}:{self.line}" if self.line is not None else source
        return f"{at}: {self.where}: {self.message}"


class SpecError(ValueError):
    """The spec does not parse or does not validate; ``problems`` name each field and line."""

    def __init__(self, problems: Sequence[Problem], source: str = "spec") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems))


# --- loading -------------------------------------------------------------------------------------------

def load_spec(path: Path, *, check_files: bool = True) -> Spec:
    """The validated spec in ``path``; :class:`SpecError` names every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem((), f"cannot read the spec: {exc.strerror or exc}")], str(path)) from None
    return parse_spec(text, source=str(path), base=path.parent if check_files else None)


def parse_spec(text: str, *, source: str = "spec", base: Path | None = None) -> Spec:
    """Parse and validate spec text. ``base``: the folder relative paths (replay files) are checked in."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_in_message(str(exc))
        raise SpecError([Problem((), f"not valid TOML: {exc}", line)], source) from None
    lines = key_lines(text)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _toml_path(data, err["loc"])
            if err["type"] == "union_tag_invalid":
                path += ("scorer",)  # the value at fault, not the whole term
            message = _message(err)
            if err["type"] == "extra_forbidden":
                near = nearest(str(err["loc"][-1]), _keys_at(Spec, err["loc"][:-1]))
                message = f"unknown key (did you mean {near}?)" if near else message
            problems.append(Problem(path, message, line_of(lines, path)))
        raise SpecError(sorted(problems, key=_by_line), source) from None
    found = check(spec, base=base)
    if found:
        text_lines = text.splitlines()
        located = [Problem(p, m, _code_line(lines, text_lines, p, m)) for p, m in found]
        raise SpecError(sorted(located, key=_by_line), source)
    return spec


def _by_line(problem: Problem) -> int:
    return problem.line if problem.line is not None else 0


def _line_in_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "union_tag_invalid":
        given = err.get("input")
        given = given.get("scorer") if isinstance(given, dict) else given
        return f"unknown scorer {given!r}; choose from {', '.join(SCORERS)}"
    if err["type"] == "union_tag_not_found":
        return f"a score term needs `scorer` (one of {', '.join(SCORERS)})"
    if err["type"] == "extra_forbidden":
        return "unknown key (a typo?)"
    if err["type"] == "literal_error":
        return f"{err['msg']}, got {err.get('input')!r}"
    return str(err["msg"])


def nearest(key: str, valid: Sequence[str]) -> str | None:
    """The valid key a misspelled one most likely meant, if one is near."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return match[0] if match else None


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys valid at a pydantic error location (through lists, tables and tagged unions): the
    candidates a misspelled key is compared with."""
    node: Any = model
    for part in loc:
        node = _step(node, part)
        if node is None:
            return []
    node = _bare(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _bare(tp: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _bare(members[0])
    return tp


def _step(tp: Any, part: str | int) -> Any:
    tp = _bare(tp)
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(str(part))
        return info.annotation if info is not None else None
    if origin in (list, tuple, Sequence) and isinstance(part, int):
        return get_args(tp)[0]
    if origin in (dict, Mapping):
        return get_args(tp)[1]
    if origin in (Union, types.UnionType):  # a tagged union: the part is the tag of the member it chose
        for member in get_args(tp):
            if isinstance(member, type) and issubclass(member, BaseModel) and any(
                get_origin(f.annotation) is Literal and part in get_args(f.annotation)
                for f in member.model_fields.values()
            ):
                return member
    return None


def _toml_path(data: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """A pydantic error location as a path in the TOML: without the union tags pydantic inserts."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            if part in node:
                path.append(part)
                node = node[part]
            elif node.get("scorer") == part or part in ("function-after", "function-before"):
                continue  # a discriminated-union tag: not a key in the file
            else:
                path.append(part)
                node = None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        else:
            path.append(part)
            node = None
    return tuple(path)


def _code_line(lines: Mapping[tuple[str | int, ...], int], text_lines: Sequence[str],
               path: tuple[str | int, ...], message: str) -> int | None:
    """The line of ``path``; for a syntax error inside a multi-line code string, the line inside it."""
    line = line_of(lines, path)
    match = re.search(r"\(code line (\d+)\)", message)
    if line is None or not match or line > len(text_lines):
        return line
    # TOML drops a newline right after the opening quotes: the code then starts on the next line.
    opens_alone = re.search(r"('''|\"\"\")\s*$", text_lines[line - 1]) is not None
    return line + int(match.group(1)) - (0 if opens_alone else 1)


# --- whole-spec checks ---------------------------------------------------------------------------------

def check(spec: Spec, *, base: Path | None = None) -> list[tuple[tuple[str | int, ...], str]]:
    """What pydantic cannot see: names, cross references, compilable code, existing files."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    add = lambda path, message: found.append((tuple(path), message))
    if not PROJECT.match(spec.name):
        add(["name"], "a project name is lower case letters, digits, `-` or `_`, starting with a letter")
    elif keyword.iskeyword(spec.package) or spec.package in ("inference_subnet", "tests") \
            or spec.package in sys.stdlib_module_names:
        add(["name"], f"{spec.name!r} cannot be a package name (a keyword, or a module it would shadow)")
    seen: dict[str, int] = {}
    for i, task in enumerate(spec.tasks):
        where: list[str | int] = ["tasks", i]
        if not NAME.match(task.name):
            add([*where, "name"], "a task name is lower case letters, digits and `_`, starting with a letter")
        if task.name in BUILTIN_TASKS:
            add([*where, "name"], f"{task.name!r} is a built-in example task; choose another name")
        if task.name in seen:
            add([*where, "name"], f"task name {task.name!r} is already used by tasks[{seen[task.name]}]")
        seen.setdefault(task.name, i)
        for side in ("request", "response"):
            for name, fld in getattr(task, side).items():
                if not name.isidentifier() or keyword.iskeyword(name) or name.startswith(("_", "model_")) \
                        or name in RESERVED_FIELDS:
                    add([*where, side, name], f"{name!r} cannot be a field name (a Python identifier, no "
                                              "leading `_` or `model_`)")
                for key, message in fld.problems():
                    add([*where, side, name, key], message)
        _check_streaming(task, where, add)
        _check_synthesis(task, where, add, base)
        _check_reference(task, where, add)
        for j, term in enumerate(task.score):
            _check_term(task, term, [*where, "score", j], add)
        if task.tests.wrong_max >= task.tests.honest_min:
            add([*where, "tests", "wrong_max"], "wrong_max must be below honest_min, or the tests prove nothing")
    if "tasks" in spec.validator:
        add(["validator", "tasks"], "the validator's tasks are the spec's tasks; remove this key")
    if spec.validator:
        from inference_subnet.settings import ValidatorSettings

        for path in _unknown_keys(spec.validator, ValidatorSettings, ("validator",)):
            if path != ("validator", "tasks"):
                near = nearest(str(path[-1]), _keys_at(ValidatorSettings, path[1:-1]))
                add(list(path), f"unknown validator setting ({f'did you mean {near}? ' if near else ''}"
                    "see docs/configuration.md)")
        try:
            ValidatorSettings.model_validate(spec.validator)
        except ValidationError as exc:
            for err in exc.errors():
                if err["type"] != "extra_forbidden":  # unknown keys are reported above, with a pointer
                    add(["validator", *err["loc"]], _message(err))
    return found


def _unknown_keys(data: Mapping[str, Any], model: type[BaseModel],
                  at: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Keys of ``data`` that name no field of ``model``, each reported once with a pointer to the docs."""
    found: list[tuple[str | int, ...]] = []
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None:
            found.append((*at, key))
        elif isinstance(value, Mapping) and isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found += _unknown_keys(value, info.annotation, (*at, key))
    return found


def _check_streaming(task: TaskSpec, where: list[str | int], add: Any) -> None:
    if task.streaming:
        if task.stream_field is None:
            add([*where, "stream_field"], "a streaming task names the str response field it streams")
        elif task.stream_field not in task.response:
            add([*where, "stream_field"], f"no response field {task.stream_field!r}")
        elif task.response[task.stream_field].type != "str":
            add([*where, "stream_field"], "the streamed field must be of type str")
    elif task.stream_field is not None:
        add([*where, "stream_field"], "stream_field needs streaming = true")


def _check_synthesis(task: TaskSpec, where: list[str | int], add: Any, base: Path | None) -> None:
    synth = task.synthesize
    at = [*where, "synthesize"]
    for name, options in synth.fields.items():
        if name not in task.request:
            add([*at, "fields", name], f"no request field {name!r} (request fields: {', '.join(task.request)})")
            continue
        fld = task.request[name]
        if options.template is not None:
            if fld.type != "str":
                add([*at, "fields", name, "template"], "templates fill str fields")
            for slot in _slots(options.template):
                if slot not in synth.vocab:
                    add([*at, "fields", name, "template"], f"slot {{{slot}}} has no words in synthesize.vocab")
        if options.words is not None and fld.type not in ("str", "list[str]"):
            add([*at, "fields", name, "words"], "words fill str fields")
        if (options.min is not None or options.max is not None) and fld.type not in (
                "int", "float", "list[int]", "list[float]"):
            add([*at, "fields", name, "min"], "min/max apply to numeric fields")
        if options.min is not None and options.max is not None and options.min > options.max:
            add([*at, "fields", name, "min"], "min exceeds max")
        if options.choices is not None and not options.choices:
            add([*at, "fields", name, "choices"], "choices is empty")
    for slot, words in synth.vocab.items():
        if not words:
            add([*at, "vocab", slot], "a vocabulary needs at least one word")
    if synth.kind == "replay":
        if not synth.path:
            add([*at, "path"], "replay needs `path`: a JSONL file of recorded requests")
        elif Path(synth.path).is_absolute() or ".." in Path(synth.path).parts:
            add([*at, "path"], "the replay file's path is relative to the spec, inside its folder")
        elif base is not None and not (base / synth.path).is_file():
            add([*at, "path"], f"file not found: {base / synth.path}")
    elif synth.path is not None:
        add([*at, "path"], "path applies to kind = \"replay\"")
    if synth.kind == "generator":
        _one_of(synth.code, synth.function, [*at], add, "generator")
        _compiles(synth.code, ["rng"], [*at, "code"], add)
    elif synth.code is not None or synth.function is not None:
        add([*at, "code" if synth.code is not None else "function"], "code/function apply to kind = \"generator\"")


def _check_reference(task: TaskSpec, where: list[str | int], add: Any) -> None:
    ref = task.reference
    at = [*where, "reference"]
    if ref.kind == "solver":
        _one_of(ref.code, ref.function, at, add, "solver")
        _compiles(ref.code, ["request"], [*at, "code"], add)
    elif ref.kind == "model":
        if ref.function is None and (ref.code is None or ref.load is None):
            add(at, "a model reference needs `load` and `code`, or `function`")
        _compiles(ref.load, [], [*at, "load"], add)
        _compiles(ref.code, ["request", "model"], [*at, "code"], add)
    else:
        for key in ("code", "load", "function"):
            if getattr(ref, key) is not None:
                add([*at, key], f"{key} applies to kind = \"solver\" or \"model\"")
        if ref.kind == "generator" and task.synthesize.kind != "generator":
            add([*at, "kind"], "a generator reference needs synthesize.kind = \"generator\"")
    if ref.kind != "model" and ref.load is not None:
        add([*at, "load"], "load applies to kind = \"model\"")
    if task.miner.code is not None:
        _compiles(task.miner.code, ["request"], [*where, "miner", "code"], add, is_async=True)


def _check_term(task: TaskSpec, term: Any, at: list[str | int], add: Any) -> None:
    if needs_reference(term) and task.reference.kind == "none":
        add(at, f"scorer {term.scorer} compares with a reference, but reference.kind is \"none\"")
    if isinstance(term, Reproduce) and task.reference.kind not in ("model", "solver"):
        add(at, "reproduce-and-compare needs reference.kind = \"model\" (or \"solver\")")
    if isinstance(term, Latency) and term.target >= task.timeout:
        add([*at, "target"], f"the latency target must be below the task's timeout ({task.timeout:g}s)")
    if isinstance(term, Custom):
        _one_of(term.code, term.function, at, add, "custom scorer")
        _compiles(term.code, ["request", "response", "reference", "latency"], [*at, "code"], add)
    if not isinstance(term, _FieldTerm):
        return
    fld = task.response.get(term.field)
    if fld is None:
        add([*at, "field"], f"no response field {term.field!r} (response fields: {', '.join(task.response)})")
        return
    if term.reference_field is not None and term.reference_field not in task.response:
        add([*at, "reference_field"], f"no response field {term.reference_field!r} (the reference is a response)")
        return
    ref = task.response.get(term.ref_field, fld)
    allowed = _ACCEPTS.get(term.scorer if not isinstance(term, Reproduce) else term.compare)
    if allowed is not None and fld.type not in allowed:
        add([*at, "field"], f"{term.scorer} does not apply to a {fld.type} field (it takes {', '.join(sorted(allowed))})")
    if isinstance(term, RocAuc | BrierQuality) and ref.type not in ("list[bool]", "bool"):
        add([*at, "reference_field"], f"{term.scorer} compares probabilities with a bool or list[bool] field")


_ACCEPTS: dict[str, frozenset[str]] = {
    "numeric_tolerance": frozenset({"int", "float"}),
    "token_f1": frozenset({"str"}),
    "embedding_similarity": frozenset({"str"}),
    "char_error_rate": frozenset({"str"}),
    "word_error_rate": frozenset({"str"}),
    "token_match_rate": frozenset({"str", *LISTS} - {"boxes"}),
    "cosine_similarity": frozenset({"list[float]", "list[int]"}),
    "matched_boxes": frozenset({"boxes"}),
    "accuracy": frozenset({"str", "int", "bool", "choice", "list[str]", "list[int]", "list[bool]"}),
    "roc_auc": frozenset({"list[float]", "float"}),
    "brier_quality": frozenset({"list[float]", "float"}),
}


def _one_of(code: str | None, function: str | None, at: list[str | int], add: Any, what: str) -> None:
    if (code is None) == (function is None):
        add(at, f"a {what} needs exactly one of `code` or `function`")
    if function is not None and not IMPORT_PATH.match(function):
        add([*at, "function"], f"expected `module:function`, got {function!r}")


def _compiles(code: str | None, params: Sequence[str], at: list[str | int], add: Any, *,
              is_async: bool = False) -> None:
    if code is None:
        return
    source = f"{'async ' if is_async else ''}def _f({', '.join(params)}):\n" + indent(code)
    try:
        compile(source, "<spec>", "exec")
    except SyntaxError as exc:
        line = max(1, (exc.lineno or 2) - 1)
        add(at, f"does not compile: {exc.msg} (code line {line})")


def indent(code: str, prefix: str = "    ") -> str:
    """``code`` as a function body: dedented, every line indented, never empty."""
    import textwrap

    body = textwrap.dedent(code).rstrip()
    if not body.strip():
        body = "pass"
    return textwrap.indent(body, prefix, lambda _: True) + "\n"


def _slots(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
