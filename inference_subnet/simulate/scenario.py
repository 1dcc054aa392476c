"""What one simulation run is: the shape of the subnet and of its traffic, checked before anything runs.

These are the knobs of a what-if experiment, not settings of a running service: the framework's own
settings (quotas, scoring, gateway) come from :mod:`inference_subnet.settings` as for every other command,
so a subnet owner simulates the configuration they will deploy. Every check names the CLI flag at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

ADVERSARIAL = ("lazy", "copycat", "sybil", "flaky", "slow", "detector", "discriminator")
"""Behaviour classes besides honest, in the order they are reported."""
CLASSES = ("honest", *ADVERSARIAL)
COPYCAT_ROUTES = ("request", "fixed")
"""How a copycat picks the gateway it forwards to (``Scenario.copycat_route``)."""


class ScenarioError(ValueError):
    """A scenario value that cannot run; ``flag`` is the CLI option that set it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclass(frozen=True)
class Mix:
    """Share of miner uids behind each adversarial behaviour; the rest are honest.

    - ``lazy``: answers at once with cheap, wrong answers;
    - ``copycat``: has no model; sends each request it gets to a validator's public gateway as an organic
      request (spending real miners' capacity through the real routing) and returns that answer late;
    - ``sybil``: many uids behind one strong backend that shares its real capacity among them (together
      they declare 1.5 times what it can serve);
    - ``flaky``: an honest model that fails often;
    - ``slow``: an honest model close to the task timeout;
    - ``detector``: recognises 90% of fresh synthetic challenges and serves them with a good model; organic
      requests and replayed organic challenges get a cheap wrong one;
    - ``discriminator``: a good model for validators with stake above the floor, a cheap wrong one for floor
      validators.
    """

    lazy: float = 0.08
    copycat: float = 0.08
    sybil: float = 0.125
    flaky: float = 0.08
    slow: float = 0.08
    detector: float = 0.04
    discriminator: float = 0.04

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Scenario:
    """The subnet to simulate. Defaults: mainnet size (64 validators with permits, 192 miners, 256 uids) at
    full capacity, six tempos of 360 blocks of 12 s (7.2 simulated hours, a few minutes on two cores); 20
    tempos are a whole day."""

    validators: int = 64
    miners: int = 192
    epochs: int = 6
    seed: int = 0
    mix: Mix = field(default_factory=Mix)
    sybil_group: int = 8
    """Uids behind one sybil backend."""
    capacity: int = 1000
    """Median capacity (requests per epoch) an honest miner declares: the framework's default task hint.
    Less runs faster but coarser: shares are whole requests, and a validator at the 1% floor may send a
    miner declaring under about 334 no synthetic request at all (a share of 3, 30% of it synthetic)."""
    load: float = 1.2
    """Organic demand at the daily peak, relative to the organic part of all declared capacity."""
    ticks: int = 8
    """Simulation steps per epoch; traffic within a step happens at one simulated instant."""
    start_hour: float = 9.0
    """Simulated hour of day the run starts at (rounded down to an epoch boundary): the default run
    climbs from the morning to the daily peak at 15:00."""
    stable_tau: float = 0.9
    """Kendall tau between consecutive epochs' honest rankings from which the ranking counts as stable."""
    task: str = "simulated"
    timeout: float = 10.0
    """The task's timeout: an answer later than this is a failure, and speed scores 0 at it."""
    copycat_route: str = "request"
    """How a copycat picks the gateway it forwards to, by the gateways' share of organic demand: ``request``
    draws one per request, ``fixed`` draws one per copycat and keeps it."""
    sybil_distinct_keys: bool = False
    """Every sybil uid has its own coldkey and IP (nothing in the mechanism may rely on either)."""
    churn: float = 0.0
    """Share of miner uids deregistered at each new epoch and registered again under a new hotkey and
    registration block (same machine and behaviour): their scores start from nothing."""

    def check(self) -> Scenario:
        """Raise :class:`ScenarioError` naming the flag of the first value that cannot run; else ``self``."""
        if self.validators < 1:
            raise ScenarioError("--validators", f"needs at least 1 validator, got {self.validators}")
        if self.validators > 256:
            raise ScenarioError("--validators", f"a subnet has at most 256 uids, got {self.validators}")
        if self.miners < 2:
            raise ScenarioError("--miners", f"needs at least 2 miners to rank, got {self.miners}")
        if self.validators + self.miners > 4096:
            raise ScenarioError(
                "--miners", f"{self.validators} validators + {self.miners} miners exceed 4096 uids"
            )
        if self.epochs < 2:
            raise ScenarioError("--epochs", f"needs at least 2 epochs to compare rankings, got {self.epochs}")
        if self.epochs > 1000:
            raise ScenarioError("--epochs", f"at most 1000 epochs, got {self.epochs}")
        for name, value in self.mix.as_dict().items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ScenarioError(f"--{name}", f"a share of miners in [0, 1], got {value!r}")
        adversarial = sum(self.mix.as_dict().values())
        if adversarial > 0.9:
            raise ScenarioError(
                "--" + max(self.mix.as_dict(), key=lambda k: self.mix.as_dict()[k]),
                f"adversarial shares add up to {adversarial:.2f}; at most 0.9 "
                "(honest miners are the yardstick)",
            )
        if self.honest_count() < 2:
            raise ScenarioError(
                "--miners", f"this mix leaves {self.honest_count()} honest miners; needs at least 2"
            )
        if self.sybil_group < 2:
            raise ScenarioError(
                "--sybil-group", f"a sybil backend has at least 2 uids, got {self.sybil_group}"
            )
        if self.capacity < 1:
            raise ScenarioError(
                "--capacity", f"a capacity is at least 1 request per epoch, got {self.capacity}"
            )
        if not (math.isfinite(self.load) and 0.0 <= self.load <= 100.0):
            raise ScenarioError("--load", f"peak demand relative to capacity in [0, 100], got {self.load!r}")
        if not (math.isfinite(self.start_hour) and 0.0 <= self.start_hour < 24.0):
            raise ScenarioError("--start-hour", f"an hour of the day in [0, 24), got {self.start_hour!r}")
        if not 1 <= self.ticks <= 720:
            raise ScenarioError("--ticks", f"steps per epoch in [1, 720], got {self.ticks}")
        if not (math.isfinite(self.stable_tau) and -1.0 <= self.stable_tau <= 1.0):
            raise ScenarioError("--stable-tau", f"a Kendall tau in [-1, 1], got {self.stable_tau!r}")
        if self.copycat_route not in COPYCAT_ROUTES:
            raise ScenarioError(
                "--copycat-route", f"one of {', '.join(COPYCAT_ROUTES)}, got {self.copycat_route!r}"
            )
        if not (math.isfinite(self.churn) and 0.0 <= self.churn <= 1.0):
            raise ScenarioError("--churn", f"a share of miner uids per epoch in [0, 1], got {self.churn!r}")
        return self

    def counts(self) -> dict[str, int]:
        """Miners per behaviour class; every adversarial class rounds to the nearest whole uid."""
        out = {name: round(share * self.miners) for name, share in self.mix.as_dict().items()}
        out = {"honest": self.miners - sum(out.values()), **out}
        return out

    def honest_count(self) -> int:
        return self.counts()["honest"]
