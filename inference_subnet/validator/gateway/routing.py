"""Organic routing: which miner serves a request, and the next one when it fails.

The order comes from ``managing`` (among miners with quota left that pass the quality bar, the top-scored
contenders in an order drawn by score x quota left, then the rest by score), minus miners the circuit breaker benched after failures in a
row; each candidate's organic quota is taken atomically just before it is called, so concurrent
gateways never overrun a miner's share. A timeout, an error or an invalid answer moves on to the next
candidate, within ``max_attempts`` and one total deadline for the whole request.

Streams fail over too, but only before the first chunk: once a byte went to the client the miner is
committed. :meth:`Router.open_stream` therefore waits for a first chunk (under ``first_byte_timeout``)
before it returns, and the caller relays the rest chunk by chunk.

Reading every miner's quota use costs a pipelined Redis read that grows with the subnet (two commands per
miner), so the router keeps a per-task snapshot of it for ``usage_ttl`` seconds and counts its own
consumptions into the snapshot meanwhile: the quota left that weighs the draw stays exact within one
gateway, other replicas' use shows up at the next refresh, and the atomic consume remains the only authority on quota.

The router knows nothing of HTTP, keys or logs: the task routes and an OpenAI-compatible adapter call the
same two methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from inference_subnet.chain.types import Metagraph, MetagraphSource, Neuron
from inference_subnet.protocol.rate_math import BORROWED, GUARANTEED
from inference_subnet.protocol.task import Task
from inference_subnet.validator import metrics
from inference_subnet.validator.canaries import CanaryBook
from inference_subnet.validator.managing.breaker import Breaker
from inference_subnet.validator.managing.sampling import OrganicCandidate, QualityBar, rank_organic
from inference_subnet.validator.managing.score_math import Standing

log = logging.getLogger(__name__)


# -- what the router needs from its collaborators ---------------------------------------------------


class CallOutcome(Protocol):
    """The parts of ``validator.client.CallResult`` routing reads."""

    ok: bool
    status: int | None
    response: BaseModel | None
    latency: float
    error: str | None
    outcome: str


class MinerCaller(Protocol):
    """``validator.client.MinerClient`` as routing uses it."""

    async def call(
        self, task: Task, neuron: Neuron, request: BaseModel, timeout: float | None = None
    ) -> Any: ...

    def stream(
        self, task: Task, neuron: Neuron, request: BaseModel, *, first_byte_timeout: float, timeout: float
    ) -> AsyncIterator[BaseModel]: ...


class QuotaSource(Protocol):
    """``managing.QuotaBook`` as routing uses it."""

    async def consume(self, identity: str, task: str, kind: Any, n: int = 1) -> bool: ...

    async def organic_candidates(
        self, identities: Sequence[str], task: str, standings: Mapping[str, Standing]
    ) -> list[OrganicCandidate]: ...


class ScoreSource(Protocol):
    """Per-miner standings for one task (``managing.ScoreBook.standings`` through :class:`ScoreCache`)."""

    async def scores(self, identities: Sequence[str], task: str) -> Mapping[str, Standing]: ...


# -- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One miner tried for one organic request."""

    uid: int
    hotkey: str
    identity: str
    outcome: str
    """``ok``, or why the next miner was tried (``timeout``, ``error``, ``invalid``, ``empty``, ...)."""
    latency: float
    status: int | None = None
    error: str | None = None
    response: BaseModel | None = None
    borrowed: bool = False
    """Sent as a borrow attempt, beyond this validator's guaranteed pace on the miner: a 429 to it is the
    miner's honest back-pressure. A 429 to a guaranteed attempt is a failure."""

    @property
    def back_pressure(self) -> bool:
        """A 429 the miner was entitled to send (a refused borrow attempt)."""
        return self.status == 429 and self.borrowed

    def describe(self) -> str:
        detail = f" (HTTP {self.status})" if self.status and self.outcome != "ok" else ""
        return f"uid {self.uid}: {self.outcome}{detail}"


@dataclass(frozen=True, slots=True)
class Served:
    """A response and who served it."""

    response: BaseModel
    neuron: Neuron
    attempts: tuple[Attempt, ...]


@dataclass
class OpenStream:
    """A stream whose first chunk arrived: the client may now be answered. Iterate it (first chunk
    included) and close it (``aclose``) when done, even on error, so the miner connection is released."""

    neuron: Neuron
    attempts: tuple[Attempt, ...]
    first: BaseModel
    _rest: AsyncIterator[BaseModel]
    started: float = field(default_factory=time.perf_counter)

    async def chunks(self) -> AsyncIterator[BaseModel]:
        yield self.first
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # the stream already failed; closing must not mask that
                log.debug("closing a miner stream failed: %s", exc)


class NoMinerAvailable(Exception):
    """No miner could serve the request. ``reason`` is safe to show the caller."""

    def __init__(self, reason: str, attempts: Sequence[Attempt] = ()):
        super().__init__(reason)
        self.reason = reason
        self.attempts = tuple(attempts)


# -- scores ------------------------------------------------------------------------------------------


class ScoreCache:
    """Standings (scores, recent quality, evidence), re-read at most every ``ttl`` seconds per task.

    Scores move slowly (a sample at a time) while routing decisions happen on every request; reading every
    miner's history per request would make Redis the bottleneck of the gateway.
    """

    def __init__(
        self,
        read: Callable[[Sequence[str], str], Any],
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str], Mapping[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def known(self, task: str) -> Mapping[str, Any]:
        """The standings last read for ``task``, however old (empty before the first read): what the organic
        feed needs to know of a miner its router just chose, without a read of its own."""
        cached = self._cache.get(task)
        return cached[2] if cached else {}

    async def scores(self, identities: Sequence[str], task: str) -> Mapping[str, Any]:
        wanted = frozenset(identities)
        cached = self._cache.get(task)
        if cached and cached[0] > self._clock() and wanted <= cached[1]:
            return cached[2]
        async with self._locks.setdefault(task, asyncio.Lock()):
            cached = self._cache.get(task)  # another request may have refreshed it meanwhile
            if cached and cached[0] > self._clock() and wanted <= cached[1]:
                return cached[2]
            fresh = dict(await self._read(sorted(wanted), task))
            self._cache[task] = (self._clock() + self._ttl, wanted, fresh)
            return fresh


# -- the router ---------------------------------------------------------------------------------------


@dataclass
class _Usage:
    """One task's view of the miners' organic quota, as read at ``read_at`` plus this process's use since."""

    metagraph: Metagraph
    neurons: dict[str, Neuron]
    candidates: dict[str, OrganicCandidate]
    read_at: float

    def took(self, identity: str) -> None:
        c = self.candidates.get(identity)
        if c is not None:
            self.candidates[identity] = dataclasses.replace(c, total_left=max(0, c.total_left - 1))

    def exhausted(self, identity: str) -> None:
        c = self.candidates.get(identity)
        if c is not None:
            self.candidates[identity] = dataclasses.replace(c, total_left=0)


def servable(metagraph: Metagraph, exclude_hotkeys: Sequence[str] = ()) -> list[Neuron]:
    """Neurons that can be called: an axon is served, and it is not this validator itself."""
    skip = set(exclude_hotkeys)
    return [n for n in metagraph.neurons if n.axon is not None and n.axon.is_served and n.hotkey not in skip]


class Router:
    """Picks miners for organic requests and fails over between them."""

    def __init__(
        self,
        *,
        metagraph: MetagraphSource,
        client: MinerCaller,
        quotas: QuotaSource,
        scores: ScoreSource,
        max_attempts: int,
        total_deadline: float,
        first_byte_timeout: float,
        bar: QualityBar,
        breaker: Breaker,
        contenders: int = 3,
        exclude_hotkeys: Sequence[str] = (),
        rng: random.Random | None = None,
        usage_ttl: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        canaries: CanaryBook | None = None,
    ):
        self._metagraph = metagraph
        self._client = client
        self._quotas = quotas
        self._scores = scores
        self.max_attempts = max_attempts
        self.total_deadline = total_deadline
        self.first_byte_timeout = first_byte_timeout
        self.contenders = contenders
        self.bar = bar
        self.breaker = breaker
        self._exclude = tuple(exclude_hotkeys)
        self._rng = rng or random.Random()
        self.usage_ttl = usage_ttl
        self._clock = clock
        self.canaries = canaries
        """Planted challenges of this validator: a request equal to a live one is refused, and miners on a
        canary bench are not routed to."""
        self._usage: dict[str, _Usage] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _current_usage(self, task: Task) -> _Usage:
        metagraph = await self._metagraph.current()
        usage = self._usage.get(task.name)
        if (
            usage is not None
            and usage.metagraph is metagraph
            and self._clock() - usage.read_at < self.usage_ttl
        ):
            return usage
        async with self._locks.setdefault(task.name, asyncio.Lock()):
            usage = self._usage.get(task.name)  # refreshed by a concurrent request meanwhile?
            if (
                usage is not None
                and usage.metagraph is metagraph
                and self._clock() - usage.read_at < self.usage_ttl
            ):
                return usage
            neurons = {n.identity: n for n in servable(metagraph, self._exclude)}
            identities = list(neurons)
            candidates: list[OrganicCandidate] = []
            if identities:
                scores = await self._scores.scores(identities, task.name)
                candidates = await self._quotas.organic_candidates(identities, task.name, scores)
                if self.canaries is not None and candidates:
                    benched = await self.canaries.caught([c.identity for c in candidates])
                    candidates = [c for c in candidates if c.identity not in benched]
            usage = _Usage(metagraph, neurons, {c.identity: c for c in candidates}, self._clock())
            self._usage[task.name] = usage
            return usage

    async def candidates(self, task: Task) -> list[Neuron]:
        """Every servable miner with organic quota left that passes the quality bar and is not benched, in
        the order to try them."""
        usage = await self._current_usage(task)
        ranked = rank_organic(
            [c for c in usage.candidates.values() if not self.breaker.benched(c.identity)],
            bar=self.bar,
            contenders=self.contenders,
            rng=self._rng,
        )
        return [usage.neurons[i] for i in ranked]

    def _record(self, attempts: list[Attempt], attempt: Attempt) -> None:
        """Keep the attempt and feed the breaker. A 429 to a borrow attempt is the miner's honest
        back-pressure, not a failure; a 429 within this validator's guaranteed share is one."""
        attempts.append(attempt)
        if attempt.outcome == "ok":
            self.breaker.success(attempt.identity)
        elif not attempt.back_pressure:
            self.breaker.failure(attempt.identity)

    async def _take(self, task: Task, neuron: Neuron) -> int:
        """This validator's organic quota on ``neuron``: the atomic grant decides (guaranteed, a borrow
        attempt, or 0: refused); the snapshot follows."""
        grant = getattr(self._quotas, "grant", None)
        if grant is not None:
            granted = int(await grant(neuron.identity, task.name, "organic"))
        else:  # a quota source without borrowing: every grant is guaranteed
            granted = GUARANTEED if await self._quotas.consume(neuron.identity, task.name, "organic") else 0
        usage = self._usage.get(task.name)
        if usage is not None:
            if granted:
                usage.took(neuron.identity)
            else:
                usage.exhausted(neuron.identity)
        return granted

    async def _plan(self, task: Task) -> list[Neuron]:
        try:
            order = await self.candidates(task)
        except NoMinerAvailable:
            raise
        except Exception as exc:
            log.warning("organic routing could not rank miners for %s: %s", task.name, exc)
            raise NoMinerAvailable(f"miner ranking unavailable ({type(exc).__name__})") from exc
        if not order:
            raise NoMinerAvailable(
                f"no miner that meets the quality bar has organic capacity left for task {task.name!r}"
            )
        return order

    async def _turns(
        self, task: Task, attempts: Sequence[Attempt], deadline: float
    ) -> AsyncIterator[tuple[Neuron, float, bool]]:
        """Each ranked miner whose organic quota this request now holds, with the seconds left and whether
        it is a borrow attempt, until the attempts or the deadline run out. A miner whose quota went to a
        concurrent request since ranking is skipped: that is not an attempt. A refused borrow attempt moves
        on to the next candidate like any failed attempt."""
        loop = asyncio.get_running_loop()
        for neuron in await self._plan(task):
            remaining = deadline - loop.time()
            if len(attempts) >= self.max_attempts or remaining <= 0:
                return
            mode = await self._take(task, neuron)
            if mode:
                yield neuron, remaining, mode == BORROWED

    async def refuse_canary(self, task: Task, request: BaseModel) -> None:
        """Raise :class:`NoMinerAvailable` when ``request`` is one of this validator's live challenges: a miner
        forwarded it instead of answering it. The refusal reads as an ordinary busy gateway, so the forwarder
        cannot tell it was caught, and no good miner's capacity goes to it. Fails open on Redis errors (a
        canary lookup must never take the gateway down)."""
        if self.canaries is None:
            return
        try:
            caught = await self.canaries.check(task.name, request)
        except Exception as exc:
            log.warning("canary lookup failed, serving the request: %s", exc)
            return
        if caught is None:
            return
        metrics.canary_caught.labels(task.name, "organic").inc()
        uid = next((n.uid for n in (await self._metagraph.current()).neurons if n.identity == caught), None)
        log.warning("organic %s request is a live challenge sent to uid %s: refused, miner benched",
                    task.name, uid, extra={"task": task.name, "uid": uid})
        for usage in self._usage.values():  # route around it at once, not only at the next usage read
            usage.candidates.pop(caught, None)
        raise NoMinerAvailable(f"no miner that meets the quality bar has organic capacity left for task "
                               f"{task.name!r}")

    async def call(self, task: Task, request: BaseModel) -> Served:
        """The first valid response among the ranked miners, or :class:`NoMinerAvailable`."""
        await self.refuse_canary(task, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_deadline
        attempts: list[Attempt] = []
        async for neuron, remaining, borrowed in self._turns(task, attempts, deadline):
            timeout = min(task.timeout, remaining)
            started = loop.time()
            try:
                # The client keeps its own deadline; this one only guards against a client that hangs.
                async with asyncio.timeout(timeout + 1.0):
                    result = await self._client.call(task, neuron, request, timeout=timeout)
            except TimeoutError:
                self._record(attempts, _attempt(neuron, "timeout", loop.time() - started, borrowed=borrowed))
                continue
            except Exception as exc:  # a client bug must cost one attempt, not the request
                log.warning("miner call to uid %s raised %s", neuron.uid, exc)
                failed = _attempt(neuron, "error", loop.time() - started, error=type(exc).__name__,
                                  borrowed=borrowed)
                self._record(attempts, failed)
                continue
            ok = bool(result.ok) and result.response is not None
            outcome = "ok" if ok else (result.outcome if result.outcome != "ok" else "invalid")
            self._record(
                attempts,
                _attempt(
                    neuron,
                    outcome,
                    float(result.latency),
                    status=result.status,
                    error=result.error,
                    response=result.response if ok else None,
                    borrowed=borrowed,
                ),
            )
            if ok:
                return Served(response=result.response, neuron=neuron, attempts=tuple(attempts))
        raise NoMinerAvailable(_failure_reason(task, attempts, deadline - loop.time()), attempts)

    async def open_stream(self, task: Task, request: BaseModel) -> OpenStream:
        """A stream from the first miner that sends a first chunk in time, or :class:`NoMinerAvailable`."""
        await self.refuse_canary(task, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_deadline
        attempts: list[Attempt] = []
        async for neuron, remaining, borrowed in self._turns(task, attempts, deadline):
            first_byte = min(self.first_byte_timeout, remaining)
            started = loop.time()
            stream = self._client.stream(
                task, neuron, request, first_byte_timeout=first_byte, timeout=min(task.timeout, remaining)
            )
            try:
                async with asyncio.timeout(first_byte + 1.0):
                    first = await anext(stream)
            except StopAsyncIteration:
                self._record(attempts, _attempt(neuron, "empty", loop.time() - started, borrowed=borrowed))
            except TimeoutError:
                self._record(attempts, _attempt(neuron, "timeout", loop.time() - started, borrowed=borrowed))
            except Exception as exc:
                self._record(
                    attempts,
                    _attempt(
                        neuron,
                        _stream_outcome(exc),
                        loop.time() - started,
                        error=type(exc).__name__,
                        status=getattr(exc, "status", None),
                        borrowed=borrowed,
                    )
                )
            else:
                self._record(attempts, _attempt(neuron, "ok", loop.time() - started, borrowed=borrowed))
                return OpenStream(neuron=neuron, attempts=tuple(attempts), first=first, _rest=stream)
            await _close_quietly(stream)
        raise NoMinerAvailable(_failure_reason(task, attempts, deadline - loop.time()), attempts)


def _attempt(
    neuron: Neuron,
    outcome: str,
    latency: float,
    *,
    status: int | None = None,
    error: str | None = None,
    response: BaseModel | None = None,
    borrowed: bool = False,
) -> Attempt:
    return Attempt(
        uid=neuron.uid,
        hotkey=neuron.hotkey,
        identity=neuron.identity,
        outcome=outcome,
        latency=latency,
        status=status,
        error=error,
        response=response,
        borrowed=borrowed,
    )


def _stream_outcome(exc: Exception) -> str:
    outcome = getattr(exc, "outcome", None)
    if isinstance(outcome, str) and outcome:
        return outcome
    return "timeout" if isinstance(exc, TimeoutError) else "error"


def _failure_reason(task: Task, attempts: Sequence[Attempt], remaining: float) -> str:
    if not attempts:
        return f"no miner has organic capacity left for task {task.name!r}"
    tried = "; ".join(a.describe() for a in attempts)
    why = "deadline exceeded" if remaining <= 0 else f"{len(attempts)} miner(s) failed"
    return f"no miner could serve task {task.name!r}: {why} ({tried})"


async def _close_quietly(stream: AsyncIterator[BaseModel]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # the attempt already failed; closing cannot make it worse
            await closer()
