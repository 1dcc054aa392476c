"""Every Redis key the framework uses, and nothing else.

Layout: ``isn:{subnet}:{netuid}:{role}:...`` where ``role`` is the validator's hotkey (or ``miner:HOTKEY`` on
a miner), so several subnets and validators can share one Redis. A miner's identity in every key is its
hotkey *with its registration block* (``HOTKEY@BLOCK``): a uid taken over by a new hotkey, or a hotkey that
re-registers, starts from nothing.

Cluster safety: keys that one Lua script, ``MULTI`` transaction or multi-key command touches together carry
the same hash tag (``{...}``), so the same code runs on a single Redis and on Redis Cluster: ``{m:IDENTITY}``
for a validator's quota and score state of a miner, ``{mq:ROLE}`` for a miner's own quota counters (every
caller's and its total, decided together), ``{k:KEY_ID}`` for an API key's limits, ``{i:INSTANCE}`` for one
process's heartbeats, ``{n:BUCKET}`` for a bucket of replay markers and its floor (256 buckets, chosen by a
hash of sender and nonce, so one validator's markers still spread). Keys only ever used alone carry no tag,
so they spread over the cluster's shards (a tag per validator on every nonce would send all of a miner's
replay checks to one shard). The subnet name and the role may not contain braces: a brace before the tag
would make the hash tag start there instead.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

NONCE_BUCKETS = 256
"""Buckets of btauth/1 replay markers; each bucket is one hash slot, with its own floor."""


def nonce_bucket(sender_hotkey: str, nonce_ns: int) -> int:
    """The bucket of one (sender, nonce) pair: a hash of both, since a nonce's low digits may be constant
    (a clock with microsecond resolution) and one sender's nonces should not share a bucket."""
    return zlib.crc32(f"{sender_hotkey}:{nonce_ns}".encode()) % NONCE_BUCKETS


def miner_identity(hotkey: str, registration_block: int) -> str:
    """The identity under which a miner's scores and quotas are kept."""
    return f"{hotkey}@{registration_block}"


def split_identity(identity: str) -> tuple[str, int]:
    """Inverse of :func:`miner_identity`."""
    hotkey, _, block = identity.rpartition("@")
    return hotkey, int(block)


@dataclass(frozen=True)
class Keys:
    """Key names for one subnet and one role (a validator hotkey, or a miner's)."""

    subnet: str
    netuid: int
    role: str

    def __post_init__(self) -> None:
        for name in ("subnet", "role"):
            if any(brace in getattr(self, name) for brace in "{}"):
                raise ValueError(
                    f"the {name} in Redis keys may not contain '{{' or '}}' (it would move the hash tag "
                    f"that keeps related keys in one cluster slot): {getattr(self, name)!r}"
                )

    @property
    def prefix(self) -> str:
        return f"isn:{self.subnet}:{self.netuid}:{self.role}"

    # -- chain state (written by the sidecar, read by every service) --------------------------------
    def metagraph(self) -> str:
        """JSON snapshot of the metagraph (shared by every role of the subnet)."""
        return f"isn:{self.subnet}:{self.netuid}:metagraph"

    def metagraph_updates(self) -> str:
        """Pub/sub channel announcing a new metagraph block."""
        return f"isn:{self.subnet}:{self.netuid}:metagraph:updates"

    def metagraph_synced(self) -> str:
        """Unix time (float) of the sidecar's last successful read of the metagraph from the chain."""
        return f"isn:{self.subnet}:{self.netuid}:metagraph:synced"

    # -- transport -----------------------------------------------------------------------------------
    def nonce(self, sender_hotkey: str, nonce_ns: int) -> str:
        """btauth/1 replay marker; SET NX with expiry, shared by every worker of a miner. Tagged only with
        its bucket (:func:`nonce_bucket`), so the markers of one busy validator still spread over the
        shards, while each shares a slot with the floor of its bucket (:meth:`nonce_floor`)."""
        return f"{self.prefix}:nonce:{{n:{nonce_bucket(sender_hotkey, nonce_ns)}}}:{sender_hotkey}:{nonce_ns}"

    def nonce_keys(self, sender_hotkey: str, nonce_ns: int) -> tuple[str, str]:
        """(:meth:`nonce`, :meth:`nonce_floor`) of one nonce, its bucket hashed once: both on every check."""
        prefix, bucket = self.prefix, nonce_bucket(sender_hotkey, nonce_ns)
        return (f"{prefix}:nonce:{{n:{bucket}}}:{sender_hotkey}:{nonce_ns}", f"{prefix}:nonce-floor:{{n:{bucket}}}")

    def nonce_floor(self, sender_hotkey: str, nonce_ns: int) -> str:
        """Start (ns since the epoch) of the replay store that holds this nonce's marker: a nonce older than
        it is refused, since the markers from before it are gone. Set once (``SET NX``, no expiry) by the
        first check that finds it missing. One per bucket, in the bucket's slot, so that on a cluster the
        restart of one shard, which loses that shard's markers, also loses the floors that guard them."""
        return f"{self.prefix}:nonce-floor:{{n:{nonce_bucket(sender_hotkey, nonce_ns)}}}"

    # -- quotas (managing) ---------------------------------------------------------------------------
    def capacity(self, identity: str) -> str:
        """Hash task -> declared capacity per epoch of one miner."""
        return f"{self.prefix}:capacity:{{m:{identity}}}"

    def quota_used(self, identity: str, task: str, epoch: int) -> str:
        """Hash with fields ``total`` and ``synthetic``: this validator's use of one miner in one epoch."""
        return f"{self.prefix}:quota:{{m:{identity}}}:{task}:{epoch}"

    def caller_quota_used(self, caller_hotkey: str, task: str, epoch: int) -> str:
        """Miner side: hash (``g`` guaranteed, ``b`` borrowed, ``tat`` of the guaranteed pace) of one
        validator's requests to this miner in one epoch. In the miner's own slot (``{mq:ROLE}``) with
        :meth:`miner_quota_total`, so one script decides with both, also on Redis Cluster."""
        return f"{self.prefix}:served:{{mq:{self.role}}}:{caller_hotkey}:{task}:{epoch}"

    def miner_quota_total(self, task: str, epoch: int) -> str:
        """Miner side: hash (``total`` admitted from every validator, ``tat`` of the miner-wide pace) of one
        task in one epoch."""
        return f"{self.prefix}:served-total:{{mq:{self.role}}}:{task}:{epoch}"

    # -- scores (managing) ---------------------------------------------------------------------------
    def score_history(self, identity: str, task: str) -> str:
        """List of JSON samples, newest first, capped at the history size."""
        return f"{self.prefix}:scores:{{m:{identity}}}:{task}"

    def scored_count(self, identity: str, task: str, period: int) -> str:
        """Dropout counter: samples scored for one miner and task in one period."""
        return f"{self.prefix}:scored:{{m:{identity}}}:{task}:{period}"

    def dropped_count(self, identity: str, task: str, period: int) -> str:
        """Dropout counter: samples dropped (not scored) for one miner and task in one period."""
        return f"{self.prefix}:dropped:{{m:{identity}}}:{task}:{period}"

    def served_volume(self, identity: str, task: str, epoch: int) -> str:
        """Hash with fields ``organic`` and ``synthetic``: answers one miner served OK to this validator in one
        quota epoch (its verified volume, read by the weight setter); expires after the next epoch."""
        return f"{self.prefix}:volume:{{m:{identity}}}:{task}:{epoch}"

    def job_applied(self, identity: str, job_id: str) -> str:
        """Idempotency marker: this scoring job's result was already written to the history."""
        return f"{self.prefix}:applied:{{m:{identity}}}:{job_id}"

    def miners_index(self) -> str:
        """Set of miner identities that have score or quota state (for pruning)."""
        return f"{self.prefix}:miners"

    def quota_share(self, identity: str) -> str:
        """Hash task -> this validator's share of one miner's capacity; ``TASK:syn`` -> synthetic limit."""
        return f"{self.prefix}:share:{{m:{identity}}}"

    def miner_tasks(self, identity: str) -> str:
        """Set of the tasks one miner has quota or score state for (so pruning finds every key)."""
        return f"{self.prefix}:tasks:{{m:{identity}}}"

    # -- scoring queue -------------------------------------------------------------------------------
    def scoring_stream(self) -> str:
        """Stream of scoring jobs consumed by the scoring workers' group."""
        return f"{self.prefix}:scoring:jobs"

    def scoring_dead(self) -> str:
        """Stream of jobs set aside after too many failed attempts."""
        return f"{self.prefix}:scoring:dead"

    scoring_group: str = "scorers"

    # -- synthesizing --------------------------------------------------------------------------------
    def organic_samples(self, task: str) -> str:
        """Capped list of recorded organic requests for reuse as synthetic challenges."""
        return f"{self.prefix}:organic:{task}"

    def challenge_secret(self) -> str:
        """The key every process of this validator issues and opens challenge ids under (see
        :mod:`inference_subnet.protocol.challenge`), drawn once by whichever process starts first."""
        return f"{self.prefix}:challenge:secret"

    # -- canaries -----------------------------------------------------------------------------------
    def canary(self, task: str, digest: str) -> str:
        """The identity a live fresh synthetic challenge with this request digest was sent to (expires after
        ``validator.canary_ttl_seconds``): the gateway refuses an organic request with the same digest."""
        return f"{self.prefix}:canary:{task}:{digest}"

    def canary_caught(self, identity: str) -> str:
        """Set while a miner caught by a canary is benched (expires after ``validator.canary_bench_seconds``);
        the value is the task whose challenge it forwarded."""
        return f"{self.prefix}:canary:caught:{identity}"

    # -- weights -------------------------------------------------------------------------------------
    def weight_attempts(self) -> str:
        """Capped list of JSON records of every weight-set attempt, newest first."""
        return f"{self.prefix}:weights:attempts"

    def last_weights(self) -> str:
        """JSON of the last weights successfully submitted."""
        return f"{self.prefix}:weights:last"

    # -- gateway -------------------------------------------------------------------------------------
    def api_key_tat(self, key_id: str) -> str:
        """One API key's theoretical arrival time (GCRA), in milliseconds of the Redis server's clock."""
        return f"{self.prefix}:apikey:{{k:{key_id}}}:tat"

    def api_key_inflight(self, key_id: str) -> str:
        """Requests of one API key in flight."""
        return f"{self.prefix}:apikey:{{k:{key_id}}}:inflight"

    def gateway_traffic(self, minute: int) -> str:
        """Hash of the gateway's answers in one minute (every gateway process adds to it): ``s:STATUS`` per
        HTTP status, ``k:KEY_ID:STATUS`` per API key (``-`` for none). Short-lived (see the gateway's
        ``traffic`` module); used alone, so untagged."""
        return f"{self.prefix}:gateway:traffic:{minute}"

    def miner_latency(self, identity: str) -> str:
        """Recent organic-serving stats of one miner used by routing (hash)."""
        return f"{self.prefix}:routing:{{m:{identity}}}"

    # -- services ------------------------------------------------------------------------------------
    def heartbeat(self, service: str, instance: str) -> str:
        """Liveness of one service in one process (expires when it stops beating). Tagged by process: a
        stopping process deletes all of its heartbeats in one single-slot ``DEL``."""
        return f"{self.prefix}:heartbeat:{{i:{instance}}}:{service}"

    def service_beats(self) -> str:
        """Sorted set of ``SERVICE/INSTANCE`` scored by the time of its last heartbeat: which services and
        gateways run, and which went silent (members silent for an hour are dropped). Used alone."""
        return f"{self.prefix}:services"
