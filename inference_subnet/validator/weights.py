"""The weight setter: scores become weights on chain once per tempo, and every attempt is on record.

Weights that silently stop being set are the most common validator failure, so this service keeps a capped
log of every attempt in Redis (``keys.weight_attempts()``), the last success (``keys.last_weights()``), and
exposes "blocks since the last successful set" as a metric and on ``/ready``. "Too soon" (the chain's
weights rate limit) is an expected outcome with a block to come back at, not an error; transport failures are
retried with backoff; refusals that a retry cannot fix (no permit, invalid weights) are recorded once and
retried only at the next interval.

The mapping from scores to weights is a pure function (:func:`scores_to_weights`): scores are keyed by miner
identity (hotkey with registration block), so a uid taken over by a new hotkey gets zero, never its
predecessor's score.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Protocol

from bittensor_wallet import Keypair
from redis.exceptions import RedisError

from inference_subnet.chain.types import (
    ChainClient,
    ChainError,
    Hyperparameters,
    InvalidWeights,
    Metagraph,
    MetagraphSource,
    NotRegistered,
    NoValidatorPermit,
    RateLimited,
    WeightAttempt,
    WeightVecTooShort,
)
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient
from inference_subnet.validator import metrics
from inference_subnet.validator.managing.quotas import Entitlement, QuotaBook
from inference_subnet.validator.managing.volume import VolumeBook
from inference_subnet.validator.service import Check, Service, cancel_all, watch_blocks

log = logging.getLogger(__name__)

_PERMANENT = (InvalidWeights, WeightVecTooShort, NotRegistered, NoValidatorPermit)
"""Refusals a retry a few seconds later cannot fix."""


def scores_to_weights(aggregates: Mapping[str, float], metagraph: Metagraph) -> tuple[list[int], list[float]]:
    """Weights over every uid of ``metagraph`` (ascending), from per-identity aggregate scores.

    A uid's weight is the score of the identity that holds it now; identities not in the metagraph are
    ignored and uids without a score get 0. Negative, NaN and infinite scores count as 0. The weights are
    normalised to sum to 1 when any is positive, else all are 0 (nothing to set).
    """
    uids: list[int] = []
    raw: list[float] = []
    for neuron in sorted(metagraph.neurons, key=lambda n: n.uid):
        value = aggregates.get(neuron.identity, 0.0)
        uids.append(neuron.uid)
        raw.append(value if math.isfinite(value) and value > 0 else 0.0)
    total = math.fsum(raw)
    if total <= 0:
        return uids, [0.0] * len(uids)
    return uids, [w / total for w in raw]


def vouched_volumes(
    served: Mapping[str, float], entitled: Mapping[str, Entitlement], *, epochs: float
) -> dict[str, float]:
    """identity -> the volume this validator can vouch for: the miner's declared capacity times the part of
    this validator's guaranteed share (over ``epochs`` quota epochs) that it served OK, at most all of it.

    A validator sees only its own slice of a miner. Its raw count follows what it was entitled to, not the
    miner: a floor validator gets the same few requests from every miner whatever its size, and the largest
    gets a smaller fraction of a small miner (the floors take their part first). Scaling the slice by what
    the share stands for makes every validator estimate the same thing, the miner's verified volume. A
    miner that declares more than it serves fails its shares at load (timeouts and errors are no volume),
    and splitting a machine over uids splits its capacity, so neither earns more. A miner without a share
    (unknown capacity, no permit) can be vouched for by nothing.
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    out: dict[str, float] = {}
    for identity, e in entitled.items():
        count = served.get(identity, 0.0)
        if e.share <= 0 or e.capacity <= 0 or not math.isfinite(count) or count <= 0:
            out[identity] = 0.0
            continue
        out[identity] = e.capacity * min(1.0, count / (e.share * epochs))
    return out


def volume_shares(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """identity -> its share of the served volume, averaged over tasks (every task counts the same, as in
    scores); a task with no volume at all adds nothing. Negative and non-finite counts are 0."""
    shares: dict[str, float] = {}
    tasks = 0
    for counts in per_task.values():
        clean = {i: (v if math.isfinite(v) and v > 0 else 0.0) for i, v in counts.items()}
        total = math.fsum(clean.values())
        if total <= 0:
            continue
        tasks += 1
        for identity, v in clean.items():
            shares[identity] = shares.get(identity, 0.0) + v / total
    return {i: v / tasks for i, v in shares.items()} if tasks else {}


def volume_weighted(
    scores: Mapping[str, float],
    volumes: Mapping[str, float],
    *,
    power: float = 2.0,
    min_score: float = 0.0,
) -> dict[str, float]:
    """Raw weights ``score^power x volume``: what a miner is paid for is the answers it served this validator
    OK, valued by how good they are.

    Splitting one machine over k uids splits its volume k ways (each uid serves what its share of the
    machine lets it), so the k uids together earn what the machine earns behind one uid. A miner scoring
    under ``min_score`` earns nothing, whatever its volume: wrong answers at volume are worth nothing. When no
    miner has any volume (a validator that has seen no answer yet), weights follow ``score^power`` alone so
    that a weight can still be set. Scores that are negative or not finite count as 0.
    """
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")

    def worth(score: float) -> float:
        if not math.isfinite(score) or score <= 0 or score < min_score:
            return 0.0
        return score**power

    if not any(math.isfinite(v) and v > 0 for v in volumes.values()):
        return {i: worth(s) for i, s in scores.items()}
    out: dict[str, float] = {}
    for identity, score in scores.items():
        v = volumes.get(identity, 0.0)
        out[identity] = worth(score) * (v if math.isfinite(v) and v > 0 else 0.0)
    return out


def paid_by_volume(
    scores: Mapping[str, float],
    served: Mapping[str, Mapping[str, float]],
    entitled: Mapping[str, Mapping[str, Entitlement]],
    *,
    epochs: float,
    power: float,
    min_score: float,
) -> dict[str, float]:
    """Raw weights from aggregate scores and, per task, what each miner served this validator OK over
    ``epochs`` quota epochs against its share (:func:`vouched_volumes`, then :func:`volume_weighted`)."""
    vouched = {task: vouched_volumes(served.get(task, {}), e, epochs=epochs) for task, e in entitled.items()}
    return volume_weighted(scores, volume_shares(vouched), power=power, min_score=min_score)


def weights_digest(uids: Sequence[int], weights: Sequence[float]) -> str:
    """A short fingerprint of a weight vector, for logs and attempt records."""
    text = ",".join(f"{u}:{w:.6f}" for u, w in zip(uids, weights))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def interval_blocks(hyper: Hyperparameters, configured: int | None) -> int:
    """Blocks between sets: the configured interval or the tempo, never faster than the rate limit."""
    wanted = configured if configured and configured > 0 else hyper.tempo
    return max(1, wanted, hyper.weights_rate_limit)


class Aggregates(Protocol):
    """The score book as the weight setter uses it (``managing.ScoreBook``)."""

    async def aggregates(
        self, identities: Sequence[str], tasks: Mapping[str, float] | Sequence[str]
    ) -> dict[str, float]: ...


class WeightSetter(Service):
    """Sets weights every interval; keeps the attempt log and the "blocks since last success" signal."""

    name = "weights"

    def __init__(
        self,
        chain: ChainClient,
        redis: RedisClient,
        keys: Keys,
        keypair: Keypair,
        scores: Aggregates,
        metagraph: MetagraphSource,
        tasks: Mapping[str, float] | Sequence[str],
        *,
        netuid: int,
        mechid: int = 0,
        interval: int | None = None,
        retries: int = 3,
        backoff: float = 2.0,
        max_blocks_without: int | None = None,
        attempts_kept: int = 200,
        poll_seconds: float = 12.0,
        version_key: int | None = None,
        volumes: VolumeBook | None = None,
        quotas: QuotaBook | None = None,
        weight_power: float = 2.0,
        volume_min_score: float = 0.0,
    ) -> None:
        self.chain = chain
        self.redis = redis
        self.keys = keys
        self.keypair = keypair
        self.scores = scores
        self.metagraph = metagraph
        self.tasks: Mapping[str, float] | list[str] = dict(tasks) if isinstance(tasks, Mapping) else list(tasks)
        """Task names, or name -> latency reference (the task's timeout) for the speed part of scores."""
        self.netuid = netuid
        self.mechid = mechid
        self.interval = interval
        self.retries = retries
        self.backoff = backoff
        self.max_blocks_without = max_blocks_without
        self.attempts_kept = attempts_kept
        self.poll_seconds = poll_seconds
        self.version_key = version_key
        self.volumes = volumes
        self.quotas = quotas
        """Verified served volume and the shares it is judged against; either None pays scores alone (per
        uid)."""
        self.weight_power = weight_power
        self.volume_min_score = volume_min_score
        self.last_success_block: int | None = None
        self.started_block: int | None = None
        self.current_block: int | None = None
        self.next_try_block: int | None = None
        self._hyper: Hyperparameters | None = None
        self._hyper_block = -1
        self._loaded = False
        self._new_block = asyncio.Event()
        self.ticked_block: int | None = None
        """The last block :meth:`run` finished a tick for (whatever the tick decided)."""
        self._progress = asyncio.Condition()

    # -- state ---------------------------------------------------------------------------------------
    async def load(self) -> None:
        """Pick up the last success from Redis so a restart does not reset the clock."""
        if self._loaded:
            return
        raw = await self.redis.get(self.keys.last_weights())
        if raw is not None:
            self.last_success_block = int(json.loads(raw)["block"])
        self._loaded = True

    async def hyperparameters(self, block: int) -> Hyperparameters:
        """The subnet's parameters, re-read once per tempo (they change rarely, by sudo or owner)."""
        if self._hyper is None or block - self._hyper_block >= max(1, self._hyper.tempo):
            self._hyper = await self.chain.hyperparameters(self.netuid)
            self._hyper_block = block
        return self._hyper

    def blocks_since_success(self) -> int | None:
        if self.current_block is None:
            return None
        since = self.last_success_block if self.last_success_block is not None else self.started_block
        return None if since is None else max(0, self.current_block - since)

    def _limit(self) -> int | None:
        if self.max_blocks_without is not None:
            return self.max_blocks_without
        if self._hyper is None:
            return None
        return 2 * interval_blocks(self._hyper, self.interval)

    # -- one decision ----------------------------------------------------------------------------------
    async def tick(self) -> WeightAttempt | None:
        """Read the block; set weights if an interval passed since the last success. Returns the attempt."""
        await self.load()
        block = await self.chain.block()
        self.current_block = block
        if self.started_block is None:
            self.started_block = block
        hyper = await self.hyperparameters(block)
        self._update_gauges()
        if self.next_try_block is not None and block < self.next_try_block:
            return None
        # A set submitted at head ``block`` executes in ``block + 1``: the chain's own convention.
        if self.last_success_block is not None and block + 1 - self.last_success_block < interval_blocks(
            hyper, self.interval
        ):
            return None
        return await self.set_now(block, hyper)

    async def set_now(self, block: int | None = None, hyper: Hyperparameters | None = None) -> WeightAttempt | None:
        """Compute and submit weights now (with retries). None when there is nothing to set."""
        block = block if block is not None else await self.chain.block()
        hyper = hyper or await self.hyperparameters(block)
        metagraph = await self.metagraph.current()
        own = metagraph.by_hotkey.get(self.keypair.ss58_address)
        if own is not None and own.last_update and block + 1 - own.last_update < hyper.weights_rate_limit:
            # The chain would answer "too soon": don't spend an extrinsic to learn it.
            self.next_try_block = own.last_update + hyper.weights_rate_limit - 1
            metrics.weight_sets.labels("waiting_rate_limit").inc()
            return None
        identities = [n.identity for n in metagraph.neurons]
        aggregates = await self.scores.aggregates(identities, self.tasks)
        if self.volumes is not None and self.quotas is not None:
            tasks = list(self.tasks)
            aggregates = paid_by_volume(
                aggregates, await self.volumes.volumes(identities, tasks),
                await self.quotas.entitlements(identities, tasks), epochs=self.volumes.span(),
                power=self.weight_power, min_score=self.volume_min_score,
            )
        uids, weights = scores_to_weights(aggregates, metagraph)
        if not any(w > 0 for w in weights):
            metrics.weight_sets.labels("no_scores").inc()
            log.info("no miner has a positive score yet at block %d: no weights to set", block,
                     extra={"service": self.name, "block": block})
            self.next_try_block = block + max(1, interval_blocks(hyper, self.interval) // 10)
            return None
        digest = weights_digest(uids, weights)
        attempt: WeightAttempt | None = None
        delay = self.backoff
        for n in range(self.retries + 1):
            try:
                attempt = await self.chain.set_weights(
                    self.keypair, self.netuid, uids, weights, version_key=self.version_key, mechid=self.mechid
                )
            except RateLimited as exc:
                attempt = self._failed(block, uids, digest, "too_soon", exc, exc.ready_at_block)
            except _PERMANENT as exc:
                attempt = self._failed(block, uids, digest, "rejected", exc)
            except (ChainError, OSError, asyncio.TimeoutError) as exc:
                attempt = self._failed(block, uids, digest, "error", exc)
            await self._record(attempt)
            if attempt.outcome == "success":
                await self._succeeded(attempt, uids, weights, metagraph)
                return attempt
            if attempt.outcome in ("too_soon", "rejected"):
                break
            if n < self.retries:
                log.warning("weight set failed (try %d of %d): %s; retrying in %.1fs", n + 1, self.retries + 1,
                            attempt.error, delay, extra={"service": self.name})
                await asyncio.sleep(delay)
                delay *= 2
        assert attempt is not None
        self._schedule_retry(block, hyper, attempt)
        return attempt

    def _failed(self, block: int, uids: Sequence[int], digest: str, outcome: str, exc: BaseException,
                ready_at: int | None = None) -> WeightAttempt:
        return WeightAttempt(
            block=block, netuid=self.netuid, uids=tuple(uids), digest=digest, path=None,
            outcome=outcome,  # type: ignore[arg-type]
            error=f"{type(exc).__name__}: {exc}", ready_at_block=ready_at, mechid=self.mechid,
        )

    def _schedule_retry(self, block: int, hyper: Hyperparameters, attempt: WeightAttempt) -> None:
        if attempt.outcome == "too_soon" and attempt.ready_at_block:
            self.next_try_block = attempt.ready_at_block
            log.info("weights: too soon at block %d, next possible at block %d", block, attempt.ready_at_block,
                     extra={"service": self.name, "block": block})
        elif attempt.outcome == "rejected":
            self.next_try_block = block + interval_blocks(hyper, self.interval)
            log.error("weights refused by the chain at block %d: %s (next try at block %d)", block,
                      attempt.error, self.next_try_block, extra={"service": self.name, "block": block})
        else:
            self.next_try_block = block + max(1, interval_blocks(hyper, self.interval) // 10)
            log.error("weights not set at block %d after %d tries: %s (next try at block %d)", block,
                      self.retries + 1, attempt.error, self.next_try_block,
                      extra={"service": self.name, "block": block})

    async def _record(self, attempt: WeightAttempt) -> None:
        metrics.weight_sets.labels(attempt.outcome).inc()
        record = asdict(attempt) | {"ts": time.time()}
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(self.keys.weight_attempts(), json.dumps(record))
                pipe.ltrim(self.keys.weight_attempts(), 0, self.attempts_kept - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the chain call happened; losing its record is not fatal
            log.warning("could not record the weight attempt in Redis: %s", exc)

    async def _succeeded(self, attempt: WeightAttempt, uids: Sequence[int], weights: Sequence[float],
                         metagraph: Metagraph) -> None:
        self.last_success_block = attempt.block
        self.next_try_block = None
        nonzero = [(u, w) for u, w in zip(uids, weights) if w > 0]
        top = sorted(nonzero, key=lambda p: -p[1])[:5]
        record = {
            "block": attempt.block, "uids": list(uids), "weights": list(weights), "digest": attempt.digest,
            "path": attempt.path, "extrinsic_hash": attempt.extrinsic_hash, "ts": time.time(),
            "metagraph_block": metagraph.block,
        }
        try:
            await self.redis.set(self.keys.last_weights(), json.dumps(record))
        except (RedisError, OSError) as exc:
            log.warning("could not store the last weights in Redis: %s", exc)
        metrics.last_weight_set_block.set(attempt.block)
        metrics.weights_nonzero.set(len(nonzero))
        self._update_gauges()
        log.info(
            "weights set at block %d via %s: %d uids, %d non-zero, top %s, digest %s, extrinsic %s",
            attempt.block, attempt.path, len(uids), len(nonzero),
            ", ".join(f"uid {u}={w:.3f}" for u, w in top), attempt.digest, attempt.extrinsic_hash,
            extra={"service": self.name, "block": attempt.block},
        )

    def _update_gauges(self) -> None:
        since = self.blocks_since_success()
        if since is not None:
            metrics.blocks_since_weight_set.set(since)

    # -- loop ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        watcher = asyncio.create_task(watch_blocks(self.chain, self._new_block))
        try:
            while True:
                self._new_block.clear()  # before the tick: a block produced during it wakes us again
                try:
                    await self.tick()
                except (ChainError, RedisError, OSError, asyncio.TimeoutError) as exc:
                    metrics.service_errors.labels(self.name, type(exc).__name__).inc()
                    log.warning("weights tick failed: %s: %s", type(exc).__name__, exc,
                                extra={"service": self.name})
                if self.current_block is not None:
                    self.ticked_block = self.current_block
                    async with self._progress:
                        self._progress.notify_all()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._new_block.wait(), timeout=self.poll_seconds)
        finally:
            await cancel_all([watcher], timeout=5)

    async def wait_ticked(self, block: int, timeout: float) -> bool:
        """Wait until :meth:`run` finished a tick at ``block`` or later; False on timeout."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(
                    lambda: self.ticked_block is not None and self.ticked_block >= block), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def checks(self) -> list[Check]:
        since = self.blocks_since_success()
        limit = self._limit()
        if since is None or limit is None:
            return [Check("weights", True, "starting: no block seen yet")]
        what = "since the last successful weight set" if self.last_success_block is not None else \
            "since start, no weight set yet"
        return [Check("weights", since <= limit, f"{since} blocks {what} (limit {limit})")]
