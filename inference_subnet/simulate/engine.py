"""The loop that drives Redis: every simulated validator's real quota and score books, every miner's real
quota guard, one shared Redis, simulated time.

Each epoch (one tempo) is cut into steps. In a step every validator does what its services would do in that
stretch of time, batched the way the services batch it:

1. **plan** (pure): synthetic rounds with :func:`~..sampling.sample_synthetic` (every ``round_interval``
   seconds, ``miners_per_round`` miners) and organic routing with :func:`~..sampling.rank_organic` over this
   validator's own view of its remaining quota (as the gateway's router keeps one), for the organic
   demand that reached its gateway;
2. **consume**: the plan goes through ``consume_quota.lua`` (one pipeline per validator and kind,
   :meth:`QuotaBook.consume_many`), then each miner's own guard (:class:`MinerQuota`, every guard's charges
   in one batch through the miners' :class:`Coalescer`, :meth:`MinerQuota.decide_many`);
3. **answer** (pure, in a fixed order): miners answer from their backend;
4. failed organic requests are retried on the next candidate, up to the gateway's ``max_attempts``;
5. **score**: dropout admission (``admit_scored.lua``, :meth:`ScoreBook.admit_many`) and recording
   (``record_sample.lua``, :meth:`ScoreBook.record`).

At the end of each epoch the miners' own counters are read back from Redis (and the validators' books in the
first and last epochs, to check they agree with what the scripts granted), every validator's aggregates become
weights through the real weight math (:func:`scores_to_weights`, :func:`convert_weights`),
and a stake-weighted consensus turns them into incentive. Keys of finished epochs and periods are deleted as
the simulation goes, because Redis expires keys on the wall clock and the simulation's clock runs far faster.

Adversaries with a trick (:mod:`.behaviours`): a detector is told fresh challenges from replayed organic ones
(a share ``validator.organic_reuse_ratio`` of challenges replays recorded organic requests); a discriminator
is told whether its caller's stake is above the floor; a copycat's requests are forwarded as organic requests
to a gateway chosen by demand weight, routed and answered like any other (:meth:`Simulation._forward`), and
a fresh challenge forwarded to the gateway of the validator that sent it hits that validator's canary.
Metagraph churn (``Scenario.churn``) re-registers a share of miner uids under new identities each epoch.

What is not simulated: the network (miners answer in simulated time), the scoring stream (samples go straight
to the score book, as a worker would write them), stake changes, and the pace of the gateway's reads: the
standings of the quality bar are re-read after every step (the gateway re-reads them every few seconds) and
the scores that order the routing once per epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.crc import key_slot

from inference_subnet.chain.types import InvalidWeights, WeightVecTooShort
from inference_subnet.chain.weights import convert_weights
from inference_subnet.miner.quota import MinerQuota, eligible_stakes
from inference_subnet.settings import Settings
from inference_subnet.simulate.behaviours import Answer, expected_value, relay, respond
from inference_subnet.simulate.metrics import (
    class_shares,
    consensus_incentive,
    ranking_tau,
)
from inference_subnet.simulate.population import TWIN, MinerSpec, Population, ValidatorSpec, generate
from inference_subnet.simulate.results import (
    BackendRow,
    EpochRow,
    MinerRow,
    SimulationResult,
    ValidatorRow,
)
from inference_subnet.simulate.scenario import CLASSES as SCENARIO_CLASSES
from inference_subnet.simulate.scenario import Scenario
from inference_subnet.simulate.summary import summarise
from inference_subnet.simulate.traffic import DAY_SECONDS, daily_load, organic_demand
from inference_subnet.store.coalescing import Coalescer, CoalescingRedis
from inference_subnet.store.keys import Keys
from inference_subnet.protocol.quota_math import permitted_stakes, split_capacity
from inference_subnet.protocol.rate_math import (
    BORROWED,
    GUARANTEED,
    REFUSED,
    SLACK,
    BookState,
    Pace,
    book_decide,
)
from inference_subnet.validator.managing.quotas import Entitlement, QuotaBook
from inference_subnet.validator.managing.sampling import (
    OrganicCandidate,
    SyntheticCandidate,
    contender_order,
    quality_bar,
    rank_organic,
    sample_synthetic,
)
from inference_subnet.validator.managing.score_math import UNJUDGED, Sample, Standing
from inference_subnet.validator.managing.scores import ScoreBook
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.weights import paid_by_volume, scores_to_weights

T = TypeVar("T")

CLASSES = (*SCENARIO_CLASSES, TWIN)
"""Every class reported: the scenario's, and the twins that control its sybil groups."""

NETUID = 1
MAX_WEIGHT_LIMIT = 1.0
"""``MaxWeightsLimit`` of the simulated subnet (the chain's default: no clipping of one uid's share)."""
APPLIED_TTL = 60.0
"""Seconds (wall clock) an applied marker is kept in the simulation."""
CONCURRENCY = 128
"""Redis calls in flight at once (the client's pool holds 256 connections)."""
BAD_ANSWER = 0.5
"""An organic answer scoring under this is a bad one for the user, whatever the transport said."""
REGISTERED_BASE = 100_000
"""Registration blocks of re-registered uids start here (after every first registration)."""
MAX_FORWARDS = 3
"""Hops a request may make through copycats forwarding it before it is dropped (a copycat's forward can be
routed to another copycat)."""
SLICES = 4
"""Slices of a step handled one after the other: calls within a slice reach Redis in time order per
validator and per miner, retries after the slice's first attempts."""
RETRY_DELAY = 0.05
"""Simulated seconds between a failed attempt and the gateway's next one."""
START_DAY = 19_723
"""Simulated time counts from midnight of this day (days since 1970): a whole number of epochs of the default
length, so quota epochs and simulated days line up."""


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Progress of the run, after each step."""

    epoch: int
    step: int
    steps: int
    served: int
    scored: int


@dataclass
class _Call:
    """One attempt to have ``miner`` answer for ``validator``."""

    validator: int
    miner: int
    kind: str
    job: str
    at: float = 0.0
    """Simulated time of the call: a step's calls are spread over the step, so both sides' paces see them."""
    mode: int = GUARANTEED
    """What the validator's own book planned: guaranteed, or a borrow attempt."""
    granted: bool = False
    allowed: bool = False
    answer: Answer | None = None
    fresh: bool = True
    """A fresh synthetic challenge (not a replayed organic request): what a detector tells and a canary
    guards."""
    hops: int = 0
    """Copycat forwards this request has already been through."""


@dataclass
class _Organic:
    """One organic request: who it was tried on, and who is next."""

    job: str
    fallbacks: list[int]
    calls: list[_Call] = field(default_factory=list)
    at: float = 0.0

    @property
    def served(self) -> bool:
        return any(c.answer is not None and c.answer.ok for c in self.calls)


@dataclass
class _Validator:
    spec: ValidatorSpec
    keys: Keys
    quotas: QuotaBook
    scores: ScoreBook
    volumes: VolumeBook
    rng: random.Random
    entitled: float
    """Its fraction of every miner's capacity (stake share with the floor)."""
    share: list[int] = field(default_factory=list)
    syn_limit: list[int] = field(default_factory=list)
    ceiling: list[int] = field(default_factory=list)
    pace: list[Pace] = field(default_factory=list)
    book: list[BookState] = field(default_factory=list)
    """Its book's state of every miner, mirrored with the same pure math the Lua script runs."""
    ready: list[float] = field(default_factory=list)
    """When its guaranteed pace on each miner has room again (``inf``: share used up this epoch)."""
    backoff: list[float] = field(default_factory=list)
    """Until when it does not ask a miner to lend again (after a refused borrow: the miner's interval)."""
    routing: list[float] = field(default_factory=list)
    """Aggregate score per miner as its gateway last read them (the prior before any)."""
    standings: dict[str, Standing] = field(default_factory=dict)
    """Recent quality and evidence per miner as its gateway last read them (none before any)."""
    # totals over the run
    synthetic: int = 0
    organic: int = 0
    organic_ok: int = 0
    demand: int = 0
    unplaced: int = 0
    unplaced_at_step: int = 0
    """``unplaced`` when the current step began."""
    scored: int = 0
    unscored: int = 0
    """Responses not scored: organic ones left out by sampling, and any turned away by the dropout cap."""
    capped: int = 0
    """Responses the dropout cap turned away (read from its counters)."""
    capacity_entitled: int = 0
    weights_set: int = 0


class Simulation:
    """One run of a scenario against one Redis. Use :meth:`run` once."""

    def __init__(
        self,
        scenario: Scenario,
        settings: Settings,
        redis: aioredis.Redis,
        *,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> None:
        self.scenario = scenario.check()
        self.settings = settings
        self.redis = redis
        self.books_redis = CoalescingRedis(redis) if type(redis) is aioredis.Redis else redis
        """What the quota and score books talk to: ``redis`` itself, with concurrent commands coalesced."""
        self._limit = None if isinstance(self.books_redis, CoalescingRedis) else CONCURRENCY
        """Book calls in flight at once: unbounded when coalesced (a few round trips carry them all)."""
        self.on_step = on_step
        self.population: Population = generate(scenario)
        self.quota_settings = settings.validator.quotas
        # The applied markers' expiry is wall-clock time, and no scoring job is ever delivered twice here: a
        # short one lets Redis drop them on its own instead of holding a day's worth of them.
        self.scoring_settings = settings.validator.scoring.model_copy(
            update={"applied_ttl_seconds": min(settings.validator.scoring.applied_ttl_seconds, APPLIED_TTL)}
        )
        self.epoch_seconds = self.quota_settings.epoch_seconds
        self.step_seconds = self.epoch_seconds / scenario.ticks
        self.midnight = math.ceil(START_DAY * DAY_SECONDS / self.epoch_seconds) * self.epoch_seconds
        """Midnight of the simulated day (on an epoch boundary): the daily curve's origin."""
        self.start = (
            self.midnight + math.floor(scenario.start_hour * 3600.0 / self.epoch_seconds) * self.epoch_seconds
        )
        """The first epoch's start: the epoch boundary at or before ``start_hour``."""
        self.now = self.start
        self.subnet = f"{settings.subnet_name}-sim-{uuid.uuid4().hex[:8]}"
        """A key prefix of this run alone: runs never see each other, and cleanup removes only its keys."""
        self.metagraph = self.population.metagraph(NETUID, block=1)
        self.miners = self.population.miners
        self.identities = [m.identity for m in self.miners]
        self.index = {identity: i for i, identity in enumerate(self.identities)}
        self.backends = self.population.backends
        self.classes = {m.identity: m.behaviour for m in self.miners}
        self._miner_rng = [random.Random(f"miner:{scenario.seed}:{m.index}") for m in self.miners]
        self._traffic_rng = random.Random(f"traffic:{scenario.seed}")
        # One round trip out at a time: every miner sees its calls in time order, as its pace needs (each
        # delivery's guard checks are one batch, one round trip).
        self._coalescer = Coalescer(redis, max_in_flight=1)
        self._miner_keys = [
            Keys(subnet=self.subnet, netuid=NETUID, role=f"miner:{m.hotkey}") for m in self.miners
        ]
        self._guards = [
            MinerQuota(
                redis,
                self._miner_keys[m.index],
                capacities={scenario.task: m.declared},
                epoch_seconds=self.epoch_seconds,
                min_share=self.quota_settings.min_share,
                min_requests=self.quota_settings.min_requests,
                burst_seconds=self.quota_settings.burst_seconds,
                borrow_ceiling=self.quota_settings.borrow_ceiling,
                coalescer=self._coalescer,
            )
            for m in self.miners
        ]
        stakes = permitted_stakes(self.metagraph)
        capacity_total = sum(m.declared for m in self.miners)
        entitled: dict[str, float] = {spec.hotkey: 0.0 for spec in self.population.validators}
        for m in self.miners:  # the floor is a number of requests: a fraction that depends on the miner
            for hotkey, share in split_capacity(
                m.declared, stakes, min_share=self.quota_settings.min_share,
                min_requests=self.quota_settings.min_requests,
            ).items():
                entitled[hotkey] += share / capacity_total if capacity_total else 0.0
        self.validators = [
            self._validator(spec, entitled[spec.hotkey]) for spec in self.population.validators
        ]
        self.truth = {
            m.identity: expected_value(
                m,
                self.backends[m.backend],
                self.scoring_settings,
                timeout=scenario.timeout,
                seed=scenario.seed,
            )
            for m in self.miners
        }
        n = len(self.miners)
        self._load = [0] * n  # this epoch, every validator
        self._backend_load: dict[str, int] = {}
        self._max_load = [0] * n
        self._max_ratio = [0.0] * n
        self._max_burst = [0.0] * n
        self._served = [0] * n
        self._ok = [0] * n
        self._backend_max: dict[str, float] = {}
        self._overloaded: dict[str, int] = {}
        self._lua_refused = 0
        self._idle_while_refused = 0.0
        self._organic_answered = 0
        self._organic_bad = 0
        self._miner_refused = 0
        self._step_end = 0.0
        self._guaranteed_refused = 0
        """Guaranteed requests a miner refused: 0 when both sides run the same pace."""
        self._borrowed = 0
        self._validator_side_mismatch = 0
        self._epoch_rows: list[EpochRow] = []
        self._incentive: dict[str, float] = {}
        self._raw_weight: dict[str, float] = {}
        self._scores_final: dict[str, float] = {}
        self._counters: set[tuple[int, str, int]] = set()
        self._adversary_init()

    def _adversary_init(self) -> None:
        """State of the adversaries with a trick and of the defenses against them (see :mod:`.behaviours`)."""
        v = self.settings.validator
        self.canaries = v.canaries
        self.bench_seconds = v.canary_bench_seconds
        self.replay_share = v.organic_reuse_ratio if self.settings.gateway.reuse_organic else 0.0
        stake_total = math.fsum(x.spec.stake for x in self.validators)
        floor = self.quota_settings.min_share
        self._large = [x.spec.stake / stake_total >= floor for x in self.validators]
        """Per validator: stake share at or above the floor (what a discriminator reads off the metagraph)."""
        self._adversary_rng = random.Random(f"adversaries:{self.scenario.seed}")
        weights = [x.spec.demand_weight for x in self.validators]
        self._demand_weights = weights
        self._fixed_gateway = {
            i: self._adversary_rng.choices(range(len(self.validators)), weights)[0]
            for i, m in enumerate(self.miners)
            if m.behaviour == "copycat"
        }
        self._bench: list[dict[str, float]] = [{} for _ in self.validators]
        """Per validator: identity -> until when a canary keeps the miner from users and from weight (one
        dict per validator: the planner asks for every miner of a request, and most validators bench none)."""
        self._copied: list[dict[int, int]] = [{} for _ in self.miners]
        """Per copycat: miner index -> forwarded requests that miner answered."""
        self.canary_flags = 0
        self.forwards = 0
        self.forwards_served = 0
        self.churned = 0
        self._registrations = 0

    def _validator(self, spec: ValidatorSpec, fraction: float) -> _Validator:
        keys = Keys(subnet=self.subnet, netuid=NETUID, role=spec.hotkey)
        clock = self._clock
        return _Validator(
            spec=spec,
            keys=keys,
            quotas=QuotaBook(self.books_redis, keys, self.quota_settings, clock=clock),
            scores=ScoreBook(
                self.books_redis,
                keys,
                self.scoring_settings,
                clock=clock,
                default_latency_reference=self.scenario.timeout,
            ),
            volumes=VolumeBook(self.books_redis, keys, epoch_seconds=self.epoch_seconds, clock=clock),
            rng=random.Random(f"validator:{self.scenario.seed}:{spec.index}"),
            entitled=fraction,
            routing=[self.scoring_settings.prior_score] * len(self.miners),
        )

    def _clock(self) -> float:
        return self.now

    # -- the run --------------------------------------------------------------------------------------------
    async def run(self) -> SimulationResult:
        started = time.perf_counter()
        try:
            await self._setup()
            with _collected_per_epoch():
                for epoch in range(self.scenario.epochs):
                    await self._epoch(epoch)
                    gc.collect()
            result = self._result(time.perf_counter() - started)
        except BaseException:
            with contextlib.suppress(Exception):  # the failure that stopped the run is the one to see
                await self.cleanup()
            raise
        await self.cleanup()
        return result

    async def _setup(self) -> None:
        """What each validator's orchestrator does at start: split quotas by stake, read every capacity.
        And one guard check on a throwaway miner, so the guards' script is loaded before thousands of them
        are sent at once."""
        warm = MinerQuota(
            self.redis,
            Keys(subnet=self.subnet, netuid=NETUID, role="miner:warm-up"),
            capacities={self.scenario.task: 1},
            epoch_seconds=self.epoch_seconds,
            min_share=self.quota_settings.min_share,
            min_requests=self.quota_settings.min_requests,
        )
        await warm.consume(
            self.metagraph, self.population.validators[0].hotkey, self.scenario.task, now=self.start
        )
        await _bounded([v.quotas.set_stakes(self.metagraph, v.spec.hotkey) for v in self.validators])
        await _bounded(
            [
                v.quotas.set_capacity(m.identity, {self.scenario.task: m.declared})
                for v in self.validators
                for m in self.miners
            ]
        )

    async def _epoch(self, epoch: int) -> None:
        epoch_start = self.start + epoch * self.epoch_seconds
        self.now = epoch_start
        if epoch == 0:
            await self._read_snapshots()
        else:  # a new epoch: new usage counters, same shares (stakes and capacities are fixed)
            if self.scenario.churn:
                await self._churn(epoch)
            for v in self.validators:
                v.book = [BookState() for _ in self.miners]
                v.ready = [_ready(b, s, p) for b, s, p in zip(v.book, v.share, v.pace)]
        for v in self.validators:
            v.capacity_entitled += sum(v.share)
        self._load = [0] * len(self.miners)
        self._backend_load = {}
        stats = {
            "demand": 0,
            "organic": 0,
            "organic_ok": 0,
            "synthetic": 0,
            "scored": 0,
            "unscored": 0,
            "unplaced": 0,
        }
        for step in range(self.scenario.ticks):
            self.now = epoch_start + (step + 0.5) * self.step_seconds
            step_stats = await self._step(epoch, step)
            for key, value in step_stats.items():
                stats[key] += value
            if step < self.scenario.ticks - 1:  # (the epoch's close reads them anyway)
                await self._read_standings()
            if self.on_step is not None:
                self.on_step(
                    StepInfo(
                        epoch,
                        step,
                        self.scenario.ticks,
                        step_stats["organic"] + step_stats["synthetic"],
                        step_stats["scored"],
                    )
                )
        self.now = epoch_start + self.epoch_seconds - 1.0
        row = await self._close_epoch(epoch, epoch_start, stats)
        self._epoch_rows.append(row)
        await self._forget(final=epoch == self.scenario.epochs - 1)

    async def _read_standings(self) -> list[dict[str, Standing]]:
        """Each validator's standings of every miner, as its gateway reads them for the quality bar."""
        standings = await _bounded(
            [
                v.scores.standings(self.identities, self.scenario.task, self.scenario.timeout)
                for v in self.validators
            ],
            self._limit,
        )
        for v, standing in zip(self.validators, standings):
            v.standings = standing
        return standings

    async def _read_snapshots(self) -> None:
        """Each validator's share and use of every miner, as its services read them at the epoch's start."""
        statuses = await _bounded(
            [v.quotas.status(self.identities, self.scenario.task) for v in self.validators], self._limit
        )
        for v, status in zip(self.validators, statuses):
            rows = [status[i] for i in self.identities]
            v.share = [s.share for s in rows]
            v.syn_limit = [s.synthetic_limit for s in rows]
            v.ceiling = [s.borrow_limit for s in rows]
            v.pace = [s.pace(self.quota_settings) for s in rows]
            v.book = [s.book_state() for s in rows]
            v.ready = [_ready(b, s, p) for b, s, p in zip(v.book, v.share, v.pace)]
            v.backoff = [0.0] * len(rows)

    # -- one step -------------------------------------------------------------------------------------------
    async def _step(self, epoch: int, step: int) -> dict[str, int]:
        """One step: its organic demand and synthetic rounds spread over the step's time, in ``SLICES``
        slices handled one after the other (plan, deliver, retry), each call at its own simulated time."""
        synthetic: list[list[_Call]] = [[] for _ in self.validators]
        organic: list[list[_Organic]] = [[] for _ in self.validators]
        demand_total = 0
        organic_capacity = (
            sum(m.declared for m in self.miners)
            * (1.0 - self.quota_settings.synthetic_fraction)
            / self.scenario.ticks
        )
        step_start = self.now - 0.5 * self.step_seconds
        self._step_end = step_start + self.step_seconds
        demands = []
        for v in self.validators:
            v.unplaced_at_step = v.unplaced
            demand = organic_demand(
                self.now - self.midnight,
                load=self.scenario.load,
                organic_capacity=organic_capacity,
                demand_weight=v.spec.demand_weight,
                rng=self._traffic_rng,
            )
            v.demand += demand
            demand_total += demand
            demands.append(demand)
        load_before = list(self._load)
        unplaced_before = sum(v.unplaced_at_step for v in self.validators)
        rounds = max(1, int(self.step_seconds / self.settings.validator.round_interval_seconds))
        for k in range(SLICES):
            syn_slice: list[list[_Call]] = []
            org_slice: list[list[_Organic]] = []
            firsts: list[list[_Call]] = []
            for vi, v in enumerate(self.validators):
                times = [
                    (r, step_start + (r + 0.5) * self.step_seconds / rounds)
                    for r in range(rounds)
                    if math.floor((r + 0.5) / rounds * SLICES) == k
                ]
                d = demands[vi]
                jobs = [
                    (j, step_start + (j + 0.5) * self.step_seconds / d)
                    for j in range(d)
                    if math.floor((j + 0.5) / d * SLICES) == k
                ]
                syn, org, first = self._plan_slice(v, times, jobs, epoch, step)
                syn_slice.append(syn)
                org_slice.append(org)
                firsts.append(first)
            # First attempts of everything (each validator's in the order its book decided them, which is
            # time order), then retries of the organic requests that failed.
            await self._deliver(firsts)
            for _ in range(1, self.settings.gateway.max_attempts):
                retries = [
                    [c for r in org if not r.served and (c := self._retry(v, r)) is not None]
                    for v, org in zip(self.validators, org_slice)
                ]
                if not any(retries):
                    break
                await self._deliver(retries)
            for vi, (syn, org) in enumerate(zip(syn_slice, org_slice)):
                synthetic[vi].extend(syn)
                organic[vi].extend(org)
                # A request every attempt of which was refused for quota could not be placed either.
                v = self.validators[vi]
                v.unplaced += sum(1 for r in org if not any(c.allowed for c in r.calls))
        # Bursts: this step's load against an even spread of the epoch's capacity.
        for i, m in enumerate(self.miners):
            step_load = self._load[i] - load_before[i]
            even = m.declared / self.scenario.ticks
            self._max_burst[i] = max(self._max_burst[i], step_load / even if even > 0 else 0.0)
        self._idle_while_refused += self._idle_servable(load_before, unplaced_before)
        for org in organic:
            for request in org:
                answer = next((c.answer for c in request.calls if c.answer is not None and c.answer.ok), None)
                if answer is not None:
                    self._organic_answered += 1
                    self._organic_bad += answer.score < BAD_ANSWER
        scored, unscored = await self._score(synthetic, organic)
        stats = {
            "demand": demand_total,
            "organic": 0,
            "organic_ok": 0,
            "synthetic": 0,
            "scored": scored,
            "unscored": unscored,
            "unplaced": 0,
        }
        for v, syn, org in zip(self.validators, synthetic, organic):
            delivered_syn = sum(1 for c in syn if c.allowed)
            delivered_org = sum(1 for r in org for c in r.calls if c.allowed)
            ok = sum(1 for r in org if r.served)
            v.synthetic += delivered_syn
            v.organic += delivered_org
            v.organic_ok += ok
            stats["synthetic"] += delivered_syn
            stats["organic"] += delivered_org
            stats["organic_ok"] += ok
        stats["unplaced"] = sum(v.unplaced for v in self.validators) - unplaced_before
        return stats

    def _idle_servable(self, load_before: Sequence[int], unplaced_before: int) -> float:
        """Capacity left idle this step, if some validator had organic demand it could place nowhere: the
        even per-step capacity of every miner that a refusing validator's quality bar lets serve users, minus
        what the miner served. Idle capacity of miners no validator may send users to is not counted: leaving
        it idle is the quality bar doing its job."""
        if sum(v.unplaced for v in self.validators) == unplaced_before:
            return 0.0
        bar = quality_bar(self.quota_settings)
        servable: set[str] = set()
        for v in self.validators:
            if v.unplaced == v.unplaced_at_step:
                continue
            judged = [
                OrganicCandidate(identity, 0.0, 1, (k := v.standings.get(identity, UNJUDGED)).quality, k.evidence)
                for identity in self.identities
            ]
            servable.update(c.identity for c in bar.passing(judged))
        idle = 0.0
        for i, m in enumerate(self.miners):
            if self.identities[i] in servable:
                idle += max(0.0, m.declared / self.scenario.ticks - (self._load[i] - load_before[i]))
        return idle

    def _room(self, v: _Validator, i: int, now: float) -> bool:
        """Whether ``v``'s guaranteed pace on miner ``i`` has room at ``now`` (a cheap pre-filter; the
        decision itself is :func:`book_decide`, the script's arithmetic)."""
        return v.ready[i] <= now + SLACK

    def _grant(self, v: _Validator, i: int, now: float, *, synthetic: bool) -> int:
        """The validator's book on miner ``i`` at ``now``, mirrored: guaranteed, borrow attempt or refused."""
        mode, state = book_decide(
            v.book[i], share=v.share[i], synthetic_limit=v.syn_limit[i], pace=v.pace[i],
            ceiling=v.ceiling[i], synthetic=synthetic, now=now,
        )
        v.book[i] = state
        if mode == GUARANTEED:
            v.ready[i] = _ready(state, v.share[i], v.pace[i])
        return mode

    def _plan_synthetic(
        self, v: _Validator, epoch: int, step: int, times: Sequence[tuple[int, float]]
    ) -> list[_Call]:
        """The orchestrator's rounds at ``times``: least-challenged miners whose guaranteed pace has room and
        with synthetic quota left (synthetic traffic is never borrowed)."""
        k = self.settings.validator.miners_per_round
        calls: list[_Call] = []
        for r, at in times:
            limit = at + SLACK  # the room test of _room, over every miner in one pass
            candidates = [
                SyntheticCandidate(identity, left, b.synthetic)
                for identity, b, syn_limit, share, ready in zip(
                    self.identities, v.book, v.syn_limit, v.share, v.ready
                )
                if ready <= limit and (left := min(syn_limit - b.synthetic, share - b.guaranteed)) > 0
            ]
            if not candidates:
                continue
            job = f"syn-{epoch}-{step}-{r}"
            for identity in sample_synthetic(candidates, k, v.rng):
                i = self.index[identity]
                if self._grant(v, i, at, synthetic=True) == GUARANTEED:
                    # Each miner gets its own challenge; a share of them replays recorded organic requests.
                    fresh = not (self.replay_share and self._adversary_rng.random() < self.replay_share)
                    calls.append(_Call(v.spec.index, i, "synthetic", job, at=at, fresh=fresh))
        return calls

    def _candidates(self, v: _Validator, at: float, *, borrow: bool) -> list[OrganicCandidate]:
        """Miners ``v`` may send a request to at ``at``: those where its guaranteed pace has room, or (with
        ``borrow``) those it may still ask to lend and has not been refused by just now.

        Called for nearly every organic request (its contenders' paces are used up by then), over every
        miner: the per-miner state is read from the validator's lists directly, in one pass each."""
        book = v.book
        if borrow:
            picks = [
                (i, ceiling - b.borrowed)
                for i, (ceiling, b, backoff) in enumerate(zip(v.ceiling, book, v.backoff))
                if ceiling > b.borrowed and backoff <= at
            ]
        else:
            limit = at + SLACK  # as _room computes it
            share = v.share
            picks = [(i, share[i] - book[i].guaranteed) for i, ready in enumerate(v.ready) if ready <= limit]
        benched = self._benched_now(v.spec.index)
        identities, routing, standings = self.identities, v.routing, v.standings
        out = []
        for i, left in picks:
            identity = identities[i]
            if identity in benched:
                continue
            known = standings.get(identity, UNJUDGED)
            out.append(OrganicCandidate(identity, routing[i], left, known.quality, known.evidence))
        return out

    def _plan_slice(
        self,
        v: _Validator,
        rounds: Sequence[tuple[int, float]],
        jobs: Sequence[tuple[int, float]],
        epoch: int,
        step: int,
    ) -> tuple[list[_Call], list[_Organic], list[_Call]]:
        """Synthetic rounds and organic requests of one slice, planned in time order (the order the book
        decides them in Redis too): the synthetic calls, the organic requests, and every first call."""
        events = sorted([(at, 0, r) for r, at in rounds] + [(at, 1, j) for j, at in jobs])
        syn: list[_Call] = []
        org: list[_Organic] = []
        first: list[_Call] = []
        cache: dict[str, Any] = {}
        for at, kind, n in events:
            if kind == 0:
                calls = self._plan_synthetic(v, epoch, step, [(n, at)])
                syn.extend(calls)
                first.extend(calls)
            else:
                request = self._plan_organic(v, [(n, at)], epoch, step, cache)
                org.extend(request)
                first.extend(r.calls[0] for r in request)
        return syn, org, first

    def _plan_organic(
        self,
        v: _Validator,
        jobs: Sequence[tuple[int, float]],
        epoch: int,
        step: int,
        cache: dict[str, Any] | None = None,
    ) -> list[_Organic]:
        """The gateway's choices for the organic requests ``jobs`` (number and time), one at a time as the
        gateway makes them (:func:`rank_organic`): miners where this validator's guaranteed pace has room
        first, the best-scored contenders in an order drawn by score x quota left, then the rest by score for
        retries; when no guaranteed pace has room, the same among the miners it may ask to lend.

        The scores the gateway routes by do not move within a step, so the contenders change only when none
        of them has room at a request's time: the ranking is made again then."""
        contenders = self.quota_settings.organic_contenders
        keep = self.settings.gateway.max_attempts + contenders
        bar = quality_bar(self.quota_settings)
        requests: list[_Organic] = []
        cache = {} if cache is None else cache
        top: dict[bool, list[OrganicCandidate]] = cache.setdefault("top", {False: [], True: []})
        rest: dict[bool, list[int]] = cache.setdefault("rest", {False: [], True: []})
        for j, at in jobs:
            order: list[int] = []
            borrow = False
            for borrow in (False, True):
                live = [c for c in top[borrow] if self._usable(v, self.index[c.identity], at, borrow)]
                if not live:
                    candidates = self._candidates(v, at, borrow=borrow)
                    ranked = rank_organic(candidates, bar=bar, contenders=contenders, rng=v.rng)
                    if not ranked:
                        continue
                    by_identity = {c.identity: c for c in candidates}
                    top[borrow] = live = [by_identity[x] for x in ranked[:contenders]]
                    rest[borrow] = [self.index[x] for x in ranked[contenders:keep]]
                order = [self.index[c.identity] for c in contender_order(live, v.rng)]
                break
            if not order:
                v.unplaced += 1
                continue
            i = order[0]
            job = f"org-{epoch}-{step}-{j}"
            mode = self._grant(v, i, at, synthetic=False)
            request = _Organic(job, [*order[1:], *rest[borrow]], at=at)
            if mode == REFUSED:  # the pre-filter and the book disagree only on a rounding: next candidate
                requests.append(request)
                call = self._retry(v, request)
                if call is None:
                    v.unplaced += 1
                    requests.pop()
                continue
            request.calls.append(_Call(v.spec.index, i, "organic", job, at=at, mode=mode))
            requests.append(request)
        return requests

    def _usable(self, v: _Validator, i: int, at: float, borrow: bool) -> bool:
        if borrow:
            return v.ceiling[i] > v.book[i].borrowed and v.backoff[i] <= at
        return self._room(v, i, at)

    def _retry(self, v: _Validator, request: _Organic) -> _Call | None:
        """The router's next candidate for a request whose last attempt failed: one whose guaranteed pace
        has room, or one it may ask to lend (a borrowed refusal moves on to the next candidate)."""
        tried = {c.miner for c in request.calls}
        # Retries stay within the step (and so within the epoch both books count them in).
        at = min(request.at + RETRY_DELAY * len(request.calls), self._step_end - 2 * SLACK)
        while request.fallbacks:
            i = request.fallbacks.pop(0)
            if i in tried or not (self._room(v, i, at) or self._usable(v, i, at, True)):
                continue
            mode = self._grant(v, i, at, synthetic=False)
            if mode == REFUSED:
                continue
            call = _Call(v.spec.index, i, "organic", request.job, at=at, mode=mode)
            request.calls.append(call)
            return call
        return None

    async def _deliver(self, per_validator: Sequence[Sequence[_Call]]) -> None:
        """Quota on the validator side (Lua, pipelined, each call at its time), then on the miner side (every
        miner's calls in time order), then the answers."""
        task = self.scenario.task

        async def consume(v: _Validator, calls: Sequence[_Call]) -> None:
            mine = sorted(calls, key=lambda c: c.at)
            if not mine:
                return
            modes = await v.quotas.grant_many(
                [self.identities[c.miner] for c in mine], task, "organic",
                at=[c.at for c in mine], kinds=[c.kind for c in mine],
            )
            for c, mode in zip(mine, modes):
                c.granted = mode != REFUSED
                if mode != c.mode:
                    self._validator_side_mismatch += 1

        await _bounded([consume(v, calls) for v, calls in zip(self.validators, per_validator)], self._limit)
        flat = [c for calls in per_validator for c in calls]
        for c in flat:
            if not c.granted:
                self._lua_refused += 1
        granted = sorted((c for c in flat if c.granted), key=lambda c: c.at)
        charges = [
            self._guards[c.miner].charge(self.metagraph, self.validators[c.validator].spec.hotkey, task, now=c.at)
            for c in granted
        ]
        # Every miner's guard runs the same script on its own keys: one batch, in this order, through the
        # miners' coalescer (what each guard's consume would send, without a coroutine per call).
        decisions = await self._guards[0].decide_many(charges)
        for c, decision in zip(granted, decisions):
            c.allowed = decision.allowed
            if not decision.allowed:
                self._miner_refused += 1
                if c.mode == GUARANTEED:
                    self._guaranteed_refused += 1
                # The gateway asks this miner to lend again only after the 429's Retry-After.
                v = self.validators[c.validator]
                v.backoff[c.miner] = max(v.backoff[c.miner], c.at + decision.retry_after)
            elif decision.mode == BORROWED:
                self._borrowed += 1
        timeout = self.scenario.timeout
        forwards: list[_Call] = []
        for c in flat:  # a fixed order: shared backends see the same queue in every run
            if not c.allowed:
                continue
            m = self.miners[c.miner]
            if m.behaviour == "copycat":
                self._load[c.miner] += 1
                self._served[c.miner] += 1
                forwards.append(c)
                continue
            backend = self.backends[m.backend]
            used = self._backend_load.get(backend.name, 0)
            self._backend_load[backend.name] = used + 1
            self._load[c.miner] += 1
            self._served[c.miner] += 1
            c.answer = respond(
                m,
                backend,
                self._miner_rng[c.miner],
                timeout=timeout,
                overloaded=used >= backend.capacity,
                kind=c.kind,
                fresh=c.fresh,
                large_caller=self._large[c.validator],
            )
            if c.answer.outcome == "overloaded":
                self._overloaded[backend.name] = self._overloaded.get(backend.name, 0) + 1
            if c.answer.ok:
                self._ok[c.miner] += 1
        if forwards:
            await self._forward(forwards)

    async def _score(
        self, synthetic: Sequence[Sequence[_Call]], organic: Sequence[Sequence[_Organic]]
    ) -> tuple[int, int]:
        """Dropout admission of every answer (429s are not evidence), then recording of the admitted."""
        task = self.scenario.task
        period = self.validators[0].scores.period(self.now) if self.validators else 0

        async def admit(
            v: _Validator, syn: Sequence[_Call], org: Sequence[_Organic]
        ) -> list[tuple[_Call, bool]]:
            out: list[tuple[_Call, bool]] = []
            for kind, calls in (
                ("synthetic", [c for c in syn if c.allowed]),
                ("organic", [c for r in org for c in r.calls if c.allowed]),
            ):
                if not calls:
                    continue
                identities = [self.identities[c.miner] for c in calls]
                if self.scoring_settings.volume_weighting:  # as the gateway and the orchestrator count it
                    served = Counter(i for i, c in zip(identities, calls) if c.answer is not None and c.answer.ok)
                    await v.volumes.count(served, task, kind)
                for identity in set(identities):
                    self._counters.add((v.spec.index, identity, period))
                # As the gateway's feed: every organic answer of a miner short of organic evidence is scored.
                sure = (
                    {i for i in identities if (k := v.standings.get(i)) is not None and k.needs_organic_evidence}
                    if kind == "organic" else set()
                )
                admitted = await v.scores.admit_many(
                    identities, task, kind, v.rng, sure=sure  # type: ignore[arg-type]
                )
                out += list(zip(calls, admitted))
            return out

        results = await _bounded(
            [admit(v, syn, org) for v, syn, org in zip(self.validators, synthetic, organic)], self._limit
        )
        # Samples of one miner in one validator's history are recorded one after the other, in a fixed order:
        # the history keeps the newest samples, so the order decides which ones it keeps.
        chains: dict[tuple[int, int], list[tuple[str, Sample, str]]] = {}
        scored = unscored = 0
        for v, decided in zip(self.validators, results):
            for call, admitted in decided:
                if not admitted:
                    v.unscored += 1
                    unscored += 1
                    continue
                assert call.answer is not None
                chains.setdefault((v.spec.index, call.miner), []).append(
                    (self.identities[call.miner], call.answer.sample(call.kind, self.now), call.job)
                )
                v.scored += 1
                scored += 1

        async def record(book: ScoreBook, samples: list[tuple[str, Sample, str]]) -> None:
            for identity, sample, job in samples:
                await book.record(identity, task, sample, job)

        await _bounded(
            [record(self.validators[vi].scores, samples) for (vi, _), samples in chains.items()], self._limit
        )
        return scored, unscored

    # -- adversaries with a trick, and the defenses -----------------------------------------------------------
    def _benched(self, validator: int, identity: str) -> bool:
        """Whether a canary of ``validator`` caught this miner recently (no users, no weight from it)."""
        until = self._bench[validator].get(identity)
        return until is not None and until > self.now

    def _benched_now(self, validator: int) -> set[str]:
        """Every miner :meth:`_benched` for ``validator`` now: one look-up per request instead of one per
        miner (an empty set for the validators whose canaries caught no one)."""
        bench = self._bench[validator]
        if not bench:
            return set()
        now = self.now
        return {identity for identity, until in bench.items() if until > now}

    def _gateway_for(self, copycat: int) -> int:
        """The validator whose public gateway a copycat sends a request to: drawn by the gateways' share of
        organic demand (the busiest are the best known), per request or once per copycat."""
        if self.scenario.copycat_route == "fixed":
            return self._fixed_gateway[copycat]
        return self._adversary_rng.choices(range(len(self.validators)), self._demand_weights)[0]

    async def _forward(self, calls: Sequence[_Call]) -> None:
        """Copycats answer by sending each request they got to a gateway as an organic request, which routes it
        like any other (quota, quality bar, retries) onto real miners, and returning that answer late.

        A fresh challenge sent to the gateway of the validator that planted it is a live canary: that gateway
        refuses it (no miner's capacity is spent), the copycat's answer fails (it scores 0), and the validator
        benches the copycat for ``validator.canary_bench_seconds``. Other gateways cannot tell it from a user's
        request."""
        timeout = self.scenario.timeout
        per_gateway: list[list[_Organic]] = [[] for _ in self.validators]
        rankings: dict[int, dict[str, Any]] = {}  # each gateway's contenders, re-ranked as they run out
        waiting: list[tuple[_Call, _Organic | None]] = []
        for c in calls:
            if c.hops >= MAX_FORWARDS:
                waiting.append((c, None))
                continue
            g = self._gateway_for(c.miner)
            self.forwards += 1
            if self.canaries and c.kind == "synthetic" and c.fresh and g == c.validator:
                self.canary_flags += 1
                if self.bench_seconds > 0:
                    self._bench[c.validator][self.identities[c.miner]] = self.now + self.bench_seconds
                c.answer = Answer(False, 0.0, 0.05, "canary")
                continue
            gateway = self.validators[g]
            unplaced = gateway.unplaced  # a forward that finds no miner fails the copycat; it is no user's
            at = min(c.at + RETRY_DELAY, self._step_end - 2 * SLACK)  # (job ids: unique over the run)
            planned = self._plan_organic(gateway, [(self.forwards, at)], -1, -1, rankings.setdefault(g, {}))
            gateway.unplaced = unplaced
            request = planned[0] if planned else None
            if request is not None:
                for call in request.calls:
                    call.hops = c.hops + 1
                per_gateway[g].append(request)
            waiting.append((c, request))
        if any(per_gateway):
            await self._deliver([[r.calls[0] for r in org] for org in per_gateway])
            for _ in range(1, self.settings.gateway.max_attempts):
                retries: list[list[_Call]] = []
                for v, org in zip(self.validators, per_gateway):
                    row = []
                    for r in org:
                        if not r.served and (call := self._retry(v, r)) is not None:
                            call.hops = r.calls[0].hops
                            row.append(call)
                    retries.append(row)
                if not any(retries):
                    break
                await self._deliver(retries)
        for v, org in zip(self.validators, per_gateway):  # requests that gateway delivered, not its users'
            v.organic += sum(1 for r in org for call in r.calls if call.allowed)
        for c, request in waiting:
            served = None
            if request is not None:
                served = next((x for x in request.calls if x.answer is not None and x.answer.ok), None)
            if served is not None:
                self.forwards_served += 1
                self._copied[c.miner][served.miner] = self._copied[c.miner].get(served.miner, 0) + 1
            m = self.miners[c.miner]
            c.answer = relay(
                served.answer if served is not None else None,
                self.backends[m.backend],
                self._miner_rng[c.miner],
                timeout=timeout,
            )
            if c.answer.ok:
                self._ok[c.miner] += 1

    async def _churn(self, epoch: int) -> None:
        """Deregister a share of miner uids and register each again under a new hotkey and registration block
        (the same machine and behaviour): every validator sees a new identity with no scores, no bench and its
        declared capacity read afresh, and the metagraph follows."""
        n = round(self.scenario.churn * len(self.miners))
        if n <= 0:
            return
        block = 1 + epoch * round(self.epoch_seconds / 12.0)
        miners = list(self.miners)
        renewed: list[int] = []
        for i in sorted(self._adversary_rng.sample(range(len(miners)), n)):
            self._registrations += 1
            old = miners[i]
            new = dataclasses.replace(
                old, hotkey=f"{old.hotkey}-r{self._registrations}", registered=REGISTERED_BASE + block + i
            )
            miners[i] = new
            self.identities[i] = new.identity
            self.classes[new.identity] = self.classes.pop(old.identity)
            self.truth[new.identity] = self.truth[old.identity]
            for v in self.validators:
                v.routing[i] = self.scoring_settings.prior_score
            self.churned += 1
            renewed.append(i)
        self.miners = tuple(miners)
        self.index = {identity: i for i, identity in enumerate(self.identities)}
        self.population = dataclasses.replace(self.population, miners=self.miners)
        self.metagraph = self.population.metagraph(NETUID, block=block)
        await _bounded(
            [
                v.quotas.set_capacity(self.identities[i], {self.scenario.task: self.miners[i].declared})
                for v in self.validators
                for i in renewed
            ],
            CONCURRENCY,  # MULTI transactions are not coalesced: each holds a connection of the pool
        )

    # -- the end of an epoch --------------------------------------------------------------------------------
    async def _close_epoch(self, epoch: int, epoch_start: float, stats: dict[str, int]) -> EpochRow:
        task = self.scenario.task
        quota_epoch = self.validators[0].quotas.epoch(self.now)
        # Use per miner: the validators' side as the quota script granted it (read back from Redis in the
        # first and last epochs, to check the two agree), the miners' side from their own counters.
        # The validators' side counts what they granted as guaranteed (a borrow attempt may be refused).
        validator_side = [sum(v.book[i].guaranteed for v in self.validators) for i in range(len(self.miners))]
        if epoch in (0, self.scenario.epochs - 1):
            statuses = await _bounded(
                [v.quotas.status(self.identities, task) for v in self.validators], self._limit
            )
            for v, status in zip(self.validators, statuses):
                for i, identity in enumerate(self.identities):
                    mirror = v.book[i]
                    if status[identity].used_total != mirror.guaranteed + mirror.borrowed:
                        self._validator_side_mismatch += 1
        miner_side = await self._miner_side_use(quota_epoch)
        ratios = []
        for i, m in enumerate(self.miners):
            load = max(miner_side[i], validator_side[i])
            ratio = load / m.declared if m.declared else 0.0
            ratios.append(ratio)
            self._max_load[i] = max(self._max_load[i], load)
            self._max_ratio[i] = max(self._max_ratio[i], ratio)
        for name, used in self._backend_load.items():
            capacity = self.backends[name].capacity
            self._backend_max[name] = max(
                self._backend_max.get(name, 0.0), used / capacity if capacity else 0.0
            )
        # Weights: each validator's aggregates through the real weight math, then consensus.
        standings = await self._read_standings()
        # One task: a miner's aggregate (the mean over tasks) is its standing's score for that task.
        aggregates = [
            {i: 0.0 if self._benched(vi, i) else s.score for i, s in standing.items()}
            for vi, standing in enumerate(standings)
        ]
        volumes = await self._read_volumes()
        rows: list[list[float]] = []
        set_count = 0
        for vi, (v, agg) in enumerate(zip(self.validators, aggregates)):
            v.routing = [agg.get(i, self.scoring_settings.prior_score) for i in self.identities]
            row = self._weights(agg, volumes[vi] if volumes is not None else None)
            if any(row):
                v.weights_set += 1
                set_count += 1
            rows.append(row)
        stakes = [v.spec.stake for v in self.validators]
        incentive = consensus_incentive(rows, stakes)
        self._incentive = dict(zip(self.identities, incentive))
        total_stake = math.fsum(stakes)
        raw = [
            math.fsum(s * row[j] for s, row in zip(stakes, rows)) / total_stake
            for j in range(len(self.miners))
        ]
        raw_total = math.fsum(raw)
        self._raw_weight = dict(zip(self.identities, [r / raw_total if raw_total else 0.0 for r in raw]))
        self._scores_final = {
            identity: math.fsum(s * agg.get(identity, 0.0) for s, agg in zip(stakes, aggregates))
            / total_stake
            for identity in self.identities
        }
        honest = {i: self._incentive[i] for i, c in self.classes.items() if c == "honest"}
        previous = self._epoch_rows[-1].honest_incentive if self._epoch_rows else None
        tau_prev = ranking_tau(previous, honest) if previous is not None else None
        tau_truth = ranking_tau({i: self.truth[i] for i in honest}, self._pay_rate(honest))
        hours = ((epoch_start - self.midnight) % DAY_SECONDS) / 3600.0
        return EpochRow(
            epoch=epoch,
            hour=round(hours, 2),
            demand_factor=round(
                sum(
                    daily_load(epoch_start - self.midnight + (s + 0.5) * self.step_seconds)
                    for s in range(self.scenario.ticks)
                )
                / self.scenario.ticks,
                4,
            ),
            organic_demand=stats["demand"],
            organic_delivered=stats["organic"],
            organic_ok=stats["organic_ok"],
            synthetic_delivered=stats["synthetic"],
            scored=stats["scored"],
            unscored=stats["unscored"],
            capacity=sum(m.declared for m in self.miners),
            max_load_ratio=max(ratios) if ratios else 0.0,
            validators_with_weights=set_count,
            class_incentive={
                c: round(v, 6) for c, v in _all_classes(class_shares(self._incentive, self.classes)).items()
            },
            class_raw_weight={
                c: round(v, 6) for c, v in _all_classes(class_shares(self._raw_weight, self.classes)).items()
            },
            tau_previous=None if tau_prev is None else round(tau_prev, 4),
            tau_truth=round(tau_truth, 4),
            honest_incentive=honest,
        )

    async def _read_volumes(self) -> list[tuple[dict[str, dict[str, int]], dict[str, dict[str, Entitlement]]]] | None:
        """Each validator's verified served volume of every miner (current and previous epoch) and its
        entitlements, as its weight setter reads them; None when weights follow scores alone."""
        if not self.scoring_settings.volume_weighting:
            return None
        tasks = [self.scenario.task]
        served = await _bounded([v.volumes.volumes(self.identities, tasks) for v in self.validators], self._limit)
        entitled = await _bounded(
            [v.quotas.entitlements(self.identities, tasks) for v in self.validators], self._limit
        )
        return list(zip(served, entitled))

    def _pay_rate(self, incentive: dict[str, float]) -> dict[str, float]:
        """What the ranking against the truth compares: incentive per uid when weights follow scores, and
        incentive per request of declared capacity when they pay served volume (honest miners declare what
        they serve, and a bigger machine earning more for its volume says nothing of how good it is)."""
        if not self.scoring_settings.volume_weighting:
            return incentive
        declared = {m.identity: m.declared for m in self.miners}
        return {i: v / declared[i] if declared[i] else 0.0 for i, v in incentive.items()}

    def _weights(
        self,
        aggregates: dict[str, float],
        volumes: tuple[dict[str, dict[str, int]], dict[str, dict[str, Entitlement]]] | None = None,
    ) -> list[float]:
        """One validator's weight row over the miners: scores (times the volume it vouches for, when weights
        pay volume) to uids to the u16 vector the chain would store, read back as shares. All zero when there
        is nothing it could set."""
        if volumes is not None:
            s = self.scoring_settings
            served, entitled = volumes
            aggregates = paid_by_volume(
                aggregates, served, entitled, epochs=self.validators[0].volumes.span(),
                power=s.weight_power, min_score=s.volume_min_score,
            )
        uids, weights = scores_to_weights(aggregates, self.metagraph)
        try:
            out_uids, values = convert_weights(
                uids,
                weights,
                n_neurons=len(self.metagraph.neurons),
                max_weight_limit=MAX_WEIGHT_LIMIT,
            )
        except (InvalidWeights, WeightVecTooShort):
            return [0.0] * len(self.miners)
        total = sum(values)
        by_uid = {u: v / total for u, v in zip(out_uids, values)} if total else {}
        return [by_uid.get(m.uid, 0.0) for m in self.miners]

    async def _miner_side_use(self, quota_epoch: int) -> list[int]:
        """Requests each miner's own guard admitted this epoch, every validator together (its total)."""
        task = self.scenario.task
        pipe = self.redis.pipeline(transaction=False)
        for k in self._miner_keys:
            pipe.hget(k.miner_quota_total(task, quota_epoch), "total")
        return [int(value or 0) for value in await pipe.execute()]

    async def _forget(self, *, final: bool = False) -> None:
        """Delete what this epoch left behind and nothing reads again: per-epoch use counters, and dropout
        counters of periods before the previous one (every period when ``final``), counting first how many
        responses the dropout cap turned away.

        Keys are grouped by hash tag, one multi-key command per group (one slot, so also on Redis Cluster):
        every validator's counters on one miner carry the miner's tag, every miner's guard counter of one
        validator carries the validator's."""
        task = self.scenario.task
        quota_epoch = self.validators[0].quotas.epoch(self.now)
        period = self.validators[0].scores.period(self.now)
        old = sorted(c for c in self._counters if final or c[2] < period - 1)
        self._counters.difference_update(old)
        by_miner: dict[str, list[tuple[int, int]]] = {}
        for vi, identity, p in old:
            by_miner.setdefault(identity, []).append((vi, p))
        pipe = self.redis.pipeline(transaction=False)
        for identity, pairs in by_miner.items():
            pipe.execute_command(
                "MGET", *(self.validators[vi].keys.dropped_count(identity, task, p) for vi, p in pairs)
            )
        for pairs, values in zip(by_miner.values(), await pipe.execute() if by_miner else []):
            for (vi, _), value in zip(pairs, values):
                self.validators[vi].capped += int(value or 0)
        groups: list[list[str]] = []
        for identity in self.identities:
            keys = [v.keys.quota_used(identity, task, quota_epoch) for v in self.validators]
            for vi, p in by_miner.get(identity, []):
                k = self.validators[vi].keys
                keys += [k.scored_count(identity, task, p), k.dropped_count(identity, task, p)]
            groups.append(keys)
        for k in self._miner_keys:  # one miner's counters share its tag
            groups.append(
                [k.miner_quota_total(task, quota_epoch)]
                + [k.caller_quota_used(v.spec.hotkey, task, quota_epoch) for v in self.validators]
            )
        pipe = self.redis.pipeline(transaction=False)
        for keys in groups:
            pipe.execute_command("UNLINK", *keys)  # one slot each (see above)
        await pipe.execute()

    async def cleanup(self) -> None:
        """Delete every key of this run (its own subnet prefix), whatever state it ended in."""
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"isn:{self.subnet}:*", count=5000):
            batch.append(key)
            if len(batch) >= 20_000:
                await _unlink(self.redis, batch)
                batch = []
        await _unlink(self.redis, batch)

    # -- the result -----------------------------------------------------------------------------------------
    def _result(self, seconds: float) -> SimulationResult:
        s = self.scenario
        stake_total = math.fsum(v.spec.stake for v in self.validators)
        delivered_total = sum(v.synthetic + v.organic for v in self.validators)
        hours = s.epochs * self.epoch_seconds / 3600.0
        validators = [
            ValidatorRow(
                uid=v.spec.uid,
                hotkey=v.spec.hotkey,
                stake=round(v.spec.stake, 3),
                stake_share=v.spec.stake / stake_total,
                entitled_share=v.entitled,
                demand_share=v.spec.demand_weight,
                delivered_share=(v.synthetic + v.organic) / delivered_total if delivered_total else 0.0,
                synthetic=v.synthetic,
                organic=v.organic,
                organic_ok=v.organic_ok,
                organic_demand=v.demand,
                organic_unplaced=v.unplaced,
                entitlement_used=(v.synthetic + v.organic) / v.capacity_entitled
                if v.capacity_entitled
                else 0.0,
                scored=v.scored,
                unscored=v.unscored,
                capped=v.capped,
                scored_per_hour=v.scored / hours,
                epochs_with_weights=v.weights_set,
            )
            for v in self.validators
        ]
        callers = list(eligible_stakes(self.metagraph))
        miners = []
        for i, m in enumerate(self.miners):
            guard_allows = sum(self._guards[i].limit(self.metagraph, h, self.scenario.task) for h in callers)
            miners.append(
                MinerRow(
                    uid=m.uid,
                    hotkey=m.hotkey,
                    behaviour=m.behaviour,
                    backend=m.backend,
                    source=m.source,
                    declared=m.declared,
                    max_epoch_load=self._max_load[i],
                    max_load_ratio=self._max_ratio[i],
                    max_step_burst=self._max_burst[i],
                    served=self._served[i],
                    ok=self._ok[i],
                    guard_allows=guard_allows,
                    true_value=self.truth[m.identity],
                    final_score=self._scores_final.get(m.identity, 0.0),
                    final_incentive=self._incentive.get(m.identity, 0.0),
                    copied={str(self.miners[j].uid): n for j, n in sorted(self._copied[i].items())},
                )
            )
        backends = [
            BackendRow(
                name=name,
                capacity=self.backends[name].capacity,
                uids=sum(1 for m in self.miners if m.backend == name),
                declared_total=sum(m.declared for m in self.miners if m.backend == name),
                max_load_ratio=self._backend_max.get(name, 0.0),
                overloaded=self._overloaded.get(name, 0),
            )
            for name in sorted({m.backend for m in self.miners if m.behaviour == "sybil"})
        ]
        result = SimulationResult(
            scenario={
                **{
                    k: getattr(s, k)
                    for k in (
                        "validators",
                        "miners",
                        "epochs",
                        "seed",
                        "sybil_group",
                        "capacity",
                        "load",
                        "ticks",
                        "start_hour",
                        "stable_tau",
                        "timeout",
                        "copycat_route",
                        "sybil_distinct_keys",
                        "churn",
                    )
                },
                "mix": s.mix.as_dict(),
            },
            settings={
                "quotas": self.quota_settings.model_dump(),
                "scoring": self.scoring_settings.model_dump(),
                "round_interval_seconds": self.settings.validator.round_interval_seconds,
                "miners_per_round": self.settings.validator.miners_per_round,
                "gateway_max_attempts": self.settings.gateway.max_attempts,
                "max_weight_limit": MAX_WEIGHT_LIMIT,
            },
            seconds=seconds,
            simulated_hours=hours,
            epochs=self._epoch_rows,
            validators=validators,
            miners=miners,
            sybil_backends=backends,
            lua_refusals=self._lua_refused,
            idle_while_refused=round(self._idle_while_refused, 3),
            organic_answered=self._organic_answered,
            organic_bad_answers=self._organic_bad,
            miner_refusals=self._miner_refused,
            guaranteed_refusals=self._guaranteed_refused,
            borrowed=self._borrowed,
            validator_side_mismatches=self._validator_side_mismatch,
            defenses={
                "copycat_forwards": self.forwards,
                "copycat_forwards_served": self.forwards_served,
                "canary_flags": self.canary_flags,
                "churned_registrations": self.churned,
            },
        )
        result.summary = summarise(result, stable_tau=s.stable_tau, classes=CLASSES)
        return result


def _ready(state: BookState, share: int, pace: Pace) -> float:
    """From when a guaranteed request fits this pace again (the planner's cheap pre-filter)."""
    if state.guaranteed >= share:
        return math.inf
    if state.tat is None:
        return -math.inf
    return state.tat - (pace.burst - 1) * pace.interval


@contextlib.contextmanager
def _collected_per_epoch() -> Iterator[None]:
    """The cyclic garbage collector off for the run, which collects once per epoch itself instead.

    A step keeps its calls, answers and replies alive past the collector's young generations, so left to
    itself the collector keeps starting full collections, each a walk over the whole heap: a third of the
    run's time. Reference counting frees most garbage as the run goes; what sits in cycles waits for the
    epoch's end (the default run peaks some 80 MB higher for it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _all_classes(values: dict[str, float]) -> dict[str, float]:
    return {c: values.get(c, 0.0) for c in CLASSES}


async def _bounded(coros: Iterable[Awaitable[T]], limit: int | None = CONCURRENCY) -> list[T]:
    """``gather`` with at most ``limit`` awaitables in flight (the Redis pool is bounded); all at once when
    ``limit`` is None."""
    if limit is None:
        return list(await asyncio.gather(*coros))
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _unlink(redis: aioredis.Redis, keys: Sequence[bytes | str]) -> None:
    """Delete keys with one UNLINK per hash slot (one multi-key command may only touch one slot)."""
    by_slot: dict[int, list[bytes | str]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(key.encode() if isinstance(key, str) else key), []).append(key)
    pipe = redis.pipeline(transaction=False)
    for group in by_slot.values():
        pipe.execute_command("UNLINK", *group)
    if by_slot:
        await pipe.execute()
