"""A clock a test sets by hand, for the services that take ``clock=`` (seconds, wall or monotonic)."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
