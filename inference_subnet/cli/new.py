"""`inference-subnet new`: a subnet project from a spec, from a shipped example, or from an idea."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from inference_subnet.cli.common import console, fail, settings

EXAMPLE_SPEC = "examples/specs/textops.toml"


def run_new(
    spec: Annotated[Path | None, typer.Argument(help="The subnet spec (TOML).", show_default=False)] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Project folder; default: ./NAME (the project name).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing, non-empty folder.")] = False,
    from_example: Annotated[
        str | None, typer.Option("--from-example", help="Start from a shipped example task (see --list).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="--from-example: the project name.")] = None,
    idea: Annotated[
        str | None, typer.Option("--idea", help="Describe the subnet; an LLM drafts the spec (builder.* settings).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="--idea: accept the drafted spec without asking.")] = False,
    max_rounds: Annotated[
        int | None, typer.Option("--max-rounds", min=1, max=20, help="--idea: draft and repair rounds.")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Only validate SPEC and run its code on a few synthesized requests; "
                     "generate nothing."),
    ] = False,
    list_examples: Annotated[bool, typer.Option("--list", help="List the shipped examples and exit.")] = False,
) -> None:
    """Generate a complete subnet project (tasks, miner, validator config, tests, deploy files) that uses
    this framework as a library."""
    from inference_subnet.builder import examples

    if list_examples:
        for example in examples.shipped():
            console.print(escape(example), highlight=False)
        return
    chosen = [flag for flag, given in (("SPEC", spec), ("--from-example", from_example), ("--idea", idea)) if given]
    if len(chosen) != 1:
        fail("give exactly one of SPEC, --from-example NAME or --idea TEXT"
             + (f" (got {', '.join(chosen)})" if chosen else f"; an example spec: {EXAMPLE_SPEC}"))
    if check and spec is None:
        fail("--check validates a SPEC file")
    started = time.monotonic()
    if spec is not None:
        _from_spec(spec, out, force=force, check=check, started=started)
    elif from_example is not None:
        _from_example(from_example, out, name=name, force=force, started=started)
    else:
        assert idea is not None
        _from_idea(idea, out, force=force, yes=yes, max_rounds=max_rounds)


def _from_spec(path: Path, out: Path | None, *, force: bool, check: bool, started: float) -> None:
    from inference_subnet.builder.generate import OutputExists, generate_project
    from inference_subnet.builder.spec import SpecError, load_spec

    try:
        parsed = load_spec(path)
    except SpecError as exc:
        _spec_problems(exc)
    if check:
        _check_code(parsed, path)
        console.print(f"[bold green]OK[/]: {escape(str(path))} is a valid spec ({len(parsed.tasks)} task(s): "
                      f"{escape(', '.join(t.name for t in parsed.tasks))}); its code ran on "
                      "synthesized requests")
        return
    target = out or Path(parsed.name)
    try:
        generated = generate_project(parsed, target, spec_text=path.read_text(encoding="utf-8"),
                                     spec_dir=path.parent, force=force)
    except OutputExists as exc:
        fail(f"--out: {exc}")
    _done(generated, started)


def _check_code(parsed: Any, path: Path) -> None:
    """The spec's code (solver, generator, miner, scorers) run on synthesized requests: a typo in it fails
    here, one line per broken step, not later in the generated project's tests."""
    from inference_subnet.builder.trial import trial_spec

    problems = trial_spec(parsed, spec_text=path.read_text(encoding="utf-8"), spec_dir=path.parent)
    for problem in problems[:-1]:
        console.print(f"{escape(str(path))}: {escape(problem)}", highlight=False, soft_wrap=True)
    if problems:
        fail(f"{path}: {problems[-1]}")


def _from_example(example: str, out: Path | None, *, name: str | None, force: bool, started: float) -> None:
    from inference_subnet.builder.examples import UnknownExample
    from inference_subnet.builder.generate import OutputExists, generate_from_example

    project = name or f"my-{example}".replace("_", "-")
    try:
        generated = generate_from_example(example, out or Path(project), name=project, force=force)
    except UnknownExample as exc:
        fail(f"--from-example: {exc}")
    except OutputExists as exc:
        fail(f"--out: {exc}")
    except ValueError as exc:
        fail(str(exc))
    _done(generated, started)


def _from_idea(idea: str, out: Path | None, *, force: bool, yes: bool, max_rounds: int | None) -> None:
    from inference_subnet.builder.agent import Agent, Round
    from inference_subnet.builder.llm import ChatClient
    from inference_subnet.builder.testing import run_tests

    cfg = settings().builder
    if not cfg.base_url:
        fail("no LLM endpoint is configured: set builder.base_url (ISN_BUILDER__BASE_URL, e.g. "
             "https://api.openai.com/v1 or a local OpenAI-compatible server) and builder.api_key "
             "(ISN_BUILDER__API_KEY) if it needs one. Or write the spec yourself, starting from "
             f"{EXAMPLE_SPEC}, and run `inference-subnet new SPEC.toml`.")
    if out is not None and out.is_dir() and any(out.iterdir()) and not force:
        fail(f"--out: {out} exists and is not empty; pass --force to write over it")
    rounds = max_rounds or cfg.max_rounds

    def confirm(text: str, _spec: object) -> bool:
        console.print(Syntax(text, "toml", line_numbers=True, word_wrap=True))
        if yes:
            return True
        return typer.confirm("Generate the project from this spec?", default=True, err=True)

    def report(r: Round) -> None:
        colour = {"tests_passed": "green", "declined": "yellow"}.get(r.outcome, "red")
        label = r.outcome.replace("_", " ")
        first = r.detail.splitlines()[0] if r.detail else ""
        console.print(f"[bold]round {r.number}/{rounds}[/]: [{colour}]{label}[/] - {escape(first)}")
        for line in r.detail.splitlines()[1:12]:
            console.print(f"    {escape(line)}", highlight=False)

    console.print(f"drafting a spec with {escape(cfg.model)} at {escape(cfg.base_url)} (at most {rounds} rounds) ...")
    started = time.monotonic()
    with ChatClient(cfg.base_url, model=cfg.model, api_key=cfg.api_key, timeout=cfg.request_timeout,
                    temperature=cfg.temperature) as client:

        def complete(messages: Any) -> str:
            with console.status(f"waiting for {escape(cfg.model)} ..."):
                return client.complete(messages)

        def tests(project: Path) -> Any:
            with console.status(f"running the generated tests in {escape(str(project))} ..."):
                return run_tests(project, timeout=cfg.test_timeout)

        agent = Agent(complete=complete, run_tests=tests, confirm=confirm, report=report, max_rounds=rounds)
        result = agent.build(idea, out, force=force)
    if result.ok and result.generated is not None:
        _done(result.generated, started, tested=result.tests.summary if result.tests else None)
        return
    if result.spec_text:
        target = out or Path(result.spec.name if result.spec else "subnet")
        draft = target.with_name(f"{target.name}.draft.toml")
        draft.write_text(result.spec_text, encoding="utf-8")
        console.print(escape(f"the last draft is in {draft}: fix it, then `inference-subnet new {draft} "
                             f"--out {target} --force`"))
    last = result.rounds[-1].outcome if result.rounds else "no round ran"
    fail(f"no passing project after {len(result.rounds)} round(s) (last: {last.replace('_', ' ')})", code=1)


def _spec_problems(exc: Exception) -> None:
    from inference_subnet.builder.spec import SpecError

    assert isinstance(exc, SpecError)
    table = Table(title=escape(f"{exc.source}: {len(exc.problems)} problem(s)"), show_lines=False,
                  title_justify="left")
    table.add_column("line", justify="right")
    table.add_column("field")
    table.add_column("problem")
    for p in exc.problems:
        table.add_row(str(p.line) if p.line is not None else "-", escape(p.where), escape(p.message))
    console.print(table)
    fail(f"{exc.source} is not a valid spec")


def _done(generated: object, started: float, *, tested: str | None = None) -> None:
    from inference_subnet.builder.generate import Generated

    assert isinstance(generated, Generated)
    root = generated.root
    tree = Tree(f"[bold]{escape(str(root))}[/]")
    nodes: dict[Path, Tree] = {Path("."): tree}
    for path in sorted(p.relative_to(root) for p in generated.files):
        parent = Path(".")
        for part in path.parts[:-1]:
            child = parent / part
            if child not in nodes:
                nodes[child] = nodes[parent].add(escape(f"{part}/"))
            parent = child
        nodes[parent].add(escape(path.name))
    console.print(tree)
    for warning in generated.warnings:
        console.print(f"[yellow]warning[/]: {escape(warning)}")
    if tested:
        console.print(f"generated tests: {escape(tested)}")
    console.print(
        f"[bold green]generated[/] {len(generated.files)} files for task(s) {escape(', '.join(generated.tasks))} "
        f"in {time.monotonic() - started:.1f}s. Next:\n  cd {escape(str(root))}\n  make test\n  make localnet"
    )
