"""The generic wrong answer: a valid response whose every field says something else.

A ``wrong`` miner must lose on quality, not on format, so its answer has to pass the task's Response model.
:func:`perturb` changes each field by its type (numbers moved, text reversed, flags flipped, lists and
nested models changed element by element) and keeps a change only when the model still accepts it. A task
whose answers need a domain-specific wrong answer (another image, random labels) overrides
``Task.corrupt`` instead.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def perturb(model: M) -> M:
    """``model`` with every field it can change changed, still valid for its own class."""
    changed = model.model_dump()
    for name, value in model.model_dump().items():
        for candidate in _candidates(getattr(model, name)):
            attempt = {**changed, name: candidate}
            if candidate == value:
                continue
            try:
                type(model).model_validate(attempt)
            except ValidationError:
                continue
            changed = attempt
            break
    return type(model).model_validate(changed)


def _candidates(value: Any) -> list[Any]:
    """Other values for one field, the preferred first; a bounded integer at its limit steps back."""
    first = other_value(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [first, value - 1]
    return [first]


def other_value(value: Any) -> Any:
    """Another value of the same JSON shape as ``value`` (in dumped form; ``None`` and empty text stay)."""
    if isinstance(value, BaseModel):
        return perturb(value).model_dump()
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        # Probabilities and scores flip; anything else moves by more than its own size.
        if 0.0 <= value <= 1.0:
            return 1.0 - value if value != 0.5 else 0.0
        return value * 2 + 1
    if isinstance(value, str):
        # Same length, so the answer stays within its limits; a palindrome gets its first letter moved.
        reversed_ = value[::-1]
        return reversed_ if reversed_ != value or not value else chr(ord(value[0]) % 0x10FFFF + 1) + value[1:]
    if isinstance(value, (list, tuple)):
        return [other_value(item) for item in value]
    if isinstance(value, dict):
        return {key: other_value(item) for key, item in value.items()}
    return value
