"""Challenge ids: the ground truth of a synthetic request, recoverable by the validator, hidden from miners.

A validator scores from the request alone (``Task.score(request, responses, timings)``), so the truth of a
synthetic request (the words rendered into an image, which texts are machine-written, where the objects
are) must be recoverable from it. A miner sees that same request, so the truth must not be *readable* from
it. A task squares this with an ``id`` of 32 hex digits on every request (:data:`ChallengeId`), as the OCR,
detection and vision examples do:

- a synthetic request's id is a 16-digit nonce plus a 16-digit HMAC-SHA256 tag of it under the validator's
  secret (``validator.challenge_secret``); the content is drawn from a generator seeded by another HMAC of
  the nonce, so only a holder of the secret can recompute the truth from the id;
- an organic request (a user's) gets a random id of the same shape when it has none, so a miner cannot
  tell synthetic from organic traffic by the id. The validator can: a random id's tag fails to verify
  (one chance in 2**64), and the task scores it against its own reference instead.

The secret is ``validator.challenge_secret`` when configured. Otherwise the validator's services agree on
one through Redis at start-up (:func:`share_secret`: the first process draws it, every other one reads
it), so synthetic requests made in one process are opened in another. A process that never shared one
(a bare script, a test) falls back to a random key of its own, with a warning.

:class:`ChallengeTask` holds the key plumbing such tasks share, and :class:`ReferencedChallengeTask` the
scoring rule of those that can fall back on a reference of their own for organic requests.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import secrets
from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

from pydantic import Field

from inference_subnet.protocol.task import Req, Resp, Task

if TYPE_CHECKING:
    from inference_subnet.settings import Settings
    from inference_subnet.store.keys import Keys
    from inference_subnet.store.redis import RedisClient

ID_PATTERN = r"^[0-9a-f]{32}$"
"""The shape of every challenge id, synthetic or organic."""
SECRET_ENV = "ISN_VALIDATOR__CHALLENGE_SECRET"
"""Where :func:`share_secret` leaves the agreed secret: child processes (scoring workers) inherit it."""

_PROCESS_SECRET = secrets.token_bytes(32)

log = logging.getLogger(__name__)


def random_id() -> str:
    """An id for a request that is not a challenge (the default of every challenge task request's ``id``)."""
    return secrets.token_hex(16)


ChallengeId = Annotated[
    str,
    Field(
        default_factory=random_id,
        pattern=ID_PATTERN,
        description="Request id (32 hex digits); optional for clients.",
    ),
]
"""The ``id`` field of a challenge task's request: optional for clients, so organic requests look like
synthetic ones on the wire."""


class ChallengeKey:
    """Issues challenge ids and recovers the seed of their ground truth, under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the challenge secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, purpose: str, task: str, nonce: str) -> bytes:
        return hmac.new(self._secret, f"{purpose}\x00{task}\x00{nonce}".encode(), hashlib.sha256).digest()

    def issue(self, task: str, rng: random.Random) -> tuple[str, random.Random]:
        """A new challenge id for ``task`` (its nonce drawn from ``rng``) and the generator of its truth."""
        nonce = f"{rng.getrandbits(64):016x}"
        tag = self._mac("tag", task, nonce)[:8].hex()
        return nonce + tag, self._truth(task, nonce)

    def open(self, task: str, challenge_id: str) -> random.Random | None:
        """The generator of the truth behind ``challenge_id``, or ``None`` when it is not one of this key's
        challenges for ``task`` (an organic request, another validator's, or a forged id)."""
        if len(challenge_id) != 32:
            return None
        nonce, tag = challenge_id[:16], challenge_id[16:]
        if not hmac.compare_digest(self._mac("tag", task, nonce)[:8].hex(), tag):
            return None
        return self._truth(task, nonce)

    def _truth(self, task: str, nonce: str) -> random.Random:
        return random.Random(int.from_bytes(self._mac("truth", task, nonce), "big"))


@lru_cache(maxsize=1)
def configured_key() -> ChallengeKey:
    """The key from ``validator.challenge_secret``, or this process's random one (with a warning)."""
    from inference_subnet.settings import load_settings

    secret = load_settings().validator.challenge_secret
    if secret is None:
        log.warning(
            "no challenge key configured or shared (validator.challenge_secret): synthetic challenges use a "
            "per-process key that other processes cannot open"
        )
        return ChallengeKey(_PROCESS_SECRET)
    return ChallengeKey(secret.get_secret_value().encode())


async def share_secret(redis: RedisClient, keys: Keys, settings: Settings) -> None:
    """Make every process of one validator use one challenge key: the configured secret, or one drawn once
    and kept in Redis (``SET NX``: concurrent starts agree). It is left in this process's environment, so
    the settings every task reads, and every child process, see it."""
    configured = settings.validator.challenge_secret
    if configured is not None:
        value = configured.get_secret_value()
    else:
        await redis.set(keys.challenge_secret(), secrets.token_hex(32), nx=True)
        stored = await redis.get(keys.challenge_secret())
        value = stored.decode() if isinstance(stored, bytes) else str(stored)
    os.environ[SECRET_ENV] = value
    configured_key.cache_clear()


Truth = TypeVar("Truth")


class ChallengeTask(Task[Req, Resp]):
    """A task whose synthetic requests are challenges: the content is drawn from the generator
    :meth:`issue` returns, and the validator recovers that generator from the request's id with
    :meth:`open`. The key is the configured one unless a test passes its own."""

    def __init__(self, key: ChallengeKey | None = None) -> None:
        self._key = key

    @cached_property
    def key(self) -> ChallengeKey:
        # Resolved on first use: a validator builds its tasks before its processes agree on the secret.
        return self._key or configured_key()

    def issue(self, rng: random.Random) -> tuple[str, random.Random]:
        """A new challenge id for this task and the generator of its truth."""
        return self.key.issue(self.name, rng)

    def open(self, challenge_id: str) -> random.Random | None:
        """The generator of the truth behind a request's id, or ``None`` when this validator did not make
        the request."""
        return self.key.open(self.name, challenge_id)


class ReferencedChallengeTask(ChallengeTask[Req, Resp], Generic[Req, Resp, Truth]):
    """A challenge task that scores every answer against what is expected of it: the truth of a challenge
    this validator made, or else (an organic request) its own :meth:`reference` answer."""

    @abstractmethod
    def truth(self, request: Req) -> Truth | None:
        """The truth behind ``request``, or ``None`` for a request this validator did not make."""

    @abstractmethod
    def reference(self, request: Req) -> Truth:
        """The validator's own answer to ``request``: the yardstick of organic requests."""

    @abstractmethod
    def quality(self, response: Resp, expected: Truth) -> float:
        """How well one answer matches what was expected, in [0, 1]."""

    def score(self, request: Req, responses: Sequence[Resp | None], timings: Sequence[float]) -> list[float]:
        if all(r is None for r in responses):  # nobody answered: spare the reference its cost
            return [0.0] * len(responses)
        expected = self.truth(request)
        if expected is None:
            expected = self.reference(request)
        return [0.0 if r is None else self.quality(r, expected) for r in responses]
