"""What one HTTP server process holds for strangers, resolved once from ``settings.http``.

Kept apart from the protocol so the numbers are plain data: pickled with uvicorn's config into worker
processes, and checked by tests without a socket.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from inference_subnet.settings import HttpSettings

log = logging.getLogger(__name__)

RESERVED_FD_SHARE = 4
"""One file descriptor in this many is kept for the process's own sockets and files (Redis pool, outbound
HTTP, logs): a server that lets clients take every descriptor cannot reach Redis any more."""
MIN_RESERVED_FDS = 64


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits :class:`~inference_subnet.serving.protocol.BoundedHttpToolsProtocol` enforces: the
    ``[http]`` settings (their one source, defaults included) with the connection cap resolved."""

    max_header_bytes: int
    max_header_count: int
    request_read_timeout: float
    keep_alive_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, http: HttpSettings) -> HttpLimits:
        """The configured limits, with ``max_connections`` lowered to what the descriptor limit allows."""
        return cls(
            max_header_bytes=http.max_header_bytes,
            max_header_count=http.max_header_count,
            request_read_timeout=http.request_read_timeout,
            keep_alive_timeout=http.keep_alive_timeout,
            max_connections=connection_cap(http.max_connections),
        )


def usable_connections(soft_fd_limit: int, requested: int) -> int:
    """Connections a process with ``soft_fd_limit`` descriptors can accept and still open its own sockets."""
    if soft_fd_limit == resource.RLIM_INFINITY:
        return requested
    reserve = max(MIN_RESERVED_FDS, soft_fd_limit // RESERVED_FD_SHARE)
    return max(1, min(requested, soft_fd_limit - reserve))


def connection_cap(requested: int) -> int:
    """``requested`` connections, or fewer when the descriptor limit cannot hold them.

    The soft ``RLIMIT_NOFILE`` is raised first, as far as the hard limit allows (what a server should ask
    for anyway: the stock soft limit of 1024 is a relic of ``select``); worker processes inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + max(MIN_RESERVED_FDS, -(-requested // (RESERVED_FD_SHARE - 1)))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                log.debug("could not raise the file descriptor limit to %d: %s", target, exc)
    cap = usable_connections(soft, requested)
    if cap < requested:
        log.warning("http.max_connections lowered from %d to %d: this process may open only %d files",
                    requested, cap, soft)
    return cap
