"""Which miners have managing state in Redis, and forgetting the ones that left the subnet.

Scores and quotas are keyed by identity (hotkey with registration block), so a new hotkey on a freed uid
starts from zero by construction; pruning only frees the memory of identities that are gone. Per-epoch and
per-period counters expire on their own; what lives without a TTL (capacity, shares, score histories, the
task set) is listed here and deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient

BATCH = 256
"""Identities handled per pipeline: bounds the size of one round trip."""


async def track(redis: RedisClient, keys: Keys, identity: str, tasks: Iterable[str]) -> None:
    """Note that ``identity`` has state for ``tasks`` (index first, so a prune never misses it)."""
    tasks = list(tasks)
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(keys.miners_index(), identity)
    if tasks:
        pipe.sadd(keys.miner_tasks(identity), *tasks)
    await pipe.execute()


async def known_identities(redis: RedisClient, keys: Keys) -> set[str]:
    return {m.decode() for m in await redis.smembers(keys.miners_index())}


async def prune_identities(redis: RedisClient, keys: Keys, live: Collection[str]) -> list[str]:
    """Delete the state of every tracked identity not in ``live``; returns the identities pruned.

    The index entry goes first: a record racing with the prune re-adds it, so the next prune sees it.
    Each delete touches the keys of one identity (one hash slot), so this works unchanged on Redis Cluster.
    """
    live_set = set(live)
    stale = sorted(i for i in await known_identities(redis, keys) if i not in live_set)
    for start in range(0, len(stale), BATCH):
        batch = stale[start : start + BATCH]
        await redis.srem(keys.miners_index(), *batch)
        pipe = redis.pipeline(transaction=False)
        for identity in batch:
            pipe.smembers(keys.miner_tasks(identity))
        task_sets = await pipe.execute()
        pipe = redis.pipeline(transaction=False)
        for identity, tasks in zip(batch, task_sets):
            owned = [keys.capacity(identity), keys.quota_share(identity), keys.miner_tasks(identity)]
            owned += [keys.score_history(identity, task) for task in sorted(t.decode() for t in tasks)]
            # One UNLINK of keys that share the identity's hash slot; sent raw because a cluster
            # pipeline's ``unlink`` method is a coroutine that queues nothing.
            pipe.execute_command("UNLINK", *owned)
        await pipe.execute()
    return stale
