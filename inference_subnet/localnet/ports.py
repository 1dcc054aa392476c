"""Ports for processes that start later (miners, gateways, test servers) on one machine."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A free port for a process started later, drawn below the kernel's ephemeral range: a port from
    that range can be taken by any outgoing connection (a Redis or HTTP client) before the process binds."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port below the ephemeral range")
