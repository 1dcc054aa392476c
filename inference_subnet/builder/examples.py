"""The shipped examples, as ``new --from-example`` sees them: read from the task registry, so an example
added to ``BUILTIN_TASKS`` can be started from without any change here."""

from __future__ import annotations

from dataclasses import dataclass

from inference_subnet.protocol.task import BUILTIN_TASKS, available_tasks, load_task


class UnknownExample(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no shipped example {name!r}; examples: {', '.join(sorted(BUILTIN_TASKS))}")


@dataclass(frozen=True)
class ExampleInfo:
    """What a generated project needs to extend an example task."""

    name: str
    module: str
    class_name: str
    request_model: str
    response_model: str
    streaming: bool
    timeout: float
    capacity_hint: int
    has_handler: bool
    doc: str


def shipped() -> list[str]:
    return sorted(BUILTIN_TASKS)


def installed_tasks() -> set[str]:
    return set(available_tasks())


def describe(name: str) -> ExampleInfo:
    """The example ``name`` (loaded, so a broken example fails here with its own error)."""
    path = BUILTIN_TASKS.get(name)
    if path is None:
        raise UnknownExample(name)
    module, _, class_name = path.partition(":")
    task = load_task(path)
    doc = (type(task).__doc__ or "").strip().splitlines()
    return ExampleInfo(
        name=name,
        module=module,
        class_name=class_name,
        request_model=task.Request.__name__,
        response_model=task.Response.__name__,
        streaming=task.streaming,
        timeout=task.timeout,
        capacity_hint=task.capacity_hint,
        has_handler=task.default_handler is not None,
        doc=doc[0] if doc else f"The {name} example task.",
    )
