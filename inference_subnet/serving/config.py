"""The one place that builds a uvicorn config: every server the framework starts gets the same limits."""

from __future__ import annotations

from typing import Any

import uvicorn

from inference_subnet.serving.limits import HttpLimits
from inference_subnet.serving.protocol import BoundedHttpToolsProtocol
from inference_subnet.settings import HttpSettings


class ServerConfig(uvicorn.Config):
    """A uvicorn config that carries :class:`HttpLimits` to the protocol of every connection.

    A module-level class with plain-data attributes, so it pickles into ``--workers`` processes as is."""

    def __init__(self, app: Any, *, http_limits: HttpLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.http_limits = http_limits


def server_config(app: Any, http: HttpSettings, **options: Any) -> ServerConfig:
    """A uvicorn config for ``app`` (an ASGI app or an import string) bounded by ``http``.

    ``options`` are uvicorn's own (host, port, workers, log_level, lifespan, ...). The HTTP protocol and the
    keep-alive timeout are set here; WebSocket upgrades are off unless ``ws`` is given, since no server of
    the framework serves WebSockets and the upgrade path would bypass the head limit.
    """
    for reserved in ("http", "timeout_keep_alive", "h11_max_incomplete_event_size"):
        if reserved in options:
            raise TypeError(f"server_config sets {reserved!r} itself, from settings.http")
    options.setdefault("ws", "none")
    limits = HttpLimits.from_settings(http)
    return ServerConfig(
        app,
        http_limits=limits,
        http=BoundedHttpToolsProtocol,
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **options,
    )
