"""Shared fixtures: a real Redis (embedded Valkey, or ``REDIS_URL``) and a real subtensor runtime.

``REDIS_URL`` may name a Redis Cluster (``redis+cluster://...``); ``ISN_TEST_REDIS_CLUSTER=1`` starts a local
3-primary cluster for the session instead (and exports its URL as ``REDIS_URL`` for the processes tests
start), so the Redis-backed suites run unchanged against a sharded Redis.

The chain is ``ISN_TEST_CHAIN_URL`` when set; otherwise the offline runtime in ``../shared/chain`` is started
on a free port for the session and stopped at the end. Tests never skip for a missing dependency: CI
installs everything.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from inference_subnet.localnet.ports import free_port  # noqa: F401 - tests import it from here
from inference_subnet.store.keys import Keys
from inference_subnet.store.redis import RedisClient, connect, is_cluster_url, resolve_url

REPO = Path(__file__).resolve().parents[1]
SHARED_CHAIN = REPO.parent / "shared" / "chain"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: a local cluster under ``ISN_TEST_REDIS_CLUSTER=1``, else ``REDIS_URL`` when set, else
    this process's embedded Valkey."""
    if os.environ.get("ISN_TEST_REDIS_CLUSTER", "") not in ("", "0"):
        from inference_subnet.store.cluster import LocalCluster

        with LocalCluster(primaries=3) as cluster:
            previous = os.environ.get("REDIS_URL")
            os.environ["REDIS_URL"] = cluster.url
            try:
                yield cluster.url
            finally:
                if previous is None:
                    os.environ.pop("REDIS_URL", None)
                else:
                    os.environ["REDIS_URL"] = previous
        return
    yield resolve_url(os.environ.get("REDIS_URL"))


@pytest.fixture(scope="session")
def cluster_url(redis_url: str) -> Iterator[str]:
    """A real Redis Cluster: the session's own when ``redis_url`` names one, else a local 3-primary one
    started for the session (tests that compare one node with a cluster, or need a cluster in every pass)."""
    if is_cluster_url(redis_url):
        yield redis_url
        return
    from inference_subnet.store.cluster import LocalCluster

    with LocalCluster(primaries=3) as cluster:
        yield cluster.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of ``redis_url``: a plain client, or a cluster client for a ``redis+cluster://`` URL."""
    client = connect(redis_url)
    if isinstance(client, RedisCluster):
        # Learn the slot map now: a cluster pub/sub made before any command finds an empty map.
        await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    """Key names unique to one test, so tests never see each other's state on a shared Redis."""
    return Keys(subnet=f"t{uuid.uuid4().hex[:10]}", netuid=1, role="validator")


@pytest.fixture(scope="session")
def chain_url() -> Iterator[str]:
    """A real subtensor runtime (spec 293) on 127.0.0.1."""
    if url := os.environ.get("ISN_TEST_CHAIN_URL"):
        yield url
        return
    start = SHARED_CHAIN / "start.sh"
    if not start.is_file():
        raise RuntimeError(f"no chain: set ISN_TEST_CHAIN_URL or provide {start}")
    port = free_port()
    out = subprocess.run(["bash", str(start), str(port)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"chain did not start: {out.stderr[-2000:]}")
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SHARED_CHAIN / "stop.sh"), str(port)], timeout=60)


BACKEND_FIXTURES = frozenset({"redis_url", "postgres_database", "db_url"})
"""Fixtures through which a test reaches Redis or SQL: what a pass against other backends needs to rerun."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``ISN_TEST_BACKEND_PASS=1`` (the suite's later passes against the machine's Redis and Postgres,
    or a cluster) keep only the tests that touch a backend: the rest would run unchanged a second time."""
    if os.environ.get("ISN_TEST_BACKEND_PASS", "") in ("", "0"):
        return
    kept = [item for item in items if BACKEND_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if deselected := [item for item in items if item not in kept]:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
