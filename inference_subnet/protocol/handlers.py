"""A miner's handler for a task: the factory it names (``miner.handlers`` / ``--handler``) or the task's
``default_handler``, built with the miner's options and wrapped in the requested behaviour.

A factory is any callable ``factory(options) -> Handler``: a subnet's reference model, or an operator's own
client of a model server. Every failure to get one is a :class:`HandlerUnavailable` that names the factory
and the real cause (the module's own import error, a missing attribute, a factory that raised).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference_subnet.protocol.behaviours import behaviour_of, with_behaviour
from inference_subnet.protocol.task import Handler, Task, import_path


class HandlerUnavailable(LookupError):
    """No handler could be built for a task; the message says which factory and why."""


def load_handler(task: Task, options: Mapping[str, Any] | None = None, factory: str | None = None) -> Handler:
    """The handler of ``task`` from ``factory`` (default: the task's ``default_handler``), built with
    ``options`` and behaving as ``options["behaviour"]`` asks (honest by default)."""
    options = dict(options or {})
    behaviour = behaviour_of(options)
    path = factory or task.default_handler
    if path is None:
        raise HandlerUnavailable(
            f"task {task.name!r} ships no miner handler; name one with --handler {task.name}=module:factory "
            "(miner.handlers)"
        )
    try:
        make = import_path(path)
    except ImportError as exc:
        raise HandlerUnavailable(f"handler {path}: {exc}") from exc
    if not callable(make):
        raise HandlerUnavailable(f"handler {path} is a {type(make).__name__}, not a callable factory")
    try:
        handler = make(options)
    except TypeError as exc:
        raise HandlerUnavailable(f"handler {path}: cannot build the handler: TypeError: {exc}") from exc
    if not callable(handler):
        raise HandlerUnavailable(f"handler {path} returned a {type(handler).__name__}, not a handler")
    return with_behaviour(task, handler, behaviour)
