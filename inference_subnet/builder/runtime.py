"""The base class of every task a spec generates: synthesis, references and scoring driven by the spec,
the models and the owner's functions supplied by the generated package.

A generated task is a few lines: its name, models, the spec entry (read from the package's ``spec.toml``
at import) and :class:`Hooks` pointing at the owner's functions. Everything else is here, so a fix in the
framework reaches every generated subnet with an upgrade rather than a regeneration.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from inference_subnet.builder.scoring import CustomScorer, SpecScorer, build_scorer
from inference_subnet.builder.spec import Spec, TaskSpec, parse_spec
from inference_subnet.builder.synthesis import (
    Generator,
    GeneratorSynthesizer,
    ReferenceCache,
    ReplaySynthesizer,
    TemplateSynthesizer,
    as_model,
    load_recorded,
)
from inference_subnet.protocol.task import Task

Solver = Callable[[BaseModel], Any]
"""The validator's reference: ``solve(request)`` -> a response (model or dict)."""


@dataclass(frozen=True)
class Hooks:
    """The owner's functions a task uses, as the generated package wires them."""

    solver: Solver | None = None
    generator: Generator | None = None
    custom: Mapping[int, CustomScorer] = field(default_factory=dict)


@functools.cache
def package_spec(package: str) -> Spec:
    """The spec shipped inside a generated package (``PACKAGE/spec.toml``), validated once per process."""
    source = resources.files(package) / "spec.toml"
    return parse_spec(source.read_text(encoding="utf-8"), source=f"{package}/spec.toml")


_CACHES: dict[str, ReferenceCache] = {}


def forget_package(package: str) -> None:
    """Drop what this process cached for ``package`` (its spec, its references): for a package that is
    imported, changed and imported again in one process (``new --check``)."""
    package_spec.cache_clear()
    for key in [k for k in _CACHES if k.startswith(f"{package}:")]:
        del _CACHES[key]


class SpecTask(Task[BaseModel, BaseModel]):
    """A task defined by a spec entry. Subclasses set ``name``, ``Request``, ``Response`` (``Chunk`` when
    streaming), ``definition``, ``package`` and ``hooks``."""

    definition: ClassVar[TaskSpec]
    package: ClassVar[str]
    """The generated package: replay files are read from it."""
    hooks: ClassVar[Hooks] = Hooks()

    def __init__(self) -> None:
        spec = self.definition
        self.cache = _CACHES.setdefault(f"{self.package}:{self.name}", ReferenceCache())
        template = TemplateSynthesizer(spec, self.Request)
        synth = spec.synthesize
        if synth.kind == "generator":
            if self.hooks.generator is None:
                raise LookupError(f"task {self.name}: synthesize.kind is generator but no generator is wired")
            self._synthesize: Callable[[random.Random], BaseModel] = GeneratorSynthesizer(
                self.hooks.generator, self.Request, self.Response, self.cache)
        elif synth.kind == "replay":
            assert synth.path is not None
            path = Path(str(resources.files(self.package) / synth.path))
            self._synthesize = ReplaySynthesizer(load_recorded(path, self.name, self.Request), template)
        else:
            self._synthesize = template
        self.scorer: SpecScorer = build_scorer(spec, timeout=self.timeout, custom=self.hooks.custom)
        self._wrong_rng = random.Random(0)

    def synthesize(self, rng: random.Random) -> BaseModel:
        return self._synthesize(rng)

    def corrupt(self, answer: BaseModel) -> BaseModel:
        """A ``wrong`` miner's answer: every field changed within the spec's limits."""
        from inference_subnet.builder.handlers import wrong_answer

        return wrong_answer(self, answer, self._wrong_rng)

    def reference(self, request: BaseModel) -> BaseModel | None:
        """What the validator compares answers with: a reference that came with the synthetic request, else
        the solver's (or reference model's) answer; ``None`` when neither exists."""
        cached = self.cache.get(request)
        if cached is not None:
            return cached
        if self.hooks.solver is not None:
            return as_model(self.hooks.solver(request), self.Response)
        return None

    def score(self, request: BaseModel, responses: Sequence[BaseModel | None], timings: Sequence[float]) -> list[float]:
        if all(r is None for r in responses):
            return [0.0] * len(responses)
        reference = self.reference(request) if self.scorer.needs_reference else None
        return self.scorer.score(request, responses, timings, reference)

    # --- streaming -------------------------------------------------------------------------------------

    @property
    def stream_field(self) -> str:
        assert self.definition.stream_field is not None
        return self.definition.stream_field

    def chunk(self, piece: Any) -> BaseModel:
        """One streamed piece as a Chunk: a text piece of the streamed field, or a chunk/dict as is."""
        assert self.Chunk is not None
        if isinstance(piece, str):
            return self.Chunk.model_validate({self.stream_field: piece})
        return as_model(piece, self.Chunk)

    def split(self, response: BaseModel) -> list[BaseModel]:
        """A full response as chunks: the streamed text word by word, the other fields on the last chunk."""
        assert self.Chunk is not None
        data = response.model_dump()
        text = data.pop(self.stream_field) or ""
        pieces = re.findall(r"\S+\s*|\s+", text) or [""]
        chunks = [self.Chunk.model_validate({self.stream_field: p}) for p in pieces[:-1]]
        chunks.append(self.Chunk.model_validate({self.stream_field: pieces[-1], **data}))
        return chunks

    def assemble(self, chunks: Sequence[BaseModel]) -> BaseModel:
        text = "".join(getattr(c, self.stream_field) or "" for c in chunks)
        others: dict[str, Any] = {}
        for c in chunks:
            for key, value in c.model_dump(exclude={self.stream_field}).items():
                if value is not None:
                    others[key] = value
        return self.Response.model_validate({**others, self.stream_field: text})
