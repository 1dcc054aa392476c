"""Organic demand over simulated time: a daily curve, split among validators' gateways. Pure.

Users are people and apps in a few time zones: demand swings between a night trough and an afternoon peak.
The peak is set relative to the organic part of all declared capacity (``load``), so ``load > 1`` means the
subnet cannot serve everyone at the busiest hour, which is when the quota split is put to the test.
"""

from __future__ import annotations

import math
import random

DAY_SECONDS = 86_400.0
PEAK_HOUR = 15.0
TROUGH = 0.3
"""Demand at the quietest hour, relative to the peak."""


def daily_load(seconds: float, *, trough: float = TROUGH, peak_hour: float = PEAK_HOUR) -> float:
    """Demand at simulated time ``seconds`` (since midnight of day 0) relative to the daily peak: 1 at
    ``peak_hour``, ``trough`` twelve hours later, a raised cosine in between."""
    hour = (seconds % DAY_SECONDS) / 3600.0
    return trough + (1.0 - trough) * (1.0 + math.cos(2.0 * math.pi * (hour - peak_hour) / 24.0)) / 2.0


def stochastic_round(value: float, rng: random.Random) -> int:
    """``value`` as a whole count whose mean is ``value`` (the fraction becomes one more, with its chance)."""
    if value <= 0.0:
        return 0
    whole = math.floor(value)
    return whole + (1 if rng.random() < value - whole else 0)


def organic_demand(
    seconds: float,
    *,
    load: float,
    organic_capacity: float,
    demand_weight: float,
    rng: random.Random,
) -> int:
    """Organic requests arriving at one validator's gateway during one simulation step.

    ``organic_capacity`` is the organic part of every miner's declared capacity for one step; the subnet's
    demand is ``load * daily_load * organic_capacity``, of which this validator's users bring
    ``demand_weight``.
    """
    return stochastic_round(load * daily_load(seconds) * organic_capacity * demand_weight, rng)
