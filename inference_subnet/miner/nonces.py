"""The btauth/1 replay store, shared by every worker of a miner through Redis.

A per-process set protects nothing once a miner runs two workers or two hosts: a captured request replayed
to the other worker inside the freshness window would pass. ``SET key 1 NX EX retention`` is one atomic
round trip that both records and checks, and the expiry keeps the store bounded without a sweeper.

Retention must cover the whole window in which a nonce is still fresh (``max_age`` back plus
``allowed_skew`` forward); anything older is refused as stale before the store is consulted.
"""

from __future__ import annotations

import math

from inference_subnet.protocol.btauth import DEFAULT_ALLOWED_SKEW, DEFAULT_MAX_AGE
from inference_subnet.store.coalescing import Coalescer
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, SyncRedisClient


def _retention(max_age: float, allowed_skew: float, retention: float | None) -> float:
    window = max_age + allowed_skew
    if retention is None:
        return float(math.ceil(window) + 1)
    if retention < window:
        raise ValueError(
            f"nonce retention {retention:g}s is shorter than the freshness window {window:g}s "
            "(max_age + allowed_skew): replays inside the gap would be accepted"
        )
    return float(retention)


class RedisNonceStore:
    """Asynchronous store for :func:`inference_subnet.protocol.btauth.verify_async`.

    With a :class:`~inference_subnet.store.coalescing.Coalescer` the ``SET`` of concurrent requests share
    one round trip per loop turn.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        allowed_skew: float = DEFAULT_ALLOWED_SKEW,
        retention: float | None = None,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._coalescer = coalescer
        self.retention = _retention(max_age, allowed_skew, retention)
        self._ttl_ms = int(self.retention * 1000)

    async def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """True (and recorded) the first time a (hotkey, nonce) pair is seen; False for a replay."""
        key = self._keys.nonce(hotkey_ss58, nonce_ns)
        if self._coalescer is not None:
            stored = await self._coalescer.execute("SET", key, b"1", "NX", "PX", self._ttl_ms)
        else:
            stored = await self._client.set(key, b"1", nx=True, px=self._ttl_ms)
        return bool(stored)


class SyncRedisNonceStore:
    """The same store for synchronous verifiers, e.g. ``bittensor.http_auth.verify(nonce_store=...)``.

    Shares keys with :class:`RedisNonceStore`, so a nonce accepted by one is a replay to the other.
    """

    def __init__(
        self,
        client: SyncRedisClient,
        keys: Keys,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        allowed_skew: float = DEFAULT_ALLOWED_SKEW,
        retention: float | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self.retention = _retention(max_age, allowed_skew, retention)
        self._ttl_ms = int(self.retention * 1000)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        stored = self._client.set(self._keys.nonce(hotkey_ss58, nonce_ns), b"1", nx=True, px=self._ttl_ms)
        return bool(stored)
