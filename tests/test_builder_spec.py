"""The subnet spec: every shipped spec validates, and a bad spec is refused with errors that name the field
and the line it is on (found by the key scanner, since ``tomllib`` gives no positions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inference_subnet.builder.locate import key_lines, line_of
from inference_subnet.builder.prompt import EXAMPLE, system_prompt
from inference_subnet.builder.spec import SCORERS, SpecError, load_spec, parse_spec
from inference_subnet.cli.main import app

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "examples" / "specs"

BASE = '''\
name = "demo"

[[tasks]]
name = "add"
timeout = 2.0

[tasks.request]
a = { type = "int", ge = -10, le = 10 }
b = { type = "int", ge = -10, le = 10 }

[tasks.response]
total = { type = "int" }

[tasks.reference]
kind = "solver"
code = """
return {"total": request.a + request.b}
"""

[[tasks.score]]
scorer = "exact_match"
field = "total"

[[tasks.score]]
scorer = "latency"
target = 0.5
weight = 0.1
'''


def line(text: str, marker: str) -> int:
    """1-based line of the first line containing ``marker``."""
    for number, content in enumerate(text.splitlines(), start=1):
        if marker in content:
            return number
    raise AssertionError(f"{marker!r} not in the text")


def problems(text: str, base: Path | None = None) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="t.toml", base=base)
    return [(p.where, p.line, p.message) for p in caught.value.problems]


def one_problem(text: str, base: Path | None = None) -> tuple[str, int | None, str]:
    found = problems(text, base)
    assert len(found) == 1, found
    return found[0]


# --- shipped specs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SPECS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_spec_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.tasks and len({t.name for t in spec.tasks}) == len(spec.tasks)


def test_the_shipped_specs_cover_every_scorer_and_kind() -> None:
    specs = [load_spec(p) for p in SPECS.glob("*.toml")]
    tasks = [t for s in specs for t in s.tasks]
    used = {term.scorer for t in tasks for term in t.score} | {
        term.compare for t in tasks for term in t.score if term.scorer == "reproduce"}
    assert set(SCORERS) - used == {"embedding_similarity"}  # it loads a model: see test_builder_runtime
    assert {t.synthesize.kind for t in tasks} == {"template", "replay", "generator"}
    assert {t.reference.kind for t in tasks} == {"solver", "model", "generator"}
    assert any(t.streaming for t in tasks)


def test_the_prompt_example_is_a_valid_spec_and_the_prompt_names_every_scorer() -> None:
    assert [t.name for t in parse_spec(EXAMPLE).tasks] == ["reverse_words", "add"]
    prompt = system_prompt()
    for scorer in SCORERS:
        assert f"`{scorer}`" in prompt


# --- the key scanner ------------------------------------------------------------------------------------

def test_key_lines_follow_tables_arrays_of_tables_and_dotted_keys() -> None:
    text = '''\
title = "x"
[a]
b.c = 1
"quoted.key" = 2
[[t]]
name = "one"
[[t.s]]
k = 1
[[t.s]]
k = 2
[[t]]
name = "two"
[[t.s]]
k = 3
'''
    lines = key_lines(text)
    assert lines[("title",)] == 1
    assert lines[("a", "b", "c")] == 3
    assert lines[("a", "quoted.key")] == 4
    assert lines[("t", 0, "name")] == 6
    assert lines[("t", 0, "s", 1, "k")] == 10
    assert lines[("t", 1, "name")] == 12
    assert lines[("t", 1, "s", 0, "k")] == 14
    assert line_of(lines, ("t", 1, "s", 0, "missing", 3)) == 13


def test_key_lines_skip_multiline_strings_and_count_array_elements() -> None:
    text = '''\
code = """
[not_a_table]
fake = 1
"""
after = 1
items = [
  { a = 1 },
  { a = "[x]" },
  "s, with comma",
]
last = 2
'''
    lines = key_lines(text)
    assert ("not_a_table",) not in lines and ("fake",) not in lines
    assert lines[("after",)] == 5
    assert [lines[("items", i)] for i in range(3)] == [7, 8, 9]
    assert lines[("last",)] == 11


# --- errors name the field and the line ------------------------------------------------------------------

def test_a_toml_syntax_error_names_its_line() -> None:
    text = BASE.replace('b = { type = "int", ge = -10, le = 10 }', 'b = { type = "int", ge = }')
    where, at, message = one_problem(text)
    assert at == line(text, "b = { type") and "not valid TOML" in message


def test_a_wrong_type_names_the_field_and_line() -> None:
    text = BASE.replace("timeout = 2.0", 'timeout = "fast"')
    assert one_problem(text)[:2] == ("tasks[0].timeout", line(text, "timeout ="))


def test_an_unknown_key_suggests_the_key_it_misspells() -> None:
    text = BASE.replace("timeout = 2.0", "tmeout = 2.0")
    assert one_problem(text) == ("tasks[0].tmeout", line(text, "tmeout"), "unknown key (did you mean timeout?)")


@pytest.mark.parametrize(("typo", "where", "meant"), [
    ('[tasks.reference]\nkind', "tasks[0].synthesise", "synthesize"),  # a table of its own
    ('kind = "solver"', "tasks[0].reference.kidn", "kind"),  # inside a table
    ('field = "total"', "tasks[0].score[0].feild", "field"),  # inside a score term (a tagged union)
    ("[tasks.request]\na = { type", "tasks[0].request.a.tpye", "type"),  # a field of a table of fields
])
def test_a_misspelled_key_anywhere_suggests_the_valid_one(typo: str, where: str, meant: str) -> None:
    text = {
        "synthesize": BASE.replace("[tasks.reference]\nkind", "[tasks.synthesise]\n\n[tasks.reference]\nkind"),
        "kind": BASE.replace('kind = "solver"', 'kind = "solver"\nkidn = "model"'),
        "field": BASE.replace('field = "total"', 'feild = "total"\nfield = "total"'),
        "type": BASE.replace('a = { type = "int", ge', 'a = { type = "int", tpye = "str", ge'),
    }[meant]
    found = [(w, m) for w, _, m in problems(text)]
    assert (where, f"unknown key (did you mean {meant}?)") in found, found


def test_a_key_near_nothing_is_still_called_a_typo_and_a_validator_setting_is_suggested() -> None:
    text = BASE.replace("timeout = 2.0", "colour = 2.0")
    assert one_problem(text)[2] == "unknown key (a typo?)"
    text = BASE + "\n[validator]\nround_interval_secs = 3\n"
    assert one_problem(text)[::2] == (
        "validator.round_interval_secs",
        "unknown validator setting (did you mean round_interval_seconds? see docs/configuration.md)")


def test_an_unknown_scorer_lists_the_scorers() -> None:
    text = BASE.replace('scorer = "exact_match"', 'scorer = "exact"')
    where, at, message = one_problem(text)
    assert (where, at) == ("tasks[0].score[0].scorer", line(text, 'scorer = "exact"'))
    assert "unknown scorer 'exact'" in message and "numeric_tolerance" in message


def test_a_missing_table_points_at_its_task() -> None:
    text = BASE.replace('[tasks.response]\ntotal = { type = "int" }\n', "")
    where, at, message = problems(text)[0]
    assert (where, at) == ("tasks[0].response", line(text, "[[tasks]]")) and "required" in message.lower()


def test_a_scorer_on_a_field_the_response_lacks() -> None:
    text = BASE.replace('field = "total"', 'field = "sum"')
    where, at, message = one_problem(text)
    assert (where, at) == ("tasks[0].score[0].field", line(text, 'field = "sum"'))
    assert "no response field 'sum'" in message and "total" in message


def test_a_syntax_error_inside_code_names_the_line_inside_the_string() -> None:
    text = BASE.replace('return {"total": request.a + request.b}', 'x = 1\nreturn {"total": request.a +}')
    where, at, message = one_problem(text)
    assert where == "tasks[0].reference.code" and "does not compile" in message
    assert at == line(text, 'return {"total": request.a +}')


def test_inline_score_terms_are_located_by_element() -> None:
    text = BASE.split("[[tasks.score]]")[0].replace("timeout = 2.0\n", '''timeout = 2.0
score = [
  { scorer = "exact_match", field = "total" },
  { scorer = "latency", target = 5.0 },
]
''')
    where, at, message = one_problem(text)
    assert (where, at) == ("tasks[0].score[1].target", line(text, "target = 5.0"))
    assert "below the task's timeout" in message


def test_limits_that_do_not_fit_the_type_or_each_other() -> None:
    text = BASE.replace('a = { type = "int", ge = -10, le = 10 }', 'a = { type = "int", ge = 10, le = -10 }')
    text = text.replace('total = { type = "int" }', 'total = { type = "int", max_length = 3 }')
    found = problems(text)
    assert ("tasks[0].request.a.ge", line(text, "a = { type"), "ge 10 exceeds le -10") in found
    assert any(w == "tasks[0].response.total.max_length" and at == line(text, "total = {") for w, at, _ in found)


def test_templates_need_words_for_their_slots() -> None:
    text = BASE.replace('a = { type = "int", ge = -10, le = 10 }', 'a = { type = "str", max_length = 40 }')
    text = text.replace("[tasks.reference]", '[tasks.synthesize]\nfields.a = { template = "{colour} car" }\n\n'
                        "[tasks.reference]")
    text = text.replace("request.a + request.b", "len(request.a) + request.b")
    assert one_problem(text)[:3] == ("tasks[0].synthesize.fields.a.template", line(text, "fields.a"),
                                     "slot {colour} has no words in synthesize.vocab")


def test_a_comparing_scorer_needs_a_reference() -> None:
    text = BASE.replace('kind = "solver"\ncode = """\nreturn {"total": request.a + request.b}\n"""\n', 'kind = "none"\n')
    where, at, message = one_problem(text)
    assert (where, at) == ("tasks[0].score[0]", line(text, "[[tasks.score]]")) and "reference" in message


def test_duplicate_task_names_and_bad_names() -> None:
    second = BASE[BASE.index("[[tasks]]"):]
    text = BASE + "\n" + second.replace('name = "add"', 'name = "Add-2"', 1) + "\n" + second
    found = problems(text)
    assert ("tasks[1].name", line(text, 'name = "Add-2"')) in [(w, a) for w, a, _ in found]
    duplicate = [(w, a) for w, a, m in found if "already used" in m]
    assert duplicate == [("tasks[2].name", [n for n, c in enumerate(text.splitlines(), 1) if c == 'name = "add"'][1])]


def test_names_that_would_shadow_something_are_refused() -> None:
    text = BASE.replace('name = "add"', 'name = "arithmetic"')
    assert one_problem(text)[:2] == ("tasks[0].name", line(text, 'name = "arithmetic"'))
    for project in ("json", "inference-subnet", "class"):
        text = BASE.replace('name = "demo"', f'name = "{project}"')
        assert one_problem(text)[:2] == ("name", 1), project


def test_validator_settings_are_checked_against_the_framework() -> None:
    text = BASE.replace('name = "demo"\n', 'name = "demo"\n\n[validator]\nround_interval_seconds = -1\nrounds = 3\n')
    found = [(w, a) for w, a, _ in problems(text)]
    assert ("validator.round_interval_seconds", line(text, "round_interval_seconds")) in found
    assert ("validator.rounds", line(text, "rounds = 3")) in found
    text = BASE.replace('name = "demo"\n', 'name = "demo"\n\n[validator]\nscoring = { quality_wieght = 1 }\n')
    assert one_problem(text)[:2] == ("validator.scoring.quality_wieght", line(text, "scoring = {"))
    text = BASE.replace('name = "demo"\n', 'name = "demo"\n\n[validator]\ntasks = ["add"]\n')
    assert one_problem(text)[:2] == ("validator.tasks", line(text, "tasks = ["))


def test_a_replay_file_must_exist_next_to_the_spec(tmp_path: Path) -> None:
    text = BASE.replace("[tasks.reference]", '[tasks.synthesize]\nkind = "replay"\npath = "data/missing.jsonl"\n\n'
                        "[tasks.reference]")
    where, at, message = one_problem(text, base=tmp_path)
    assert (where, at) == ("tasks[0].synthesize.path", line(text, "path =")) and "file not found" in message
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "missing.jsonl").write_text('{"a": 1, "b": 2}\n')
    assert parse_spec(text, base=tmp_path).tasks[0].synthesize.path == "data/missing.jsonl"
    escaping = text.replace("data/missing.jsonl", "../outside.jsonl")
    assert "inside its folder" in one_problem(escaping, base=tmp_path)[2]


def test_streaming_needs_a_str_field_to_stream() -> None:
    text = BASE.replace("timeout = 2.0", "timeout = 2.0\nstreaming = true\nstream_field = \"total\"")
    assert one_problem(text)[:3] == ("tasks[0].stream_field", line(text, "stream_field"),
                                     "the streamed field must be of type str")


# --- through the CLI ------------------------------------------------------------------------------------

def test_the_cli_prints_each_problem_with_its_line_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    text = BASE.replace("timeout = 2.0", "timeout = -1\ncapacity = 0")
    spec.write_text(text)
    result = CliRunner().invoke(app, ["new", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "2 problem(s)" in out and "is not a valid spec" in out
    assert f"{line(text, 'timeout = -1')} │ tasks[0].timeout" in out
    assert f"{line(text, 'capacity = 0')} │ tasks[0].capacity" in out
    assert not (tmp_path / "out").exists()


def test_check_validates_without_generating(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "inference_subnet.cli.main", "new", "--check",
                           str(SPECS / "textops.toml")], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "valid spec (2 task(s): caesar, stats)" in " ".join(done.stderr.split())
    assert list(tmp_path.iterdir()) == []


def test_check_runs_the_specs_code_and_names_a_typo_in_it_on_one_line(tmp_path: Path) -> None:
    """``request.bb`` compiles: only running the solver on a synthesized request finds it."""
    spec = tmp_path / "typo.toml"
    spec.write_text(BASE.replace("request.a + request.b", "request.a + request.bb"))
    done = subprocess.run([sys.executable, "-m", "inference_subnet.cli.main", "new", "--check", str(spec)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert lines == [f"error: {spec}: task add: handler: AttributeError: 'AddRequest' object has no attribute "
                     "'bb' (3 of 3 request(s))"], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo.toml"]


def test_check_names_a_scorer_that_raises(tmp_path: Path) -> None:
    """The solver runs, and a custom scorer that raises fails the scoring step, named with its cause."""
    spec = tmp_path / "scorer.toml"
    spec.write_text(BASE + '\n[[tasks.score]]\nscorer = "custom"\ncode = "return 1 / 0"\nweight = 0.1\n')
    done = subprocess.run([sys.executable, "-m", "inference_subnet.cli.main", "new", "--check", str(spec)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert "task add: score in range: ZeroDivisionError: division by zero (3 of 3 request(s))" in out


def test_the_cli_escapes_markup_in_what_it_prints(tmp_path: Path) -> None:
    """A message quoting ``list[str]`` prints it whole: Rich would read ``[str]`` as a style tag."""
    spec = tmp_path / "bad.toml"
    spec.write_text(BASE.replace('total = { type = "int" }', 'total = { type = "int", item_max_length = 3 }'))
    result = CliRunner().invoke(app, ["new", "--check", str(spec)])
    assert result.exit_code == 2
    cells = re.sub(r"[\s│]+", " ", result.output)  # the table's cells, read across their wrapped lines
    assert "item_max_length applies to list[str] fields" in cells, result.output


def test_the_cli_wants_exactly_one_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["new"])
    assert result.exit_code == 2 and "exactly one of SPEC" in result.output
    result = CliRunner().invoke(app, ["new", str(SPECS / "textops.toml"), "--from-example", "arithmetic"])
    assert result.exit_code == 2 and "got SPEC, --from-example" in " ".join(result.output.split())
