"""Who is on the simulated subnet: validators with a skewed stake, miners with capacities, latencies,
qualities and behaviours. Pure: the same scenario and seed always give the same population.

Stake on mainnet subnets is concentrated: a handful of validators hold most of it and a long tail holds
little each. A Zipf-like law (stake of the k-th validator ~ k^-1.1, with noise) reproduces that shape: at
64 validators the largest holds about a quarter and most of the tail sits below 1%.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from inference_subnet.chain.types import AxonInfo, Metagraph, Neuron
from inference_subnet.simulate.scenario import Scenario

ZIPF_EXPONENT = 1.1
TOTAL_STAKE = 1_000_000.0
REGISTRATION_BLOCK = 1_000
SYBIL_OVERCOMMIT = 1.5
"""A sybil group declares this much more than its machine can serve, split evenly over its uids."""
TWIN = "twin"
"""The control of each sybil group: one uid on an identical machine of its own, declaring what the whole group
declares (the same overcommit, unsplit), so a run tells what splitting a machine over uids earns against
keeping it behind one. Reported as its own class, never as honest."""


@dataclass(frozen=True, slots=True)
class ValidatorSpec:
    """A validator with a permit: its stake, and how much organic traffic its users bring."""

    index: int
    uid: int
    hotkey: str
    stake: float
    demand_weight: float
    """Share of all organic demand that arrives at this validator's gateway (sums to 1)."""


@dataclass(frozen=True, slots=True)
class Backend:
    """The machine behind one or more uids: what it really serves, and how well."""

    name: str
    capacity: int
    """Requests per epoch it can really serve; beyond, its answers time out."""
    quality: float
    """Mean task score of its answers, in [0, 1]."""
    latency: float
    """Median seconds per answer."""
    jitter: float
    """Spread of latency (sigma of a log-normal)."""
    fail_rate: float
    """Chance that an answer is an error."""


@dataclass(frozen=True, slots=True)
class MinerSpec:
    """One miner uid: its behaviour, the backend that answers for it, and the capacity it declares."""

    index: int
    uid: int
    hotkey: str
    behaviour: str
    backend: str
    declared: int
    """Capacity per epoch it declares at ``GET /capacity`` (what quotas split)."""
    source: str | None = None
    """Unused by the built-in classes (a copycat forwards to a gateway, it has no fixed source)."""
    registered: int | None = None
    """Registration block; None: the population's first registration (``REGISTRATION_BLOCK + uid``)."""

    @property
    def registration_block(self) -> int:
        return REGISTRATION_BLOCK + self.uid if self.registered is None else self.registered

    @property
    def identity(self) -> str:
        return f"{self.hotkey}@{self.registration_block}"


@dataclass(frozen=True)
class Population:
    validators: tuple[ValidatorSpec, ...]
    miners: tuple[MinerSpec, ...]
    backends: dict[str, Backend]
    distinct_keys: bool = False
    """Every miner uid has its own coldkey and IP; otherwise uids of one backend share them."""

    def metagraph(self, netuid: int, block: int) -> Metagraph:
        """The chain's view: validators with permits and stake, miners with served axons."""
        neurons = [
            Neuron(
                uid=v.uid,
                hotkey=v.hotkey,
                coldkey=f"{v.hotkey}-cold",
                stake=v.stake,
                validator_permit=True,
                registration_block=REGISTRATION_BLOCK + v.uid,
            )
            for v in self.validators
        ]
        neurons += [
            Neuron(
                uid=m.uid,
                hotkey=m.hotkey,
                coldkey=f"{m.hotkey}-cold" if self.distinct_keys else f"{m.backend}-cold",
                stake=0.0,
                validator_permit=False,
                registration_block=m.registration_block,
                axon=AxonInfo(ip=_ip(m, self.distinct_keys), port=10_000 + m.uid),
            )
            for m in self.miners
        ]
        return Metagraph(netuid=netuid, block=block, neurons=tuple(sorted(neurons, key=lambda n: n.uid)))


def _ip(miner: MinerSpec, distinct: bool) -> str:
    """A miner's IP: its own with distinct keys, else one per backend (a sybil machine behind many uids)."""
    if distinct:
        return f"10.1.{miner.uid // 256}.{miner.uid % 256}"
    number = int(miner.backend[1:]) if miner.backend[1:].isdigit() else 0
    return f"10.{2 if miner.backend.startswith('s') else 0}.{number // 256}.{number % 256}"


def stakes(n: int, rng: random.Random) -> list[float]:
    """``n`` stakes, largest first: Zipf-like (k^-1.1) with log-normal noise, summing to ``TOTAL_STAKE``."""
    raw = sorted((k**-ZIPF_EXPONENT * rng.lognormvariate(0.0, 0.35) for k in range(1, n + 1)), reverse=True)
    total = math.fsum(raw)
    return [TOTAL_STAKE * s / total for s in raw]


def generate(scenario: Scenario) -> Population:
    """The population of a scenario (validators first in uid order, then miners in a shuffled class order)."""
    rng = random.Random(f"population:{scenario.seed}")
    validators = _validators(scenario, rng)
    miners, backends = _miners(scenario, rng, first_uid=scenario.validators)
    return Population(
        tuple(validators), tuple(miners), backends, distinct_keys=scenario.sybil_distinct_keys
    )


def _validators(scenario: Scenario, rng: random.Random) -> list[ValidatorSpec]:
    stake = stakes(scenario.validators, rng)
    # Users find the validators with the most stake (they run the known gateways), with a lot of noise.
    demand = [s * rng.lognormvariate(0.0, 0.5) for s in stake]
    total = math.fsum(demand)
    return [
        ValidatorSpec(index=i, uid=i, hotkey=f"sim-v{i:03d}", stake=stake[i], demand_weight=demand[i] / total)
        for i in range(scenario.validators)
    ]


def _declared(median: int, rng: random.Random) -> int:
    """A miner's capacity per epoch: log-normal around the median, within a factor 5 of it."""
    value = median * rng.lognormvariate(0.0, 0.5)
    return max(1, int(min(median * 5, max(median / 5, value))))


def _honest(name: str, median: int, rng: random.Random, **overrides: float) -> Backend:
    capacity = _declared(median, rng)
    values = {
        "quality": 0.6 + 0.38 * rng.betavariate(2.0, 2.0),
        "latency": min(6.0, 1.5 * rng.lognormvariate(0.0, 0.5)),
        "jitter": 0.25,
        "fail_rate": rng.uniform(0.0, 0.03),
    } | overrides
    return Backend(name=name, capacity=capacity, **values)


def _miners(
    scenario: Scenario, rng: random.Random, first_uid: int
) -> tuple[list[MinerSpec], dict[str, Backend]]:
    counts = scenario.counts()
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    # Sybil uids are registered together (one operator), the other classes anywhere.
    order = [k for k in kinds if k != "sybil"]
    rng.shuffle(order)
    sybils = counts["sybil"]
    if sybils:
        at = rng.randrange(len(order) + 1)
        order[at:at] = ["sybil"] * sybils
    backends: dict[str, Backend] = {}
    specs: list[tuple[str, str, int, str | None]] = []  # behaviour, backend, declared, source
    median = scenario.capacity
    sybil_backends: list[str] = []
    sybil_seen = 0
    for i, kind in enumerate(order):
        name = f"b{i:03d}"
        if kind == "honest":
            backends[name] = _honest(name, median, rng)
        elif kind == "lazy":
            # Cheap wrong answers at once; a lazy miner can afford to declare a lot.
            backends[name] = Backend(
                name, capacity=median * 3, quality=0.07, latency=0.1, jitter=0.3, fail_rate=0.0
            )
        elif kind == "flaky":
            backends[name] = _honest(name, median, rng, fail_rate=rng.uniform(0.3, 0.5))
        elif kind in ("detector", "discriminator"):
            # A good model it uses only for the requests it wants to look good on (and a cheap one it runs
            # for the rest, which costs it next to nothing).
            backends[name] = _honest(name, median, rng)
        elif kind == "slow":
            backends[name] = _honest(name, median, rng, latency=rng.uniform(7.0, 9.0), jitter=0.3)
        elif kind == "copycat":
            # No model: its own cost is a relay hop, added to the latency of the answer it forwards.
            backends[name] = Backend(
                name,
                capacity=_declared(median, rng),
                quality=0.0,
                latency=rng.uniform(0.3, 1.0),
                jitter=0.3,
                fail_rate=0.02,
            )
        elif kind == "sybil":
            if sybil_seen % scenario.sybil_group == 0:
                group = f"s{len(sybil_backends):02d}"
                # One strong machine: twice a median miner's capacity, shared by every uid of the group.
                backends[group] = Backend(
                    group, capacity=2 * median, quality=0.92, latency=1.0, jitter=0.25, fail_rate=0.01
                )
                sybil_backends.append(group)
            name = sybil_backends[-1]
            sybil_seen += 1
        if kind == "sybil":
            # Each uid claims its part of the machine, overcommitted: not every share is used every epoch.
            declared = max(1, round(backends[name].capacity * SYBIL_OVERCOMMIT / scenario.sybil_group))
        else:
            declared = backends[name].capacity
        specs.append((kind, name, declared, None))
    # One twin per sybil group, after every other uid (so adding them changes no other miner).
    for group in sybil_backends:
        twin = f"t{group[1:]}"
        backends[twin] = dataclasses.replace(backends[group], name=twin)
        declared = sum(d for kind, name, d, _ in specs if kind == "sybil" and name == group)
        specs.append((TWIN, twin, declared, None))
    miners = [
        MinerSpec(
            index=i,
            uid=first_uid + i,
            hotkey=f"sim-m{i:03d}",
            behaviour=kind,
            backend=name,
            declared=declared,
            source=source,
        )
        for i, (kind, name, declared, source) in enumerate(specs)
    ]
    return miners, backends
