"""Agentic mode: an idea in, a generated project whose tests pass out, through a bounded draft-and-repair loop.

Each round asks the LLM once. A draft that does not validate goes back with the validator's problems
(field and line); a valid draft is shown for confirmation (once), generated, and its tests run; failing tests
go back with their output. The loop stops at the first green project or after ``max_rounds``. Every round is
reported as it ends, so a person watching sees what was wrong and what was tried.

I/O enters through small callables (complete, confirm, run_tests, report), which is what makes the loop
testable against a replaying server and usable from the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from inference_subnet.builder.generate import Generated, OutputExists, generate_project
from inference_subnet.builder.llm import LLMError, Message
from inference_subnet.builder.prompt import repair_spec_message, repair_tests_message, system_prompt
from inference_subnet.builder.spec import Spec, SpecError, parse_spec
from inference_subnet.builder.testing import TestRun

Outcome = Literal["invalid_spec", "tests_failed", "tests_passed", "declined", "llm_error", "output_exists"]
_FENCE = re.compile(r"```(?:toml)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Round:
    """What one round produced."""

    number: int
    outcome: Outcome
    detail: str
    spec_text: str | None = None


@dataclass
class AgentResult:
    ok: bool
    rounds: list[Round] = field(default_factory=list)
    generated: Generated | None = None
    spec: Spec | None = None
    spec_text: str | None = None
    """The last draft (valid or not): what a person fixes by hand when the rounds ran out."""
    tests: TestRun | None = None


def extract_toml(reply: str) -> str:
    """The TOML in a reply: its first fenced block, else the whole reply."""
    match = _FENCE.search(reply)
    return (match.group(1) if match else reply).strip() + "\n"


@dataclass
class Agent:
    complete: Callable[[Sequence[Message]], str]
    run_tests: Callable[[Path], TestRun]
    confirm: Callable[[str, Spec], bool] = lambda _text, _spec: True
    report: Callable[[Round], None] = lambda _round: None
    max_rounds: int = 4

    def build(self, idea: str, out: Path | None, *, force: bool = False) -> AgentResult:
        """Draft, check, generate and test until green or out of rounds. ``out`` None: a folder named after
        the first valid draft's project, in the current directory."""
        messages: list[Message] = [
            {"role": "system", "content": system_prompt()},
            {"role": "user", "content": f"The subnet idea:\n{idea.strip()}"},
        ]
        result = AgentResult(ok=False)
        confirmed = False
        owns_output = False
        for number in range(1, self.max_rounds + 1):
            try:
                reply = self.complete(messages)
            except LLMError as exc:
                self._end(result, Round(number, "llm_error", str(exc)))
                return result
            text = extract_toml(reply)
            result.spec_text = text
            messages.append({"role": "assistant", "content": reply})
            try:
                spec = parse_spec(text, source="draft.toml")
            except SpecError as exc:
                problems = "\n".join(p.render("draft.toml") for p in exc.problems)
                self._end(result, Round(number, "invalid_spec", f"{len(exc.problems)} problem(s):\n{problems}", text))
                messages.append({"role": "user", "content": repair_spec_message(problems)})
                continue
            result.spec = spec
            if not confirmed:
                if not self.confirm(text, spec):
                    self._end(result, Round(number, "declined", "the draft was not accepted", text))
                    return result
                confirmed = True
            out = out or Path(spec.name)
            try:
                result.generated = generate_project(spec, out, spec_text=text, force=force or owns_output)
            except OutputExists as exc:
                self._end(result, Round(number, "output_exists", str(exc), text))
                return result
            owns_output = True
            run = self.run_tests(out)
            result.tests = run
            if run.ok:
                result.ok = True
                self._end(result, Round(number, "tests_passed", run.summary, text))
                return result
            failures = [line for line in run.output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
            self._end(result, Round(number, "tests_failed", "\n".join([run.summary, *failures[:10]]), text))
            messages.append({"role": "user", "content": repair_tests_message(run.summary, run.output)})
        return result

    def _end(self, result: AgentResult, round_: Round) -> None:
        result.rounds.append(round_)
        self.report(round_)
