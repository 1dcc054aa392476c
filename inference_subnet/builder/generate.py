"""Write a complete project from a spec or from a shipped example: package, tests, README, Makefile,
``.ci/run``, validator and miner config, ``deploy/``.

Generation never overwrites an existing, non-empty folder unless forced. A forced run overwrites the files
it writes and removes only files that an earlier generation wrote there and this one does not (listed in
``.inference-subnet-new.json``); anything else in the folder is left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jinja2

import inference_subnet
from inference_subnet.builder import examples as example_info
from inference_subnet.builder.spec import Custom, Spec, TaskSpec, indent, parse_spec

MANIFEST = ".inference-subnet-new.json"
TEST_REQUIREMENTS = ("pytest>=8.3,<9.1", "pytest-asyncio>=0.24,<2")


class OutputExists(FileExistsError):
    """The output folder exists and is not empty, and ``force`` was not given."""


@dataclass
class Generated:
    """What a generation wrote."""

    root: Path
    package: str
    tasks: list[str]
    files: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- the framework as a dependency ---------------------------------------------------------------------

def framework_requirement(extras: Iterable[str] = ()) -> str:
    """``inference-subnet[extras]>=X.Y,<X.Y+1``: the release line this framework belongs to."""
    major, minor = (int(p) for p in inference_subnet.__version__.split(".")[:2])
    names = sorted(set(extras))
    bracket = f"[{','.join(names)}]" if names else ""
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"inference-subnet{bracket}>={major}.{minor},<{upper}"


def framework_source() -> str | None:
    """The framework's source checkout, when it runs from one (an editable install): the generated
    Makefile installs it from there, since a checkout may be ahead of any release."""
    root = Path(inference_subnet.__file__).resolve().parents[1]
    return str(root) if (root / "pyproject.toml").is_file() and (root / "inference_subnet").is_dir() else None


def extra_needs_torch(extra: str) -> bool:
    """Whether the framework's extra pulls torch (the generated Makefile then installs the CPU build first)."""
    try:
        requirements = metadata.requires("inference-subnet") or []
    except metadata.PackageNotFoundError:
        return False
    return any(r.startswith("torch") and f'extra == "{extra}"' in r for r in requirements)


def framework_extras() -> set[str]:
    try:
        return set(metadata.metadata("inference-subnet").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        return set()


# --- templates -----------------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    root = resources.files("inference_subnet.builder") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["body"] = lambda code, prefix="    ": indent(code, prefix).rstrip("\n")
    env.filters["toml"] = toml_value
    return env


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML literal of a plain value (strings, numbers, booleans, lists, tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


# Template -> output path ({package} is replaced). Files in every project:
COMMON = (
    ("common/pyproject.toml.j2", "pyproject.toml"),
    ("common/README.md.j2", "README.md"),
    ("common/Makefile.j2", "Makefile"),
    ("common/ci_run.j2", ".ci/run"),
    ("common/gitignore.j2", ".gitignore"),
    ("common/validator.toml.j2", "config/validator.toml"),
    ("common/miner.toml.j2", "config/miner.toml"),
    ("common/Dockerfile.j2", "deploy/docker/Dockerfile"),
    ("common/docker-compose.yml.j2", "deploy/docker/docker-compose.yml"),
    ("common/env.example.j2", "deploy/docker/.env.example"),
    ("common/ecosystem.config.js.j2", "deploy/pm2/ecosystem.config.js"),
    ("common/package_init.py.j2", "{package}/__init__.py"),
)
FROM_SPEC = (
    ("spec/models.py.j2", "{package}/models.py"),
    ("spec/tasks.py.j2", "{package}/tasks.py"),
    ("spec/reference.py.j2", "{package}/reference.py"),
    ("spec/handlers.py.j2", "{package}/handlers.py"),
    ("spec/test_tasks.py.j2", "tests/test_tasks.py"),
)
FROM_EXAMPLE = (
    ("example/tasks.py.j2", "{package}/tasks.py"),
    ("example/handlers.py.j2", "{package}/handlers.py"),
    ("example/test_tasks.py.j2", "tests/test_tasks.py"),
)
EXECUTABLE = frozenset({".ci/run"})


# --- entry points ----------------------------------------------------------------------------------------

def generate_project(spec: Spec, out: Path, *, spec_text: str, spec_dir: Path | None = None,
                     force: bool = False) -> Generated:
    """A project implementing ``spec`` in ``out``. ``spec_text`` is shipped as the package's ``spec.toml``
    (comments kept); ``spec_dir`` is where relative paths in the spec (replay files) are found."""
    parse_spec(spec_text, base=spec_dir)  # the shipped copy must be the spec being generated
    package = spec.package
    custom_terms = [(t, i, term) for t in spec.tasks for i, term in enumerate(t.score) if isinstance(term, Custom)]
    extras = {"llm"} if any(term.scorer == "embedding_similarity" for t in spec.tasks for term in t.score) else set()
    context = _common_context(
        name=spec.name, package=package, description=spec.description or f"The {spec.name} Bittensor subnet.",
        version=spec.version, tasks=[t.name for t in spec.tasks], extras=extras, validator=spec.validator,
        timeouts={t.name: t.timeout for t in spec.tasks},
    ) | {
        "spec": spec,
        "task_specs": spec.tasks,
        "custom_terms": custom_terms,
        "models": {t.name: _model_context(t) for t in spec.tasks},
        "imports": _model_imports(spec.tasks),
        "from_example": None,
    }
    files: dict[str, str] = {}
    env = _environment()
    for template, target in (*COMMON, *FROM_SPEC):
        files[target.format(package=package)] = env.get_template(template).render(context)
    if custom_terms:
        files[f"{package}/scoring.py"] = env.get_template("spec/scoring.py.j2").render(context)
    files[f"{package}/spec.toml"] = spec_text
    copies: dict[str, Path] = {}
    for task in spec.tasks:
        if task.synthesize.kind == "replay" and task.synthesize.path and spec_dir is not None:
            copies[f"{package}/{task.synthesize.path}"] = spec_dir / task.synthesize.path
    generated = _write(out, files, copies, force=force, package=package, tasks=[t.name for t in spec.tasks])
    for task in spec.tasks:
        if not task.has_baseline:
            generated.warnings.append(
                f"task {task.name}: no baseline miner (reference.kind = {task.reference.kind!r} and no "
                f"miner.code): write answer_{task.name} in {package}/handlers.py before `make localnet`; "
                "its tests fail until then"
            )
        if task.reference.kind == "generator":
            generated.warnings.append(
                f"task {task.name}: references come from the generator, so organic requests (which have none) "
                "are scored on latency and reliability only"
            )
    return generated


def generate_from_example(example: str, out: Path, *, name: str | None = None, force: bool = False) -> Generated:
    """A project whose task extends a shipped example task (``arithmetic``, ``llm``, ...)."""
    info = example_info.describe(example)
    project = name or f"my-{example}".replace("_", "-")
    from inference_subnet.builder.spec import PROJECT

    if not PROJECT.match(project):
        raise ValueError(f"--name: {project!r} is not a project name (lower case letters, digits, - or _)")
    package = project.replace("-", "_")
    task_name = package
    if task_name in example_info.installed_tasks():
        raise ValueError(f"--name: a task named {task_name!r} is already installed; choose another name")
    extras = {example} if example in framework_extras() else set()
    context = _common_context(
        name=project, package=package, description=f"A subnet built on the {example} example task.",
        version="0.1.0", tasks=[task_name], extras=extras, validator={}, timeouts={task_name: info.timeout},
    ) | {"from_example": info, "task_name": task_name, "class_name": _class_name(task_name)}
    env = _environment()
    files = {target.format(package=package): env.get_template(template).render(context)
             for template, target in (*COMMON, *FROM_EXAMPLE)}
    return _write(out, files, {}, force=force, package=package, tasks=[task_name])


def spec_from_file(path: Path) -> tuple[Spec, str]:
    """The validated spec and its text (raises ``SpecError``)."""
    from inference_subnet.builder.spec import load_spec

    spec = load_spec(path)
    return spec, path.read_text(encoding="utf-8")


# --- contexts ---------------------------------------------------------------------------------------------

def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) + "Task"


def _common_context(*, name: str, package: str, description: str, version: str, tasks: Sequence[str],
                    extras: set[str], validator: Mapping[str, Any], timeouts: Mapping[str, float]) -> dict[str, Any]:
    source = framework_source()
    return {
        "name": name,
        "package": package,
        "description": description,
        "version": version,
        "task_names": list(tasks),
        "requirement": framework_requirement(extras),
        "framework_install": f"-e {source}" if source else framework_requirement(extras),
        "framework_version": inference_subnet.__version__,
        "needs_torch": any(extra_needs_torch(e) for e in extras),
        "test_requirements": TEST_REQUIREMENTS,
        "validator": dict(validator),
        "tasks_json": json.dumps(list(tasks)),
        "max_timeout": max(timeouts.values()),
    }


def _model_context(task: TaskSpec) -> dict[str, Any]:
    def fields(specs: Mapping[str, Any]) -> list[dict[str, str]]:
        return [{"name": n, "annotation": f.annotation(), "call": f.field_call()} for n, f in specs.items()]

    chunk: list[dict[str, str]] = []
    if task.streaming:
        for n, f in task.response.items():
            if n == task.stream_field:
                chunk.append({"name": n, "annotation": "str", "call": "Field(\"\")"})
            else:
                loose = f.model_copy(update={"optional": True})
                chunk.append({"name": n, "annotation": loose.annotation(), "call": "Field(None)"})
    return {"request": fields(task.request), "response": fields(task.response), "chunk": chunk,
            "prefix": task.model_prefix}


def _model_imports(tasks: Sequence[TaskSpec]) -> dict[str, bool]:
    specs = [f for t in tasks for f in (*t.request.values(), *t.response.values())]
    return {
        "literal": any(f.type == "choice" for f in specs),
        "annotated": any("Annotated[" in f.annotation() for f in specs),
        "box": any(f.type == "boxes" for f in specs),
    }


# --- writing ----------------------------------------------------------------------------------------------

def _write(out: Path, files: Mapping[str, str], copies: Mapping[str, Path], *, force: bool, package: str,
           tasks: list[str]) -> Generated:
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out} exists and is not empty; pass --force to write over it")
    previous = _manifest(out)
    generated = Generated(root=out, package=package, tasks=tasks)
    written = set(files) | set(copies)
    for rel in sorted(previous - written):
        stale = out / rel
        if stale.is_file():
            stale.unlink()
            generated.removed.append(stale)
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        if rel in EXECUTABLE:
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        generated.files.append(target)
    for rel, source in copies.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        generated.files.append(target)
    (out / MANIFEST).write_text(json.dumps(sorted(written), indent=1) + "\n", encoding="utf-8")
    return generated


def _manifest(out: Path) -> set[str]:
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    # Only plain relative paths inside the folder: a hand-edited manifest must not delete elsewhere.
    return {p for p in listed if isinstance(p, str) and not os.path.isabs(p) and ".." not in Path(p).parts}
