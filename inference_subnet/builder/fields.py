"""The field types a spec may use: their Python annotation, random values within their limits, and a
wrong-but-valid variant of a value.

One table drives three uses so they cannot drift apart: the generated models (annotation and constraints),
template synthesis (a random valid value), and the ``wrong`` miner behaviour (a value that still validates
but differs, so a local subnet's faulty miner fails on quality rather than on format).
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

FieldType = Literal[
    "str", "int", "float", "bool", "choice", "list[str]", "list[int]", "list[float]", "list[bool]", "boxes"
]
FIELD_TYPES: tuple[str, ...] = FieldType.__args__  # type: ignore[attr-defined]
NUMERIC = frozenset({"int", "float", "list[int]", "list[float]"})
SIZED = frozenset({"str", "list[str]", "list[int]", "list[float]", "list[bool]", "boxes"})
LISTS = frozenset({"list[str]", "list[int]", "list[float]", "list[bool]", "boxes"})

DEFAULT_RANGE = 1000.0
"""Random numbers stay within +-this when the spec sets no limit: big enough to be varied, small enough
that sums and products stay readable in logs."""
DEFAULT_LIST = (1, 5)
WORDS = (
    "river", "stone", "light", "cloud", "market", "garden", "window", "paper", "silver", "winter", "summer",
    "forest", "ocean", "bridge", "engine", "signal", "orange", "purple", "yellow", "quiet", "rapid",
    "gentle", "bright", "narrow", "wide", "ancient", "modern", "simple", "clever", "brave", "travel",
    "listen", "build", "carry", "follow", "gather", "measure", "open", "close", "answer", "question",
    "number", "letter", "planet", "mountain", "valley", "harbor", "castle", "village", "school", "doctor",
    "farmer", "pilot", "artist", "teacher", "coffee", "bread", "apple", "lemon", "tiger", "eagle", "horse",
    "rabbit", "whale", "spider", "maple", "cedar", "copper", "marble", "canvas", "rocket", "lantern",
    "compass"
)


class BoxModel(BaseModel):
    """An axis-aligned box in pixels with its label: the wire form of ``scorers.Box``."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> BoxModel:
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError("a box needs x0 < x1 and y0 < y1")
        return self


class FieldSpec(BaseModel, extra="forbid"):
    """One request or response field: its type and limits (which the generated model enforces)."""

    type: FieldType
    description: str = ""
    min_length: int | None = Field(None, ge=0, description="str: characters; lists: items.")
    max_length: int | None = Field(None, ge=1, description="str: characters; lists: items.")
    ge: float | None = Field(None, description="Numbers (and numeric list items): lowest allowed value.")
    le: float | None = Field(None, description="Numbers (and numeric list items): highest allowed value.")
    choices: list[str] | list[int] | None = Field(None, description="type `choice`: the allowed values.")
    item_max_length: int | None = Field(None, ge=1, description="list[str]: characters per item.")
    optional: bool = Field(False, description="May be absent (null); defaults to null.")

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for limits that do not fit the type or each other."""
        out: list[tuple[str, str]] = []
        if (self.min_length is not None or self.max_length is not None) and self.type not in SIZED:
            out.append(("min_length" if self.min_length is not None else "max_length",
                        f"lengths apply to str and list fields, not {self.type}"))
        if (self.ge is not None or self.le is not None) and self.type not in NUMERIC:
            out.append(("ge" if self.ge is not None else "le", f"ge/le apply to numeric fields, not {self.type}"))
        if self.type == "choice" and not self.choices:
            out.append(("choices", "a choice field needs a non-empty `choices` list"))
        if self.choices is not None and self.type != "choice":
            out.append(("choices", f"`choices` applies to type choice, not {self.type}"))
        if self.choices and len(set(self.choices)) != len(self.choices):
            out.append(("choices", "choices repeat a value"))
        if self.item_max_length is not None and self.type != "list[str]":
            out.append(("item_max_length", "item_max_length applies to list[str] fields"))
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            out.append(("min_length", f"min_length {self.min_length} exceeds max_length {self.max_length}"))
        if self.ge is not None and self.le is not None and self.ge > self.le:
            out.append(("ge", f"ge {self.ge:g} exceeds le {self.le:g}"))
        if self.type in ("int", "list[int]"):
            for key in ("ge", "le"):
                value = getattr(self, key)
                if value is not None and value != int(value):
                    out.append((key, f"an integer field needs an integer {key}, got {value:g}"))
        return out

    # --- the generated model -------------------------------------------------------------------------

    def annotation(self) -> str:
        """The Python annotation of this field in generated code (constraints inside ``Annotated``)."""
        item = {"list[str]": "str", "list[int]": "int", "list[float]": "float", "list[bool]": "bool"}.get(self.type)
        if self.type == "choice":
            base = f"Literal[{', '.join(repr(c) for c in self.choices or ())}]"
        elif self.type == "boxes":
            base = "list[BoxModel]"
        elif item is not None:
            inner = self._item_constraints()
            base = f"list[Annotated[{item}, Field({inner})]]" if inner else f"list[{item}]"
        else:
            base = self.type
        return f"{base} | None" if self.optional else base

    def field_call(self) -> str:
        """``Field(...)`` arguments of this field in generated code."""
        args: list[str] = []
        if self.optional:
            args.append("None")
        if self.type in SIZED:
            if self.min_length is not None:
                args.append(f"min_length={self.min_length}")
            if self.max_length is not None:
                args.append(f"max_length={self.max_length}")
        if self.type in ("int", "float"):
            for key in ("ge", "le"):
                value = getattr(self, key)
                if value is not None:
                    args.append(f"{key}={_number(value, self.type)}")
        if self.description:
            args.append(f"description={self.description!r}")
        return f"Field({', '.join(args)})" if args else ""

    def _item_constraints(self) -> str:
        args: list[str] = []
        if self.type in ("list[int]", "list[float]"):
            kind = "int" if self.type == "list[int]" else "float"
            for key in ("ge", "le"):
                value = getattr(self, key)
                if value is not None:
                    args.append(f"{key}={_number(value, kind)}")
        if self.type == "list[str]" and self.item_max_length is not None:
            args.append(f"max_length={self.item_max_length}")
        return ", ".join(args)

    # --- values ------------------------------------------------------------------------------------------

    def bounds(self, low: float | None = None, high: float | None = None) -> tuple[float, float]:
        """The numeric range random values come from: the spec's synthesis range within the field's limits."""
        lo = self.ge if self.ge is not None else -DEFAULT_RANGE
        hi = self.le if self.le is not None else DEFAULT_RANGE
        if self.ge is None and self.le is not None:
            lo = min(self.le, -DEFAULT_RANGE) if self.le > -DEFAULT_RANGE else self.le - 2 * DEFAULT_RANGE
        if self.le is None and self.ge is not None:
            hi = max(self.ge, DEFAULT_RANGE) if self.ge < DEFAULT_RANGE else self.ge + 2 * DEFAULT_RANGE
        if low is not None:
            lo = max(lo, low)
        if high is not None:
            hi = min(hi, high)
        return lo, hi

    def length_bounds(self, default: tuple[int, int]) -> tuple[int, int]:
        lo = self.min_length if self.min_length is not None else default[0]
        hi = self.max_length if self.max_length is not None else max(default[1], lo)
        return lo, max(lo, hi)

    def random_value(self, rng: random.Random, words: Sequence[str] = WORDS) -> Any:
        """A random value that satisfies this field's limits."""
        match self.type:
            case "bool":
                return rng.random() < 0.5
            case "int":
                return _random_int(rng, *self.bounds())
            case "float":
                return round(rng.uniform(*self.bounds()), 3)
            case "choice":
                return rng.choice(list(self.choices or ()))
            case "str":
                return random_text(rng, *self.length_bounds((1, 40)), words=words)
            case "boxes":
                return [random_box(rng) for _ in range(rng.randint(*self.length_bounds(DEFAULT_LIST)))]
        count = rng.randint(*self.length_bounds(DEFAULT_LIST))
        item = self._item()
        return [item.random_value(rng, words) for _ in range(count)]

    def _item(self) -> FieldSpec:
        kind = self.type[5:-1]
        if kind == "str":
            return FieldSpec(type="str", min_length=1, max_length=self.item_max_length or 20)
        if kind == "bool":
            return FieldSpec(type="bool")
        return FieldSpec(type=kind, ge=self.ge, le=self.le)  # type: ignore[arg-type]

    def wrong_value(self, value: Any, rng: random.Random, words: Sequence[str] = WORDS) -> Any:
        """A value that still satisfies the limits but differs from ``value`` (where the limits allow)."""
        if value is None:
            return None
        match self.type:
            case "bool":
                return not value
            case "int":
                lo, hi = self.bounds()
                return value + 1 if value + 1 <= hi else value - 1 if value - 1 >= lo else value
            case "float":
                return _wrong_float(value, *self.bounds(), bounded=self.ge is not None and self.le is not None)
            case "choice":
                others = [c for c in self.choices or () if c != value]
                return rng.choice(others) if others else value
            case "str":
                return wrong_text(value, rng, *self.length_bounds((0, max(len(value), 1) * 2)), words=words)
            case "boxes":
                return [_shifted(box) for box in value]
        item = self._item()
        return [item.wrong_value(v, rng, words) for v in value]


def _number(value: float, kind: str) -> str:
    return str(int(value)) if kind == "int" else repr(float(value))


def _wrong_float(value: float, lo: float, hi: float, *, bounded: bool) -> float:
    """A float far from ``value`` within [lo, hi]: mirrored in a bounded range (probabilities flip), else
    negated and moved (vectors point elsewhere), else stepped away."""
    step = max(1.0, abs(value) * 0.5)
    candidates = [lo + hi - value] if bounded else []
    candidates += [-value - 1.0, value + step, value - step, value + (hi - lo) / 4, value - (hi - lo) / 4]
    floor = (hi - lo) / 10 if bounded else 0.5
    for candidate in candidates:
        if lo <= candidate <= hi and abs(candidate - value) >= floor:
            return candidate
    return value


def _random_int(rng: random.Random, lo: float, hi: float) -> int:
    low, high = int(-(-lo // 1)), int(hi // 1)  # ceil and floor
    return rng.randint(low, high) if low <= high else low


def random_text(rng: random.Random, min_length: int, max_length: int, *, words: Sequence[str] = WORDS) -> str:
    """Words from ``words`` joined by spaces, between ``min_length`` and ``max_length`` characters."""
    target = rng.randint(min_length, max(min_length, min(max_length, 80)))
    pool = [w for w in words if w] or list(WORDS)
    text = ""
    while len(text) < target:
        room = max_length - len(text) - (1 if text else 0)
        fitting = [w for w in pool if len(w) <= room]
        if not fitting:
            break
        text = f"{text} {rng.choice(fitting)}" if text else rng.choice(fitting)
    return fit_text(text or rng.choice(pool), min_length, max_length, rng)


def fit_text(text: str, min_length: int, max_length: int, rng: random.Random) -> str:
    """``text`` cut or padded (with letters) into the allowed length."""
    text = text[:max_length].rstrip() if len(text) > max_length else text
    if len(text) > max_length:
        text = text[:max_length]
    while len(text) < min_length:
        text += rng.choice(string.ascii_lowercase)
    return text


def wrong_text(value: str, rng: random.Random, min_length: int, max_length: int,
               *, words: Sequence[str] = WORDS) -> str:
    """A different text of a similar length: every word replaced, so overlap and error-rate scorers drop."""
    replaced = " ".join(rng.choice([w for w in words if w != word] or list(words)) for word in value.split())
    candidate = fit_text(replaced or "x", min_length, max_length, rng)
    if candidate == value and value:  # a one-letter text that drew its own letter: change the letter
        candidate = ("a" if value[0] != "a" else "b") + value[1:]
    return candidate


def random_box(rng: random.Random, size: float = 100.0) -> dict[str, Any]:
    x0, y0 = rng.uniform(0, size * 0.8), rng.uniform(0, size * 0.8)
    return {"x0": round(x0, 1), "y0": round(y0, 1), "x1": round(x0 + rng.uniform(5, size * 0.2), 1),
            "y1": round(y0 + rng.uniform(5, size * 0.2), 1), "label": rng.choice(["a", "b"])}


def _shifted(box: Mapping[str, Any] | BoxModel) -> dict[str, Any]:
    """The same box moved by more than its own size: IoU 0 with where it was."""
    b = box.model_dump() if isinstance(box, BoxModel) else dict(box)
    dx = (b["x1"] - b["x0"]) + 10
    return {**b, "x0": b["x0"] + dx, "x1": b["x1"] + dx}
