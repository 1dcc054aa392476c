"""Redis Cluster: every key set the framework uses together lives in one hash slot, cluster URLs parse, and
the framework's batched scripts, prune and resets work on a real 3-primary cluster (``cluster_url``)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError

from inference_subnet.chain.types import Metagraph, Neuron
from inference_subnet.settings import QuotaSettings, ScoringSettings
from inference_subnet.store.cluster import SLOTS, LocalCluster, split_slots
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import (
    RedisClient,
    connect,
    evalsha_many,
    flush_all,
    is_cluster_url,
    parse_cluster_url,
    redact,
)
from inference_subnet.validator.managing.quotas import QuotaBook
from inference_subnet.validator.managing.score_math import Sample
from inference_subnet.validator.managing.scores import ScoreBook

LUA = files("inference_subnet.store").joinpath("lua")
ME = "validator-me"


def used_together(
    k: Keys,
    *,
    identity: str,
    task: str,
    epoch: int,
    period: int,
    job_id: str,
    key_id: str,
    instance: str,
    services: list[str],
    others: list[str],
) -> dict[str, list[str]]:
    """Every set of keys one script, transaction or multi-key command touches, named by where it is used.
    A new script or multi-key command adds its key set here. ``others`` are further hotkeys: validators
    beside ``k``'s, or miners, whose keys some commands read together with ``k``'s."""
    validators = [k, *(dataclasses.replace(k, role=role) for role in others)]
    miners = [dataclasses.replace(k, role=f"miner:{hotkey}") for hotkey in others]
    caller = k.role
    return {
        "consume_quota.lua": [k.quota_share(identity), k.quota_used(identity, task, epoch)],
        # the miner's decision: the caller's counters and the miner's own, one miner's tag
        "miner_admit.lua": [k.caller_quota_used(caller, task, epoch), k.miner_quota_total(task, epoch)],
        "admit_scored.lua": [k.scored_count(identity, task, period), k.dropped_count(identity, task, period)],
        "record_sample.lua": [k.job_applied(identity, job_id), k.score_history(identity, task)],
        "apikey_acquire.lua": [k.api_key_tat(key_id), k.api_key_inflight(key_id)],
        "QuotaBook.set_capacity MULTI": [k.capacity(identity), k.quota_share(identity)],
        "ScoreBook.dropout_counts MGET": [
            k.scored_count(identity, task, period),
            k.dropped_count(identity, task, period),
        ],
        "state.prune_identities UNLINK": [
            k.capacity(identity),
            k.quota_share(identity),
            k.miner_tasks(identity),
            k.score_history(identity, task),
        ],
        "Service.stop DEL": [k.heartbeat(service, instance) for service in services],
        # simulate: every validator's counters on one miner, and one validator's guard counter on every miner
        "simulate forget MGET/UNLINK by miner": [
            key
            for v in validators
            for key in (
                v.quota_used(identity, task, epoch),
                v.scored_count(identity, task, period),
                v.dropped_count(identity, task, period),
            )
        ],
        "simulate forget UNLINK by miner's own counters": [
            k.miner_quota_total(task, epoch), *(k.caller_quota_used(v, task, epoch) for v in others)
        ],
    }


def sample_groups(**overrides: object) -> dict[str, list[str]]:
    args: dict[str, object] = {
        "identity": "5Fminer@12",
        "task": "arithmetic",
        "epoch": 7,
        "period": 3,
        "job_id": "j1",
        "key_id": "42",
        "instance": "host-1-ab",
        "services": ["sidecar", "scoring", "orchestrator"],
        "others": ["5Fother", "5Fminer"],
    }
    args.update(overrides)
    keys = args.pop("keys", Keys("isn", 1, "5Fvalidator"))
    return used_together(keys, **args)  # type: ignore[arg-type]


no_braces = st.text(min_size=1, max_size=20).filter(lambda s: "{" not in s and "}" not in s)


@hsettings(max_examples=300, deadline=None)
@given(
    subnet=no_braces,
    role=no_braces,
    identity=st.text(max_size=60),
    task=st.text(max_size=30),
    epoch=st.integers(0, 2**40),
    period=st.integers(0, 2**40),
    job_id=st.text(max_size=40),
    key_id=st.text(max_size=20),
    instance=st.text(max_size=40),
    services=st.lists(st.text(max_size=20), min_size=1, max_size=8),
    others=st.lists(no_braces, min_size=1, max_size=4),
)
def test_every_key_set_used_together_shares_one_slot(
    subnet: str,
    role: str,
    identity: str,
    task: str,
    epoch: int,
    period: int,
    job_id: str,
    key_id: str,
    instance: str,
    services: list[str],
    others: list[str],
) -> None:
    keys = Keys(subnet, 1, role)
    groups = used_together(
        keys,
        identity=identity,
        task=task,
        epoch=epoch,
        period=period,
        job_id=job_id,
        key_id=key_id,
        instance=instance,
        services=services,
        others=others,
    )
    for where, group in groups.items():
        slots = {key_slot(key.encode()) for key in group}
        assert len(slots) == 1, f"{where}: keys {group} span slots {slots}"


def test_every_script_is_listed_with_exactly_the_keys_it_declares() -> None:
    groups = sample_groups()
    scripts = sorted(p.name for p in LUA.iterdir() if p.name.endswith(".lua"))
    assert scripts and set(scripts) <= set(groups), (
        f"scripts without a key set above: {set(scripts) - set(groups)}"
    )
    for name in scripts:
        source = LUA.joinpath(name).read_text()
        # (a script written as a function of a key offset, to run inside another, numbers them KO + n)
        declared = {int(n) for n in re.findall(r"KEYS\[(?:KO \+ )?(\d+)\]", source)}
        assert declared == set(range(1, len(groups[name]) + 1)), f"{name} uses KEYS {sorted(declared)}"


def test_different_miners_and_api_keys_spread_over_slots() -> None:
    """The tags are per miner and per key, not per validator: the load of many miners is spread."""
    keys = Keys("isn", 1, "5Fvalidator")
    assert len({key_slot(keys.quota_used(f"m{i}@1", "t", 1).encode()) for i in range(64)}) > 32
    assert len({key_slot(keys.api_key_inflight(str(i)).encode()) for i in range(64)}) > 32
    # Nonces are used alone: untagged, one validator's replay markers land on many slots.
    assert len({key_slot(keys.nonce("5Fsender", n).encode()) for n in range(64)}) > 32


def test_braces_in_the_prefix_are_refused() -> None:
    """A brace in the subnet or role would become the hash tag of every key: related keys would split."""
    for bad in ({"subnet": "a{b"}, {"role": "x}y"}):
        with pytest.raises(ValueError, match="may not contain"):
            Keys(**{"subnet": "isn", "netuid": 1, "role": "v", **bad})  # type: ignore[arg-type]


def test_slot_ranges_cover_every_slot_once() -> None:
    for primaries in (1, 2, 3, 5, 7):
        ranges = split_slots(primaries)
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    with pytest.raises(ValueError, match="at least one primary"):
        split_slots(0)


# -- cluster URLs ------------------------------------------------------------------------------------
def test_cluster_urls_parse_with_every_node_and_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001, redis-2:7002/0")
    assert parsed.nodes == (("127.0.0.1", 7000), ("127.0.0.1", 7001), ("redis-2", 7002))
    assert parsed.username is None and parsed.password is None and not parsed.ssl
    secure = parse_cluster_url("rediss+cluster://app:s%40cret@h1:6380")
    assert secure.nodes == (("h1", 6380),) and secure.ssl
    assert (secure.username, secure.password) == ("app", "s@cret")
    assert parse_cluster_url("redis+cluster://:pw@h:1").password == "pw"
    assert is_cluster_url("REDIS+CLUSTER://h:1") and not is_cluster_url("redis://h:1/0")
    assert not is_cluster_url(None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://h:1/0", "not a cluster URL"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://h", "not HOST:PORT"),
        ("redis+cluster://h:1,:2", "not HOST:PORT"),
        ("redis+cluster://h:99999", "not HOST:PORT"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cluster_url(url)


def test_secrets_never_reach_the_message_or_the_log_form() -> None:
    with pytest.raises(ValueError) as info:
        parse_cluster_url("redis+cluster://u:topsecret@h:1/5")
    assert "topsecret" not in str(info.value)
    assert redact("redis+cluster://u:topsecret@h:1,h:2") == "redis+cluster://***@h:1,h:2"


async def test_connect_picks_the_client_by_url() -> None:
    cluster = connect("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert isinstance(cluster, RedisCluster)
    assert [(n.host, n.port) for n in cluster.startup_nodes] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    await cluster.aclose()
    plain = connect("redis://127.0.0.1:1/0")
    assert not isinstance(plain, RedisCluster)
    await plain.aclose()


# -- a real cluster ----------------------------------------------------------------------------------
@pytest.fixture
async def cluster(cluster_url: str):
    client = connect(cluster_url)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    yield client
    await client.aclose()


def metagraph(miners: list[str]) -> Metagraph:
    neurons = [
        Neuron(uid=0, hotkey=ME, coldkey="ck", stake=1000.0, validator_permit=True, registration_block=1)
    ]
    neurons += [
        Neuron(uid=i + 1, hotkey=hk, coldkey="ck", stake=0.0, validator_permit=False, registration_block=3)
        for i, hk in enumerate(miners)
    ]
    return Metagraph(netuid=1, block=10, neurons=tuple(neurons))


async def test_the_cluster_has_its_primaries_and_refuses_cross_slot_scripts(cluster: RedisCluster) -> None:
    """The suites run against a server that enforces the rule: a script over two slots is refused."""
    primaries = cluster.get_primaries()
    assert len(primaries) >= 3
    info = await cluster.cluster_info(target_nodes=RedisCluster.RANDOM)
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == SLOTS
    a, b = "isn:probe:{m:a}", "isn:probe:{m:b}"
    assert key_slot(a.encode()) != key_slot(b.encode())
    node = cluster.get_node_from_key(a)
    direct = aioredis.Redis(host=node.host, port=node.port)  # past the client's own check, to the server
    try:
        with pytest.raises(ClusterCrossSlotError, match="same slot"):  # the server's CROSSSLOT reply
            await direct.execute_command("EVAL", "return 1", 2, a, b)
    finally:
        await direct.aclose()


async def test_a_burst_of_first_commands_on_a_fresh_client_all_succeed(cluster_url: str, keys: Keys) -> None:
    """A service's first requests arrive together: before the client knows the slot map they used to be
    misrouted, and the refreshes they set off broke the connections of the others."""
    for round_ in range(10):
        client = connect(cluster_url)
        try:
            replies = await asyncio.gather(
                *(
                    client.set(f"{keys.prefix}:burst:{round_}:{i}", b"1", nx=True, px=60_000)
                    for i in range(100)
                ),
                return_exceptions=True,
            )
        finally:
            await client.aclose()
        assert replies == [True] * 100, {type(r).__name__ for r in replies if r is not True}


async def test_quotas_are_exact_for_miners_on_every_shard(cluster: RedisCluster, keys: Keys) -> None:
    miners = [f"m{i}" for i in range(12)]
    book = QuotaBook(cluster, keys, QuotaSettings(epoch_seconds=600, min_share=0.0, synthetic_fraction=0.5,
                                                  burst_seconds=600, borrow_ceiling=0.0))
    graph = metagraph(miners)
    await book.set_stakes(graph, ME)
    identities = [n.identity for n in graph.neurons if n.hotkey != ME]
    for identity in identities:
        assert await book.set_capacity(identity, {"arithmetic": 5}) == {"arithmetic": 5}
    nodes = {
        cluster.get_node_from_key(keys.quota_used(i, "arithmetic", book.epoch())).name for i in identities
    }
    assert len(nodes) >= 2, "the miners' quota keys should live on several primaries"
    granted = [0] * len(identities)
    for _ in range(8):  # 8 rounds against a share of 5: the last 3 are refused for every miner
        for i, ok in enumerate(await book.consume_many(identities, "arithmetic", "organic")):
            granted[i] += ok
    assert granted == [5] * len(identities)
    status = await book.status(identities, "arithmetic")
    assert {s.used_total for s in status.values()} == {5}


async def test_dropout_history_and_prune_on_the_cluster(cluster: RedisCluster, keys: Keys) -> None:
    import random

    book = ScoreBook(cluster, keys, ScoringSettings(max_scored_per_period=2, dropout_period_seconds=3600))
    identities = [f"m{i}@3" for i in range(10)]
    admitted = [0] * len(identities)
    for _ in range(4):
        for i, ok in enumerate(
            await book.admit_many(identities, "arithmetic", "synthetic", random.Random(1))
        ):
            admitted[i] += ok
    assert admitted == [2] * len(identities)  # the cap per miner, wherever its counters live
    assert await book.dropout_counts(identities[0], "arithmetic") == (2, 2)
    sample = Sample(score=1.0, kind="synthetic", latency=0.1, ok=True, ts=0.0)
    for identity in identities:
        assert await book.record(identity, "arithmetic", sample, "job-1")
        assert not await book.record(identity, "arithmetic", sample, "job-1")  # applied once
    kept = identities[:3]
    pruned = await book.prune(metagraph([i.split("@")[0] for i in kept]))
    assert sorted(pruned) == sorted(identities[3:])
    for identity in identities:
        assert len(await book.history(identity, "arithmetic")) == (1 if identity in kept else 0)


async def test_batched_scripts_survive_a_flushed_script_cache(
    cluster: RedisCluster, redis: RedisClient, keys: Keys
) -> None:
    """NOSCRIPT (a restarted or new node) on calls of a batch: the script is loaded, those calls rerun."""
    source = "return redis.call('INCR', KEYS[1])"
    for n, client in enumerate((cluster, redis)):
        script = client.register_script(source)
        calls = [([f"{keys.prefix}:incr{n}:{{m:{i}}}"], []) for i in range(9)]
        assert await evalsha_many(client, script, calls) == [1] * 9
        await client.script_flush()  # on a cluster: every primary
        assert await evalsha_many(client, script, calls) == [2] * 9  # each ran exactly once more
        assert await evalsha_many(client, script, []) == []


async def test_the_module_runs_a_cluster_until_terminated() -> None:
    """``python -m inference_subnet.store.cluster``: URL on stdout, a usable 2-primary cluster, clean stop."""
    child = subprocess.Popen(
        [sys.executable, "-m", "inference_subnet.store.cluster", "--primaries", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("redis+cluster://"), child.stderr.read() if child.poll() is not None else url
        nodes = parse_cluster_url(url).nodes
        assert len(nodes) == 2
        client = connect(url)
        try:
            names = [f"k{i}" for i in range(40)]
            for name in names:
                await client.set(name, b"1")
            assert len({client.get_node_from_key(n).name for n in names}) == 2
            await flush_all(client)  # every primary, not only one
            assert await client.dbsize(target_nodes=RedisCluster.PRIMARIES) == 0  # summed over primaries
        finally:
            await client.aclose()
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0


def test_local_cluster_flushes_and_leaves_nothing_behind() -> None:
    import redis

    with LocalCluster(primaries=2) as local:
        root = local._root
        assert root is not None and root.is_dir()
        sync = redis.RedisCluster(host="127.0.0.1", port=local.ports[0])
        for i in range(20):
            sync.set(f"x{i}", i)
        local.flush()
        assert sync.dbsize(target_nodes=redis.RedisCluster.PRIMARIES) == 0
        sync.close()
        ports = list(local.ports)
    assert not Path(root).exists()
    for port in ports:
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_an_unknown_primary_count_is_a_cli_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "inference_subnet.store.cluster", "--primaries", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 2 and "--primaries must be at least 1" in out.stderr
