"""``new --check``: the spec's own code run on a few synthesized requests, before any project exists.

Shape checks cannot see inside code strings: ``request.txt`` for ``request.text`` in a solver compiles and
fails only when it runs, which without this is in the generated project's ``make test``, behind a long
traceback. Here the project is generated into a temporary folder, its tasks are imported and each takes the
steps of ``task check`` (synthesis, the baseline miner, the reference, scoring); every failure comes back as
one line naming the task and the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from inference_subnet.builder.check import check_task, error_line
from inference_subnet.builder.generate import generate_project
from inference_subnet.builder.runtime import SpecTask, forget_package
from inference_subnet.builder.spec import Spec, TaskSpec
from inference_subnet.protocol.handlers import load_handler

REQUESTS = 3
"""Synthesized requests per task: enough to meet a typo, few enough to keep the check instant."""


def trial_spec(spec: Spec, *, spec_text: str, spec_dir: Path | None, requests: int = REQUESTS) -> list[str]:
    """Problems found running the spec's code, one line each (``task NAME: step: cause``); empty if none."""
    with tempfile.TemporaryDirectory(prefix="isn-new-check-") as tmp:
        root = Path(tmp) / spec.package
        generate_project(spec, root, spec_text=spec_text, spec_dir=spec_dir)
        with _importable(root, spec.package):
            try:
                module = importlib.import_module(f"{spec.package}.tasks")
            except Exception as exc:  # noqa: BLE001 - the spec's code, run at import: any failure is the finding
                return [f"the generated package does not import: {error_line(exc)}"]
            return [line for definition in spec.tasks
                    for line in _trial_task(getattr(module, definition.class_name), definition, requests)]


def _trial_task(cls: type[SpecTask], definition: TaskSpec, requests: int) -> list[str]:
    where = f"task {definition.name}"
    try:
        task = cls()
    except Exception as exc:  # noqa: BLE001
        return [f"{where}: set-up: {error_line(exc)}"]
    if not definition.has_baseline:  # no miner to run: synthesis and the reference are what code there is
        return _synthesis_only(task, where, requests)
    try:
        handler = load_handler(task, {"behaviour": "honest"})
    except Exception as exc:  # noqa: BLE001
        return [f"{where}: handler: {error_line(exc)}"]
    report = asyncio.run(check_task(task, handler, requests=requests))
    return [f"{where}: {step.name}: {step.detail} ({step.failures} of {step.runs} request(s))"
            for step in report.steps.values() if step.failures]


def _synthesis_only(task: SpecTask, where: str, requests: int) -> list[str]:
    rng = random.Random(0)
    for _ in range(requests):
        try:
            request = task.synthesize(rng)
        except Exception as exc:  # noqa: BLE001
            return [f"{where}: synthesize: {error_line(exc)}"]
        try:
            task.reference(request)
        except Exception as exc:  # noqa: BLE001
            return [f"{where}: reference: {error_line(exc)}"]
    return []


@contextlib.contextmanager
def _importable(root: Path, package: str) -> Iterator[None]:
    """``package`` importable from ``root`` for the duration, and forgotten afterwards (modules and the
    spec and references cached for it), so a second check in the same process sees the new code."""
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[name]
        forget_package(package)
        importlib.invalidate_caches()
