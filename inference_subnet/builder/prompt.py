"""What the LLM is told: the spec format (derived from the spec models, so it cannot drift from what is
validated), the rules that make a generated project pass its tests, and one complete example."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from inference_subnet.builder import spec as s
from inference_subnet.builder.fields import FIELD_TYPES, FieldSpec

EXAMPLE = """\
name = "wordplay"
description = "Miners reverse words and add integers."

[[tasks]]
name = "reverse_words"
description = "Reverse the order of the words of a sentence."
timeout = 2.0
capacity = 5000

[tasks.request]
sentence = { type = "str", min_length = 1, max_length = 120 }

[tasks.response]
sentence = { type = "str", max_length = 120 }

[tasks.synthesize]
kind = "template"
fields.sentence = { template = "{subject} {verb} the {object}" }
vocab.subject = ["the cat", "a pilot", "my neighbour"]
vocab.verb = ["sees", "paints", "follows"]
vocab.object = ["moon", "river", "parade"]

[tasks.reference]
kind = "solver"
code = '''
return {"sentence": " ".join(reversed(request.sentence.split()))}
'''

[[tasks.score]]
scorer = "word_error_rate"
field = "sentence"
weight = 0.9

[[tasks.score]]
scorer = "latency"
target = 0.5
weight = 0.1

[[tasks]]
name = "add"
timeout = 1.0

[tasks.request]
a = { type = "int", ge = -1000, le = 1000 }
b = { type = "int", ge = -1000, le = 1000 }

[tasks.response]
total = { type = "int" }

[tasks.reference]
kind = "solver"
code = '''
return {"total": request.a + request.b}
'''

[[tasks.score]]
scorer = "exact_match"
field = "total"
"""


def _fields_doc(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    parts = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = "" if info.is_required() else f" = {info.get_default(call_default_factory=True)!r}"
        note = f": {info.description.rstrip('.')}" if info.description else ""
        parts.append(f"`{name}`{default}{note}")
    return "; ".join(parts)


def _scorers_doc() -> str:
    lines = []
    union: Any = s.ScoreTerm.__origin__  # type: ignore[attr-defined]
    for term in union.__args__:
        name = term.model_fields["scorer"].annotation.__args__[0]
        params = _fields_doc(term, skip=("scorer", "weight", "field", "reference_field"))
        compares = "field" in term.model_fields
        lines.append(f"- `{name}`{' (compares `field`)' if compares else ''}{': ' + params if params else ''}")
    return "\n".join(lines)


def system_prompt() -> str:
    """The instructions for drafting a spec."""
    return f"""You design Bittensor inference subnets for the inference-subnet framework. Given an idea, \
write its spec: one TOML document that the command `inference-subnet new` turns into a working project \
(miners, validator, tests). Reply with the complete spec in one ```toml block and nothing else.

# Spec format
Top level: {_fields_doc(s.Spec, skip=('tasks',))}; then one `[[tasks]]` table per task.
Task keys: {_fields_doc(s.TaskSpec, skip=('request', 'response', 'synthesize', 'reference', 'miner', 'score', 'tests'))}.
`[tasks.request]` and `[tasks.response]`: one inline table per field: `name = {{ type = "...", ... }}`.
Field types: {", ".join(f"`{t}`" for t in FIELD_TYPES)}. Field keys: {_fields_doc(FieldSpec, skip=('type',))}.
`[tasks.synthesize]`: {_fields_doc(s.SynthesizeSpec)}. Per-field options in `fields.NAME = {{ ... }}`: \
{_fields_doc(s.SynthField)}.
`[tasks.reference]`: {_fields_doc(s.ReferenceSpec)}.
`[tasks.miner]` (optional baseline miner): {_fields_doc(s.MinerSpec)}.
`[tasks.tests]` (optional): {_fields_doc(s.TestSpec)}.
`[[tasks.score]]`, one table per term; the task's quality is the weighted mean of its terms. Every term has `scorer` and `weight` (default 1.0); terms that compare name the response `field` (and `reference_field` when the reference's field differs). The scorers:
{_scorers_doc()}

# Rules
- Code values are Python function BODIES (multi-line TOML literal strings '''...'''), using only the \
standard library. A solver body sees `request` (a pydantic model with the request fields) and returns a dict \
of the response fields. A generator body sees `rng` (random.Random) and returns a dict of request fields, \
or a (request dict, reference dict) tuple. A custom scorer body sees request, response, reference, latency \
and returns a float in [0, 1].
- Every task needs a way for the validator to know the right answer: prefer `reference.kind = "solver"` \
with deterministic code. Use "generator" when the answer is known only when the request is made; then also \
give `[tasks.miner] code` so a baseline miner exists.
- The solver's answers must satisfy the response limits, and synthetic requests the request limits.
- Scorers compare response fields with the same field of the reference; pick ones that give an honest answer \
1.0 and a wrong answer little. Add a small `latency` term (weight about 0.1, target below the timeout).
- Names: lower case letters, digits and underscores; the project name may use `-`.

# Example
```toml
{EXAMPLE}```
"""


def repair_spec_message(problems: str) -> str:
    return (
        "That spec does not validate. Problems, one per line (file:line: field: message):\n"
        f"{problems}\n\nReply with the complete corrected spec in one ```toml block."
    )


def repair_tests_message(summary: str, output: str) -> str:
    return (
        f"The project generated from that spec fails its own tests ({summary}). The end of the test output:\n"
        f"```\n{output}\n```\n"
        "Fix the spec (reference or miner code, field limits, synthesis, scorers or test thresholds) and reply "
        "with the complete corrected spec in one ```toml block."
    )
