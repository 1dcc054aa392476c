"""Benching miners that fail organic requests in a row: a circuit breaker, pure state and a clock.

Scores move a sample at a time and only a share of organic answers is scored, so a miner that goes down or
starts timing out keeps its rank for a while; every user routed to it meanwhile waits for a failover. The
breaker reacts within a few requests: after ``failures`` failures in a row the miner is skipped for
``cooldown`` seconds, doubled each time it fails again right after coming back (up to ``max_cooldown``), and
forgiven by one success. It is per gateway process: each replica learns on its own traffic, which is what
it pays for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int = 0
    benched_until: float = 0.0
    cooldown: float = 0.0


class Breaker:
    """Per-miner failure streaks and benches."""

    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        max_cooldown: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 65_536,
    ):
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self._clock = clock
        self._max_tracked = max_tracked
        self._records: dict[str, _Record] = {}

    def benched(self, identity: str) -> bool:
        record = self._records.get(identity)
        return record is not None and record.benched_until > self._clock()

    def usable(self, identities: Iterable[str]) -> list[str]:
        return [i for i in identities if not self.benched(i)]

    def success(self, identity: str) -> None:
        self._records.pop(identity, None)

    def failure(self, identity: str) -> None:
        record = self._records.get(identity)
        if record is None:
            if len(self._records) >= self._max_tracked:  # identities come from the metagraph; bound anyway
                self._records.pop(next(iter(self._records)))
            record = self._records[identity] = _Record()
        record.failures += 1
        if record.failures >= self.failures:
            # A relapse (failing again as soon as it is back) doubles the bench; the first bench is short.
            record.cooldown = min(self.max_cooldown, record.cooldown * 2 if record.cooldown else self.cooldown)
            record.benched_until = self._clock() + record.cooldown
            record.failures = self.failures - 1  # back from the bench, one more failure benches it again
