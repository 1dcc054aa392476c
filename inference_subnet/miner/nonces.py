"""The btauth/1 replay store, shared by every worker of a miner through Redis.

A per-process set protects nothing once a miner runs two workers or two hosts: a captured request replayed
to the other worker inside the freshness window would pass. ``SET key 1 NX EX retention`` is one atomic
round trip that both records and checks, and the expiry keeps the store bounded without a sweeper.

Retention must cover the whole window in which a nonce is still fresh (``max_age`` back plus
``allowed_skew`` forward); anything older is refused as stale before the store is consulted.

**A store that forgets.** The markers live in Redis memory: a restarted (or new, embedded) Redis has none,
and a request captured before would pass again while still fresh. So every bucket of markers has a
*floor* (:meth:`~inference_subnet.store.keys.Keys.nonce_floor`), the time its store began, and a nonce
older than its floor is refused: a request signed before the store existed cannot be proven fresh. The
floor is read in the same round trip as the marker is written; a check that finds it missing (the store
just began) sets it once with ``SET NX``, to the later of two times:

- the start of the Redis server's current data, from ``INFO server``, rounded down to its second: every
  marker written before the restart is gone, every request signed after it is legitimate;
- the time this store object was made, i.e. the miner's start: a miner restarted with a fresh embedded
  Redis refuses every request signed before it came up.

What no clock rule can close: a request the old server accepted in the second before a restart shorter
than a second, or one signed up to ``allowed_skew`` in the future, stays replayable until it goes stale.

**A command sent twice.** The client retries a command whose connection failed (:mod:`.store.redis`), and
a connection can break after the server applied the command: a plain ``SET NX`` sent again would then
report its own first write as a replay. Each check therefore writes a random token with
``SET key token NX GET PX ttl`` and reads back what was there: nothing, or its own token, means fresh.

**One command per check.** The asynchronous store (the miner's hot path) sends the floor read and the marker
write as one script (:data:`CHECK_SCRIPT`), the same two commands run by Redis: a client spends far more
packing, sending and parsing a command than Redis spends running it, and this halves that. The synchronous
store sends the two commands themselves (:func:`check_commands`); both write the same keys and values.

**A counter charged with the check.** A miner that enforces quotas charges the caller's counter right after
a fresh nonce: :meth:`RedisNonceStore.check_and_count` does both in the same script (:data:`COUNT_SCRIPT`),
so a request costs one round trip instead of two. The counter moves only when the script itself has seen the
nonce fresh (first use, a floor present and not above it), so a replay never spends a caller's quota; when
the floor is missing the script leaves the counter alone and the caller charges it on its own after the
floor is set. On a cluster the counter's key lives in another slot than the marker's, so there the two go
out one after the other.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from inference_subnet.protocol.btauth import DEFAULT_ALLOWED_SKEW, DEFAULT_MAX_AGE
from inference_subnet.store.coalescing import Coalescer, Command
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, SyncRedisClient

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Nanoseconds since the epoch (``time.time_ns``), the unit of btauth/1 nonces."""


def server_start_ns(info: Mapping[str, Any]) -> int | None:
    """When the Redis server behind ``info`` (its ``INFO server`` section) started, in ns since the epoch,
    rounded down to the second (the server counts its uptime in whole seconds); ``None`` if not said.

    Rounding down keeps every request signed after the start fresh, at the price of the second before it.
    """
    try:
        now_us = int(info["server_time_usec"])
        uptime_s = int(info["uptime_in_seconds"])
    except (KeyError, TypeError, ValueError):
        return None
    return (now_us // 1_000_000 - uptime_s) * 1_000_000_000


def opening_floor_ns(server_start: int | None, opened_ns: int) -> int:
    """The floor a check sets when it finds none: the later of the server's start and the store's own
    (``opened_ns``); the store's alone when the server does not say when it started."""
    return opened_ns if server_start is None else max(server_start, opened_ns)


def is_first_use(previous: Any, token: str) -> bool:
    """Whether the marker ``SET NX GET`` found (``previous``) says the nonce was not used before: there was
    none, or it is this check's own token (its first send was applied, the reply was lost, the client sent
    it again)."""
    return previous is None or previous in (token, token.encode())


def is_fresh(nonce_ns: int, floor_ns: int, previous: Any, token: str) -> bool:
    """The verdict on one check: first use of the nonce, and the nonce is not older than its store."""
    return is_first_use(previous, token) and nonce_ns >= floor_ns


def check_commands(nonce_key: str, floor_key: str, token: str, ttl_ms: int) -> list[Command]:
    """The two commands of one check, sent together: read the floor, write the marker (getting back what
    was there). Both keys share a slot, so a cluster pipeline sends them to one node."""
    return [
        (("GET", floor_key), {}),
        (("SET", nonce_key, token, "NX", "GET", "PX", ttl_ms), {"get": True}),
    ]


CHECK_SCRIPT = """
local floor = redis.call('GET', KEYS[2])
local previous = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PX', ARGV[2])
return {floor or '', previous or ''}
"""
""":func:`check_commands` as one script: ``KEYS`` = marker, floor; ``ARGV`` = token, ttl in ms. A missing
value comes back empty (a nil would end a Lua array there); neither a floor nor a token is ever empty."""


def _count_script() -> str:
    from importlib.resources import files

    admit = files("inference_subnet.store").joinpath("lua/miner_admit.lua").read_text()
    return admit + """
local floor = redis.call('GET', KEYS[2])
local previous = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PX', ARGV[2])
if previous and previous ~= ARGV[1] then
  return {floor or '', previous, -1, '', 0, 0}
end
local nonce = ARGV[3]
if not floor or #nonce < #floor or (#nonce == #floor and nonce < floor) then
  return {floor or '', previous or '', -1, '', 0, 0}
end
local mode, reason, total, wait = admit(2, 3)
return {floor, previous or '', mode, reason, total, wait}
"""


COUNT_SCRIPT = _count_script()
""":data:`CHECK_SCRIPT`, then, only for a nonce it found fresh, the miner's admission decision
(``store/lua/miner_admit.lua``, :mod:`inference_subnet.miner.quota`): ``KEYS`` = marker, floor, the caller's
and the miner's counters; ``ARGV`` = token, ttl in ms, the nonce, then the charge's arguments. Replies
(floor, previous marker, mode: 1 guaranteed / 2 borrowed / 0 refused / -1 not charged, reason, total,
milliseconds until a refused request could be admitted).
Nonces and floors are compared as decimal strings: nanoseconds since the epoch exceed the integers a Lua
number holds exactly."""


def script_replies(reply: Sequence[Any]) -> tuple[Any, Any]:
    """(floor, previous marker) from :data:`CHECK_SCRIPT`'s reply, ``None`` for a missing one."""
    floor, previous = reply
    return floor or None, previous or None


def _replies(replies: Sequence[Any]) -> tuple[Any, Any]:
    floor, previous = replies
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return floor, previous


def _one_node(info: Mapping[str, Any]) -> Mapping[str, Any]:
    """A cluster client may key a node's INFO by node name; the fields themselves either way."""
    if "uptime_in_seconds" not in info and len(info) == 1:
        (only,) = info.values()
        if isinstance(only, Mapping):
            return only
    return info


class _Floors:
    """What both stores share: their start, and the floor proposed for a bucket that has none."""

    def __init__(self, clock: Clock) -> None:
        self.opened_ns = clock()
        """This store's start: the floor it sets is never earlier."""
        self._warned = False

    def _proposal(self, info: Mapping[str, Any] | ResponseError) -> int:
        server_start = None if isinstance(info, ResponseError) else server_start_ns(_one_node(info))
        if server_start is None and not self._warned:
            self._warned = True
            log.warning("Redis does not say when it started (INFO server: %s); the replay store's floor "
                        "is the miner's start, so a restart of Redis alone does not refuse the requests "
                        "captured before it", info if isinstance(info, ResponseError) else "no uptime")
        return opening_floor_ns(server_start, self.opened_ns)


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


class RedisNonceStore(_Floors):
    """Asynchronous store for :func:`inference_subnet.protocol.btauth.verify_async`.

    One round trip per check (two when the floor of the nonce's bucket has to be set); with a
    :class:`~inference_subnet.store.coalescing.Coalescer` the checks of concurrent requests share it.
    ``clock`` is the store's start (and a test's hook).
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
        clock: Clock = time.time_ns,
    ) -> None:
        self._client = client
        self._keys = keys
        self._coalescer = coalescer
        self.retention = _retention(max_age, allowed_skew, retention)
        self._ttl_ms = int(self.retention * 1000)
        self._script: Any = None
        """:data:`CHECK_SCRIPT` registered with the client, on the first check."""
        self._count_script: Any = None
        super().__init__(clock)

    async def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """True (and recorded) the first time a (hotkey, nonce) pair is seen, unless the nonce is older
        than its store's floor; False for a replay, or a nonce the store cannot vouch for."""
        nonce_key, floor_key = self._keys.nonce_keys(hotkey_ss58, nonce_ns)
        token = secrets.token_hex(8)
        keys, args = (nonce_key, floor_key), (token, self._ttl_ms)
        if self._script is None:
            self._script = self._client.register_script(CHECK_SCRIPT)
        if self._coalescer is not None:
            reply = await self._coalescer.script(self._script, keys, args)
        else:
            reply = await self._script(keys=keys, args=args)
        floor, previous = script_replies(reply)
        if not is_first_use(previous, token):
            return False
        if floor is None:
            floor = await self._open_floor(floor_key)
        return is_fresh(nonce_ns, int(floor), previous, token)

    async def check_and_count(
        self, hotkey_ss58: str, nonce_ns: int, counter_keys: Sequence[str], counter_args: Sequence[Any]
    ) -> tuple[bool, tuple[int, Any, int, int] | None]:
        """:meth:`check_and_store`, and for a fresh nonce the miner's admission decision (the quota's
        ``Charge``: its keys and arguments) in the same round trip: (fresh, (mode, reason, total, wait in ms)), or
        (fresh, ``None``) when it was not decided, which for a fresh nonce means the caller decides it
        itself (a bucket without a floor, a cluster)."""
        if isinstance(self._client, RedisCluster):
            return await self.check_and_store(hotkey_ss58, nonce_ns), None
        nonce_key, floor_key = self._keys.nonce_keys(hotkey_ss58, nonce_ns)
        token = secrets.token_hex(8)
        keys = (nonce_key, floor_key, *counter_keys)
        args = (token, self._ttl_ms, str(nonce_ns), *counter_args)
        if self._count_script is None:
            self._count_script = self._client.register_script(COUNT_SCRIPT)
        if self._coalescer is not None:
            reply = await self._coalescer.script(self._count_script, keys, args)
        else:
            reply = await self._count_script(keys=keys, args=args)
        floor, previous = script_replies(reply[:2])
        if not is_first_use(previous, token):
            return False, None
        charged, reason, count, wait = int(reply[2]), reply[3], int(reply[4]), int(reply[5])
        if floor is None:
            floor = await self._open_floor(floor_key)
            return is_fresh(nonce_ns, int(floor), previous, token), None
        if not is_fresh(nonce_ns, int(floor), previous, token):
            return False, None
        if charged < 0:  # the script did not see it fresh where this check does: charge it apart
            return True, None
        return True, (charged, reason, count, wait)

    async def _open_floor(self, floor_key: str) -> int:
        """Set the floor of a bucket that has none (a new or restarted Redis); the floor in force after."""
        info: Mapping[str, Any] | ResponseError
        try:
            if isinstance(self._client, RedisCluster):  # the INFO of the node that holds this bucket
                node = self._client.get_node_from_key(floor_key)
                info = await self._client.info("server", target_nodes=node)
            else:
                info = await self._client.info("server")
        except ResponseError as exc:  # INFO renamed away or denied by an ACL
            info = exc
        proposal = self._proposal(info)
        existing = await self._client.set(floor_key, proposal, nx=True, get=True)  # another check may win
        return proposal if existing is None else int(existing)


class SyncRedisNonceStore(_Floors):
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
        clock: Clock = time.time_ns,
    ) -> None:
        self._client = client
        self._keys = keys
        self.retention = _retention(max_age, allowed_skew, retention)
        self._ttl_ms = int(self.retention * 1000)
        super().__init__(clock)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """:meth:`RedisNonceStore.check_and_store`, same keys, same floor rule."""
        floor_key = self._keys.nonce_floor(hotkey_ss58, nonce_ns)
        token = secrets.token_hex(8)
        pipe = self._client.pipeline(transaction=False)
        for args, options in check_commands(self._keys.nonce(hotkey_ss58, nonce_ns), floor_key, token,
                                            self._ttl_ms):
            pipe.execute_command(*args, **options)
        floor, previous = _replies(pipe.execute(raise_on_error=False))
        if not is_first_use(previous, token):
            return False
        if floor is None:
            floor = self._open_floor(floor_key)
        return is_fresh(nonce_ns, int(floor), previous, token)

    def _open_floor(self, floor_key: str) -> int:
        info: Mapping[str, Any] | ResponseError
        try:
            if isinstance(self._client, redis.RedisCluster):
                info = self._client.info("server", target_nodes=self._client.get_node_from_key(floor_key))
            else:
                info = self._client.info("server")
        except ResponseError as exc:
            info = exc
        proposal = self._proposal(info)
        existing = self._client.set(floor_key, proposal, nx=True, get=True)
        return proposal if existing is None else int(existing)
