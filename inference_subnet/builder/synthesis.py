"""Synthetic requests from a spec: templates with random fields, replay of recorded organic requests, or an
owner's generator that may also return the reference answer.

A generator's reference is known only where the request was made, so it is kept in a bounded per-process
:class:`ReferenceCache` keyed by the request's JSON. Scoring in the same process (``validator run``, a local
subnet) finds it; a scoring worker elsewhere does not, and the task then scores only its reference-free
terms (see ``builder.scoring``). A task that must score everywhere names a solver instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from inference_subnet.builder.fields import WORDS, FieldSpec, fit_text, random_text
from inference_subnet.builder.spec import SynthField, TaskSpec

log = logging.getLogger(__name__)

Generator = Callable[[random.Random], Any]
"""An owner's generator: ``generate(rng)`` -> a request (model or dict), or ``(request, reference)``."""


def fill_field(fld: FieldSpec, options: SynthField | None, vocab: Mapping[str, Sequence[str]],
               rng: random.Random) -> Any:
    """One request field's synthetic value: the spec's choices, template or words, else a random valid value."""
    if options is None:
        return fld.random_value(rng)
    if options.choices:
        return rng.choice(options.choices)
    if options.template is not None:
        text = fill_template(options.template, vocab, rng)
        lo, hi = fld.length_bounds((0, max(len(text), 1)))
        return fit_text(text, lo, hi, rng)
    words = options.words or WORDS
    if fld.type == "str":
        return random_text(rng, *fld.length_bounds((1, 40)), words=words)
    if options.min is not None or options.max is not None:
        low, high = fld.bounds(options.min, options.max)
        narrowed = fld.model_copy(update={"ge": low, "le": high})
        return narrowed.random_value(rng, words)
    return fld.random_value(rng, words)


def fill_template(template: str, vocab: Mapping[str, Sequence[str]], rng: random.Random) -> str:
    """``template`` with each ``{slot}`` replaced by a random word of ``vocab[slot]`` (each use drawn anew)."""
    out: list[str] = []
    for literal, slot, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if slot:
            out.append(str(rng.choice(list(vocab[slot]))))
    return "".join(out)


class TemplateSynthesizer:
    """Requests with every field random within its limits, shaped by the spec's per-field options."""

    def __init__(self, task: TaskSpec, request_model: type[BaseModel]) -> None:
        self.task = task
        self.model = request_model

    def __call__(self, rng: random.Random) -> BaseModel:
        synth = self.task.synthesize
        values = {
            name: fill_field(fld, synth.fields.get(name), synth.vocab, rng)
            for name, fld in self.task.request.items()
        }
        return self.model.model_validate(values)


def load_recorded(path: Path, task_name: str, request_model: type[BaseModel]) -> list[BaseModel]:
    """:func:`read_recorded`, once per file version and task in this process (every copy of a task shares
    it, and a skipped line is reported once)."""
    stat = path.stat()
    return list(_recorded(path, stat.st_mtime_ns, stat.st_size, task_name, request_model))


@functools.lru_cache(maxsize=64)
def _recorded(path: Path, _mtime: int, _size: int, task_name: str,
              request_model: type[BaseModel]) -> tuple[BaseModel, ...]:
    return tuple(read_recorded(path, task_name, request_model))


def read_recorded(path: Path, task_name: str, request_model: type[BaseModel]) -> list[BaseModel]:
    """Valid requests from a JSONL file: one request per line, or request-log rows (``{"task", "payload"}``,
    what the gateway records with ``gateway.log_payloads``) of this task. Invalid lines are skipped, counted
    in the log, never sent."""
    found: list[BaseModel] = []
    skipped = 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            if isinstance(item, dict) and "payload" in item and "task" in item:
                if item["task"] != task_name:
                    continue
                item = item["payload"]
            found.append(request_model.model_validate(item))
        except (ValueError, ValidationError):
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d recorded request(s) of %s that do not validate", path, skipped, task_name)
    return found


class ReplaySynthesizer:
    """Recorded organic requests replayed at random; template synthesis when the file has none."""

    def __init__(self, recorded: Sequence[BaseModel], fallback: Callable[[random.Random], BaseModel]) -> None:
        self.recorded = list(recorded)
        self.fallback = fallback

    def __call__(self, rng: random.Random) -> BaseModel:
        if not self.recorded:
            return self.fallback(rng)
        return rng.choice(self.recorded).model_copy(deep=True)


class ReferenceCache:
    """References that came with synthetic requests, newest kept, shared by every copy of a task in this
    process (the synthesizer and the scoring workers build their own task instances)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[str, BaseModel] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: BaseModel) -> str:
        return hashlib.sha256(request.model_dump_json().encode()).hexdigest()

    def put(self, request: BaseModel, reference: BaseModel) -> None:
        key = self.key(request)
        with self._lock:
            self._items[key] = reference
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, request: BaseModel) -> BaseModel | None:
        with self._lock:
            return self._items.get(self.key(request))

    def __len__(self) -> int:
        return len(self._items)


class GeneratorSynthesizer:
    """An owner's generator; a reference it returns goes to the cache for scoring."""

    def __init__(self, generate: Generator, request_model: type[BaseModel], response_model: type[BaseModel],
                 cache: ReferenceCache) -> None:
        self.generate = generate
        self.request_model = request_model
        self.response_model = response_model
        self.cache = cache

    def __call__(self, rng: random.Random) -> BaseModel:
        made = self.generate(rng)
        reference = None
        if isinstance(made, tuple):
            if len(made) != 2:
                raise TypeError("a generator returns a request or (request, reference)")
            made, reference = made
        request = as_model(made, self.request_model)
        if reference is not None:
            self.cache.put(request, as_model(reference, self.response_model))
        return request


def as_model(value: Any, model: type[BaseModel]) -> BaseModel:
    """``value`` (a model or a dict) validated as ``model``."""
    if type(value) is model:
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return model.model_validate(value)
