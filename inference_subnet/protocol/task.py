"""The Task API: the one thing a subnet author writes.

A Task names its route, its Request/Response models, whether it streams, a timeout and a capacity hint,
and knows how to make a synthetic request and how to score miners' answers. Everything else (auth,
blacklist, quotas, routing, queues, scoring windows, weights) is framework code.

Miners implement a :data:`Handler` per task: ``async def handle(request) -> Response`` or, for streaming
tasks, an async generator of ``Chunk`` models.
"""

from __future__ import annotations

import importlib
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from inference_subnet.protocol.perturb import perturb

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)

Handler = Callable[[Any], Awaitable[BaseModel] | AsyncIterator[BaseModel]]
"""A miner's implementation of one task."""


class HandlerError(RuntimeError):
    """A handler's expected failure, its message one line that says why (the model server it forwards to is
    down, answered an error, or broke its stream): the miner logs the message without a traceback and answers
    502 ``upstream_error``, keeping the reason in its own log (it may name a private server)."""

ENTRY_POINT_GROUP = "inference_subnet.tasks"
BUILTIN_TASKS: dict[str, str] = {
    "arithmetic": "inference_subnet.tasks.arithmetic:ArithmeticTask",
    "llm": "inference_subnet.tasks.llm.task:LLMTask",
    "image": "inference_subnet.tasks.image.task:ImageTask",
    "detect": "inference_subnet.tasks.detect.task:DetectTask",
    "ocr": "inference_subnet.tasks.ocr.task:OcrTask",
    "vision": "inference_subnet.tasks.vision.task:VisionTask",
}


class Task(ABC, Generic[Req, Resp]):
    """Base class of every task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    Request: ClassVar[type[BaseModel]]
    Response: ClassVar[type[BaseModel]]
    streaming: ClassVar[bool] = False
    Chunk: ClassVar[type[BaseModel] | None] = None
    """Streaming tasks: the model of one streamed chunk (sent as one JSON line)."""
    timeout: ClassVar[float] = 10.0
    """Seconds a miner has to answer (whole response, or the whole stream)."""
    capacity_hint: ClassVar[int] = 1000
    """Requests per epoch a typical miner can serve; miners may declare their own."""
    max_response_bytes: ClassVar[int | None] = None
    """Largest answer a validator reads from a miner for this task (a body, or a whole stream); ``None``
    uses ``validator.max_response_bytes``. Set it for tasks whose honest answers are large (images)."""
    default_handler: ClassVar[str | None] = None
    """``module:callable`` returning the reference miner handler (``factory(options) -> Handler``); a miner
    may run another (``miner.handlers``, ``--handler``)."""

    @property
    def route(self) -> str:
        """The path miners serve this task on."""
        return f"/tasks/{self.name}"

    @abstractmethod
    def synthesize(self, rng: random.Random) -> Req:
        """A fresh synthetic request; ``rng`` makes it reproducible."""

    @abstractmethod
    def score(self, request: Req, responses: Sequence[Resp | None], timings: Sequence[float]) -> list[float]:
        """Quality in [0, 1] of each miner's answer (``None`` = no valid answer, which scores 0)."""

    def assemble(self, chunks: Sequence[BaseModel]) -> Resp:
        """Streaming tasks: the full Response that a sequence of chunks amounts to."""
        raise NotImplementedError(f"task {self.name} streams but does not assemble chunks")

    def corrupt(self, answer: BaseModel) -> BaseModel:
        """What a ``wrong`` miner answers instead of the honest ``answer`` (a Response, or for a streaming
        task each Chunk): valid, so it loses on quality rather than on format. The default changes every
        field by its type; override it when a wrong answer needs the domain (another image, random boxes)."""
        return perturb(answer)

    def describe(self) -> dict[str, Any]:
        """What a validator or gateway tells clients about this task."""
        return {
            "name": self.name,
            "route": self.route,
            "streaming": self.streaming,
            "timeout": self.timeout,
            "capacity_hint": self.capacity_hint,
        }


class UnknownTask(LookupError):
    """No task by that name is installed, or its ``module:Class`` path leads to no usable Task (``reason``
    then says why: the module's own import error, a missing attribute, or an object that is no Task)."""

    def __init__(self, name: str, known: Sequence[str], reason: str | None = None):
        super().__init__(
            reason or f"unknown task {name!r}; installed tasks: {', '.join(sorted(known)) or 'none'}"
        )
        self.name = name
        self.known = sorted(known)


def import_path(path: str) -> Any:
    """The object a ``module:attr`` path names; :class:`ImportError` saying which part failed and why."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{path!r} is not a module:attribute path")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (whatever the module raised is the cause to show)
        cause = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise ImportError(f"cannot import module {module_name}: {cause}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name} has no attribute {attr!r}") from None


def available_tasks() -> dict[str, str]:
    """Task name -> import path: the built-in examples plus every ``inference_subnet.tasks`` entry point."""
    found = dict(BUILTIN_TASKS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_task(name_or_path: str) -> Task:
    """A task instance by registered name, or by ``module:Class`` path."""
    known = available_tasks()
    path = known.get(name_or_path) or (name_or_path if ":" in name_or_path else None)
    if path is None:
        raise UnknownTask(name_or_path, list(known))
    where = path if path == name_or_path else f"task {name_or_path!r} ({path})"
    try:
        cls = import_path(path)
    except ImportError as exc:
        raise UnknownTask(name_or_path, list(known), f"{where}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UnknownTask(name_or_path, list(known), f"{where} is not a Task")
    try:
        return cls()
    except TypeError as exc:  # an abstract class, a constructor that needs arguments
        raise UnknownTask(
            name_or_path, list(known), f"{where}: cannot create the task: {type(exc).__name__}: {exc}"
        ) from exc
