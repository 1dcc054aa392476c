"""This validator's quotas on every miner, kept and consumed atomically in Redis.

A miner's declared capacity per task and epoch is split among permit-holding validators by stake
(:mod:`inference_subnet.protocol.quota_math`); this validator's share of each miner, and the synthetic part
of it, are written to Redis so every process of the validator (orchestrator, gateway) consumes from the same numbers. A
consumption is one Lua call that checks and increments: a check from Python followed by an increment
races under concurrency and over-consumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal, NamedTuple

from inference_subnet.chain.types import Metagraph
from inference_subnet.settings import QuotaSettings
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, evalsha_many
from inference_subnet.validator.managing import state
from inference_subnet.protocol.quota_math import (
    apportion,
    clamp_capacity,
    epoch_end,
    epoch_index,
    floor_fraction,
    permitted_stakes,
    stake_fractions,
    synthetic_limit,
)
from inference_subnet.protocol.rate_math import (
    SLACK,
    BookState,
    Mode,
    Pace,
    borrow_ceiling,
    guaranteed_room,
    pace_of,
)
from inference_subnet.validator.managing.sampling import OrganicCandidate, SyntheticCandidate
from inference_subnet.validator.managing.score_math import UNJUDGED, Standing

log = logging.getLogger(__name__)

QuotaKind = Literal["synthetic", "organic"]
_KINDS = ("synthetic", "organic")
_CONSUME = files("inference_subnet.store").joinpath("lua/consume_quota.lua").read_text()


class Remaining(NamedTuple):
    """What is left of this validator's share of one miner in the current epoch."""

    total_left: int
    synthetic_left: int


BURST_FIELD = ":burst"
"""Share-hash field: the burst (seconds) the miner published at ``/capacity``. No task name starts with a colon."""


def paced_burst(settings: QuotaSettings, miner_burst_seconds: float | None) -> float:
    """The burst this validator paces a miner with: its own, or the miner's when that is smaller (a larger
    burst than the miner admits would take refusals for guaranteed requests). ``consume_quota.lua`` makes
    the same choice."""
    if miner_burst_seconds is None:
        return settings.burst_seconds
    return min(settings.burst_seconds, miner_burst_seconds)


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What this validator may ask of one miner for one task each quota epoch: its guaranteed share, out of
    the capacity the miner declared."""

    share: int
    capacity: int


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """This validator's share of one miner for one task, and its use in the current epoch."""

    share: int
    synthetic_limit: int
    used_total: int
    used_synthetic: int
    used_guaranteed: int = 0
    used_borrowed: int = 0
    borrow_limit: int = 0
    tat: float | None = None
    """The guaranteed pace's theoretical arrival time (``None``: not used this epoch)."""
    miner_burst_seconds: float | None = None
    """The burst the miner paces with, as it published it at ``/capacity`` (``None``: not published)."""

    def pace(self, settings: QuotaSettings) -> Pace:
        """This validator's guaranteed pace on the miner: its share, with the smaller of the two bursts."""
        return pace_of(self.share, settings.epoch_seconds, paced_burst(settings, self.miner_burst_seconds))

    @property
    def guaranteed_left(self) -> int:
        return max(0, self.share - self.used_guaranteed)

    @property
    def borrow_left(self) -> int:
        return max(0, self.borrow_limit - self.used_borrowed)

    @property
    def total_left(self) -> int:
        """Requests of any kind (guaranteed or borrow attempts) this validator may still send this epoch."""
        return self.guaranteed_left + self.borrow_left

    def book_state(self) -> BookState:
        return BookState(self.used_guaranteed, self.used_borrowed, self.used_synthetic, self.tat)

    def guaranteed_now(self, now: float, settings: QuotaSettings) -> bool:
        """Whether a guaranteed request would be granted at ``now`` (routing prefers such miners)."""
        return guaranteed_room(self.book_state(), share=self.share, pace=self.pace(settings), now=now)

    @property
    def synthetic_left(self) -> int:
        return max(0, min(self.synthetic_limit - self.used_synthetic, self.guaranteed_left))

    @property
    def used_organic(self) -> int:
        return max(0, self.used_total - self.used_synthetic)


class QuotaBook:
    """Shares, consumption and remaining quota of one validator on every miner.

    ``clock`` (wall-clock seconds) decides the epoch; inject one in tests to cross epoch boundaries.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        settings: QuotaSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.settings = settings
        self._clock = clock
        self._consume = redis.register_script(_CONSUME)
        self._fractions: dict[str, float] = {}
        self._stakes: dict[str, float] = {}
        self._share_cache: dict[int, int] = {}
        self._warned_no_permit = False
        self._me: str | None = None
        self._capacities: dict[str, dict[str, int]] = {}
        """Capacities set by this process: rewritten by :meth:`set_stakes` if Redis lost them (restart)."""

    # -- time ----------------------------------------------------------------------------------------
    def epoch(self, now: float | None = None) -> int:
        return epoch_index(self._clock() if now is None else now, self.settings.epoch_seconds)

    def _usage_ttl_ms(self, now: float) -> int:
        """Usage counters live to the end of the epoch plus one epoch, so late readers still see them."""
        end = epoch_end(self.epoch(now), self.settings.epoch_seconds)
        return max(1, math.ceil((end - now + self.settings.epoch_seconds) * 1000))

    # -- shares --------------------------------------------------------------------------------------
    @property
    def my_fraction(self) -> float:
        """This validator's fraction of every miner's capacity (0 before :meth:`set_stakes`)."""
        return self._fractions.get(self._me, 0.0) if self._me else 0.0

    def share_of(self, capacity: int) -> int:
        """This validator's whole-request share of a miner that declared ``capacity``."""
        if self._me is None or self._me not in self._fractions:
            return 0
        if capacity not in self._share_cache:  # miners often declare the same capacity
            floor = floor_fraction(
                capacity, min_share=self.settings.min_share, min_requests=self.settings.min_requests
            )
            fractions = stake_fractions(self._stakes, min_share=floor)
            self._share_cache[capacity] = apportion(capacity, fractions)[self._me]
        return self._share_cache[capacity]

    def _shares_for(self, capacities: Mapping[str, int]) -> dict[str, int]:
        """Share hash fields: ``TASK`` -> share, ``TASK:syn`` -> synthetic limit."""
        fields: dict[str, int] = {}
        for task, capacity in capacities.items():
            share = self.share_of(capacity)
            fields[task] = share
            # At least ``synthetic_min_fraction`` of the capacity and ``synthetic_min_requests`` (within the
            # share): a floor validator's synthetic_fraction alone is too few samples.
            least = max(math.floor(capacity * self.settings.synthetic_min_fraction + 1e-9),
                        self.settings.synthetic_min_requests)
            fields[f"{task}:syn"] = max(synthetic_limit(share, self.settings.synthetic_fraction), min(share, least))
            fields[f"{task}:borrow"] = borrow_ceiling(capacity, self.settings.borrow_ceiling)
        return fields

    async def set_stakes(self, metagraph: Metagraph, my_hotkey: str) -> float:
        """Take the validators' stakes from a metagraph snapshot and rewrite this validator's shares of
        every known miner. Returns this validator's fraction of a miner's capacity.

        Call it on every metagraph refresh: stakes move every block, and permits come and go.
        """
        had_permit = self._me == my_hotkey and my_hotkey in self._fractions
        self._stakes = permitted_stakes(metagraph)
        self._fractions = stake_fractions(self._stakes, min_share=self.settings.min_share)
        self._me = my_hotkey
        self._share_cache = {}
        if my_hotkey not in self._fractions and (had_permit or not self._warned_no_permit):
            # Once per loss of the permit, not on every metagraph refresh.
            self._warned_no_permit = True
            log.warning(
                "validator %s has no validator permit on netuid %s: its quota on every miner is 0",
                my_hotkey,
                metagraph.netuid,
            )
        identities = sorted(await state.known_identities(self._redis, self._keys) | set(self._capacities))
        for start in range(0, len(identities), state.BATCH):
            await self._rewrite_shares(identities[start : start + state.BATCH])
        return self.my_fraction

    async def _rewrite_shares(self, identities: Sequence[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            pipe.hgetall(self._keys.capacity(identity))
            pipe.hkeys(self._keys.quota_share(identity))
        raw = await pipe.execute()
        pipe = self._redis.pipeline(transaction=False)
        for i, identity in enumerate(identities):
            stored = {k.decode(): int(v) for k, v in raw[2 * i].items()}
            capacities = stored or self._capacities.get(identity, {})
            if not capacities:
                continue
            if not stored:  # Redis lost it (restart without persistence): put it back
                pipe.hset(self._keys.capacity(identity), mapping=capacities)
                pipe.sadd(self._keys.miners_index(), identity)
                pipe.sadd(self._keys.miner_tasks(identity), *capacities)
            fields = self._shares_for(capacities)
            pipe.hset(self._keys.quota_share(identity), mapping=fields)
            stale = [f for f in (k.decode() for k in raw[2 * i + 1]) if f not in fields and f != BURST_FIELD]
            if stale:
                pipe.hdel(self._keys.quota_share(identity), *stale)
        await pipe.execute()

    async def set_capacity(
        self, identity: str, capacities: Mapping[str, int], *, burst_seconds: float | None = None
    ) -> dict[str, int]:
        """Record a miner's declared capacities (clamped by settings) and this validator's share of each, and
        the burst it paces with (``burst_seconds``, as published at ``/capacity``; ``None``: unknown).

        Returns task -> share. Replaces whatever was declared before, atomically for that miner.
        """
        clamped = {
            task: clamp_capacity(
                value, min_capacity=self.settings.min_capacity, max_capacity=self.settings.max_capacity
            )
            for task, value in capacities.items()
        }
        self._capacities[identity] = clamped
        fields: dict[str, int | str] = dict(self._shares_for(clamped))
        if burst_seconds is not None and math.isfinite(burst_seconds) and burst_seconds > 0:
            fields[BURST_FIELD] = repr(float(burst_seconds))
        await state.track(self._redis, self._keys, identity, clamped)
        # One hash slot ({m:identity}): a MULTI transaction is cluster-safe and leaves no moment where a
        # consumer sees the old capacity with the new shares, or no shares at all.
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.capacity(identity), self._keys.quota_share(identity))
        if clamped:
            pipe.hset(self._keys.capacity(identity), mapping=clamped)
            pipe.hset(self._keys.quota_share(identity), mapping=fields)
        await pipe.execute()
        return {task: fields[task] for task in clamped}

    async def capacities(self, identity: str) -> dict[str, int]:
        raw = await self._redis.hgetall(self._keys.capacity(identity))
        return {k.decode(): int(v) for k, v in raw.items()}

    # -- consumption ---------------------------------------------------------------------------------
    async def consume(self, identity: str, task: str, kind: QuotaKind, n: int = 1) -> bool:
        """Take ``n`` requests of this validator's quota on a miner; False (and nothing taken) when that
        would exceed the share, or for synthetic traffic the synthetic limit. One atomic round trip.
        True also for a borrow attempt (:meth:`grant` tells which)."""
        return bool(await self.grant(identity, task, kind, n))

    async def grant(self, identity: str, task: str, kind: QuotaKind, n: int = 1) -> Mode:
        """:data:`GUARANTEED` while this validator's pace on the miner allows, :data:`BORROWED` for an
        attempt beyond it (the miner may refuse it), 0 when refused (nothing taken)."""
        keys, args = self._consume_call(identity, task, kind, n, self._clock())
        return int(await self._consume(keys=keys, args=args))  # type: ignore[return-value]

    async def consume_many(
        self, identities: Sequence[str], task: str, kind: QuotaKind, n: int = 1
    ) -> list[bool]:
        """:meth:`consume` for many miners in one round trip: a pipeline of one script call per miner
        (miners live in different hash slots, so one script may not touch them all)."""
        return [bool(m) for m in await self.grant_many(identities, task, kind, n)]

    async def grant_many(
        self,
        identities: Sequence[str],
        task: str,
        kind: QuotaKind,
        n: int = 1,
        *,
        at: Sequence[float] | None = None,
        kinds: Sequence[QuotaKind] | None = None,
    ) -> list[Mode]:
        """:meth:`grant` for many miners in one round trip, in order; ``at`` gives each call its own time
        (the simulator spreads a step's calls over the step), else the book's clock now, and ``kinds`` its
        own kind, else ``kind``."""
        if not identities:
            return []
        now = self._clock()
        times = list(at) if at is not None else [now] * len(identities)
        each = list(kinds) if kinds is not None else [kind] * len(identities)
        calls = [
            self._consume_call(identity, task, k, n, t) for identity, t, k in zip(identities, times, each)
        ]
        return [int(r) for r in await evalsha_many(self._redis, self._consume, calls)]  # type: ignore[misc]

    def _consume_call(
        self, identity: str, task: str, kind: QuotaKind, n: int, now: float
    ) -> tuple[list[str], list[str | int]]:
        if kind not in _KINDS:
            raise ValueError(f"quota kind must be 'synthetic' or 'organic', got {kind!r}")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        keys = [self._keys.quota_share(identity), self._keys.quota_used(identity, task, self.epoch(now))]
        s = self.settings
        return keys, [task, kind, n, self._usage_ttl_ms(now), repr(float(now)), repr(float(s.epoch_seconds)),
                      repr(float(s.burst_seconds)), repr(SLACK), BURST_FIELD]

    # -- reading -------------------------------------------------------------------------------------
    async def status(self, identities: Sequence[str], task: str) -> dict[str, QuotaStatus]:
        """Share, synthetic limit and use of each miner in the current epoch (one pipelined round trip)."""
        epoch = self.epoch()
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            pipe.hmget(self._keys.quota_share(identity), [task, f"{task}:syn", f"{task}:borrow", BURST_FIELD])
            pipe.hmget(self._keys.quota_used(identity, task, epoch), ["total", "synthetic", "g", "b", "tat"])
        raw = await pipe.execute() if identities else []
        out: dict[str, QuotaStatus] = {}
        for i, identity in enumerate(identities):
            share, syn, ceiling = (int(v or 0) for v in raw[2 * i][:3])
            burst = raw[2 * i][3]
            used_total, used_syn, g, b = (int(v or 0) for v in raw[2 * i + 1][:4])
            tat = raw[2 * i + 1][4]
            out[identity] = QuotaStatus(share, syn, used_total, used_syn, g, b, ceiling,
                                        float(tat) if tat is not None else None,
                                        float(burst) if burst is not None else None)
        return out

    async def entitlements(
        self, identities: Sequence[str], tasks: Sequence[str]
    ) -> dict[str, dict[str, Entitlement]]:
        """task -> identity -> this validator's guaranteed share of the miner and the capacity it declared
        (zeros when unknown), as the books hold them now; one pipelined round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for identity in identities:
            pipe.hmget(self._keys.quota_share(identity), list(tasks))
            pipe.hgetall(self._keys.capacity(identity))
        raw = await pipe.execute() if identities else []
        out: dict[str, dict[str, Entitlement]] = {task: {} for task in tasks}
        for i, identity in enumerate(identities):
            capacities = {k.decode(): int(v) for k, v in raw[2 * i + 1].items()}
            for task, share in zip(tasks, raw[2 * i]):
                out[task][identity] = Entitlement(int(share or 0), capacities.get(task, 0))
        return out

    async def remaining(self, identities: Sequence[str], task: str) -> dict[str, Remaining]:
        """identity -> (total_left, synthetic_left) in the current epoch; never negative."""
        return {
            i: Remaining(s.total_left, s.synthetic_left)
            for i, s in (await self.status(identities, task)).items()
        }

    async def synthetic_candidates(self, identities: Sequence[str], task: str) -> list[SyntheticCandidate]:
        """The input of :func:`.sampling.sample_synthetic` for these miners."""
        return [
            SyntheticCandidate(identity=i, synthetic_left=s.synthetic_left, challenged=s.used_synthetic)
            for i, s in (await self.status(identities, task)).items()
        ]

    async def organic_candidates(
        self, identities: Sequence[str], task: str, standings: Mapping[str, Standing]
    ) -> list[OrganicCandidate]:
        """The input of :func:`.sampling.rank_organic`; a miner without a standing has no evidence."""
        out = []
        now = self._clock()
        for i, s in (await self.status(identities, task)).items():
            known = standings.get(i, UNJUDGED)
            guaranteed = s.guaranteed_now(now, self.settings)
            out.append(
                OrganicCandidate(
                    identity=i,
                    score=known.score,
                    total_left=s.guaranteed_left if guaranteed else s.borrow_left,
                    quality=known.quality,
                    evidence=known.evidence,
                    guaranteed=guaranteed,
                )
            )
        return out

    # -- cleanup -------------------------------------------------------------------------------------
    async def prune(self, metagraph: Metagraph) -> list[str]:
        """Forget miners that are no longer in the metagraph (see :mod:`.state`)."""
        live = {n.identity for n in metagraph.neurons}
        pruned = await state.prune_identities(self._redis, self._keys, live)
        for identity in pruned:
            self._capacities.pop(identity, None)
        for identity in [i for i in self._capacities if i not in live]:
            del self._capacities[identity]
        return pruned
