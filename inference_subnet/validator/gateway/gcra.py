"""The generic cell rate algorithm (GCRA) behind per-key rate limits, as pure arithmetic.

A fixed per-minute window lets a key spend its whole minute at once and again right after the boundary
(twice its rate within a second), and its ``Retry-After`` points at the boundary, so refused clients all
come back together. GCRA keeps one number per key instead, the *theoretical arrival time* (TAT): the time at
which the key would be idle again if it sent at exactly its rate. A request is admitted when the TAT is less
than ``burst`` intervals ahead of now; admitting pushes the TAT one interval further. So a key may send
``burst`` requests at once, is then paced at one request per interval, and a refused request learns the exact
wait until the next one fits. In any window of length ``w`` a key is admitted at most ``burst + w / interval``
requests.

``store/lua/apikey_acquire.lua`` runs the same arithmetic inside Redis, on the server's clock, so every
gateway replica shares one TAT per key; this module is its reference, tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

SLACK = 1e-9
"""Seconds by which a request may be early and still count as on time: TATs are sums of float intervals, so a
client sending exactly at its rate would otherwise be refused now and then for a rounding error."""


@dataclass(frozen=True, slots=True)
class Pace:
    """How one key is paced: ``interval`` seconds between requests once its burst is spent."""

    interval: float
    burst: int

    @classmethod
    def per_minute(cls, rate_per_minute: int, burst: int) -> Pace:
        """The burst is at least one second of the key's rate and at most its whole minute: a key allowed
        3 requests a minute may not send 10 at once because the gateway-wide burst is 10, and a key allowed
        60 000 a minute may send 1 000 at once (the concurrency limit bounds what is in flight)."""
        if rate_per_minute <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        one_second = -(-rate_per_minute // 60)
        return cls(60.0 / rate_per_minute, min(max(burst, one_second), rate_per_minute))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    tat: float
    """The key's TAT after this request (unchanged when refused: a refusal spends nothing)."""
    retry_after: float
    """Seconds until a request would be admitted (0 when admitted)."""


def decide(tat: float | None, now: float, pace: Pace) -> Decision:
    """Admit or refuse one request arriving at ``now`` for a key whose TAT is ``tat`` (``None``: never seen or
    idle long enough that its record expired)."""
    base = now if tat is None else max(tat, now)
    new_tat = base + pace.interval
    earliest = new_tat - pace.burst * pace.interval
    if earliest - now > SLACK:
        return Decision(False, base, earliest - now)
    return Decision(True, new_tat, 0.0)


@dataclass(frozen=True, slots=True)
class Headroom:
    """What a key may still do right after a decision, for the ``x-ratelimit-*`` headers."""

    remaining: int
    """Requests that would be admitted at once from now (0 to ``burst``)."""
    reset: float
    """Seconds until the whole burst is available again (the TAT reaches now)."""


def headroom(tat: float | None, now: float, pace: Pace) -> Headroom:
    """The key's headroom at ``now`` given its TAT (after the decision): each interval the TAT is ahead of
    now takes one request of the burst."""
    ahead = 0.0 if tat is None else max(0.0, tat - now)
    room = int((pace.burst * pace.interval - ahead + SLACK) // pace.interval)
    return Headroom(remaining=max(0, min(pace.burst, room)), reset=ahead)
