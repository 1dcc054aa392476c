"""uvicorn's httptools protocol with the limits a server facing strangers needs.

uvicorn alone reads a request head of any size (the parser's callbacks grow one buffer per header, so a head
of tens of megabytes stalls the event loop for seconds), waits for a request forever, and accepts
connections until the process runs out of file descriptors. This subclass adds, per connection:

* a head limit: head bytes are counted as they arrive and the parser is never fed past
  ``max_header_bytes``; a head that does not end by then, or has more than ``max_header_count`` lines,
  is answered ``431`` (a short JSON reason) and the connection closed;
* a read deadline: from the moment the connection opens, or the server finishes its previous answer,
  the client has ``request_read_timeout`` seconds to send one complete request, head and body; a client
  that trickles bytes (slowloris) or sends nothing is closed then (``408`` when a head was started);
* a connection cap: beyond ``max_connections`` open connections of the process a new one is answered
  ``503`` and closed at once, so descriptors stay free for Redis and for callers already connected.

An error answer is followed by a short lingering close (write side shut, further input read and dropped
for at most ``LINGER_SECONDS`` or ``LINGER_BYTES``), so the client reads the answer instead of a reset.
Everything else, including keep-alive and pipelining, is uvicorn's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from asyncio import TimerHandle
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from inference_subnet.serving.limits import HttpLimits
from inference_subnet.settings import HttpSettings

log = logging.getLogger(__name__)

LINGER_SECONDS = 1.0
"""How long a refused connection's input is still read (and dropped) so the answer reaches the client."""
LINGER_BYTES = 1 << 20
"""How much of a refused connection's input is read and dropped before closing regardless."""
REFUSAL_LOG_INTERVAL = 60.0
"""At most one warning per this many seconds about connections refused at the cap (a flood logs once)."""

_last_cap_warning = 0.0


@functools.cache
def _default_limits() -> HttpLimits:
    """The default ``[http]`` settings, for a config not built by ``server_config``."""
    return HttpLimits.from_settings(HttpSettings())


class _RequestRefused(Exception):
    """Raised inside a parser callback to stop parsing a request that has been answered with an error."""


def error_response(status: int, phrase: str, code: str, reason: str) -> bytes:
    """A complete ``connection: close`` answer with the framework's JSON error body."""
    body = json.dumps({"error": code, "reason": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return (head + "\r\n").encode() + body


_BUSY = error_response(503, "Service Unavailable", "too_many_connections",
                       "the server holds as many connections as it accepts; retry later")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection under :class:`~inference_subnet.serving.limits.HttpLimits`.

    The limits are read from ``config.http_limits`` (set by :func:`~inference_subnet.serving.server_config`),
    or are the defaults when the config has none.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: HttpLimits = getattr(config, "http_limits", None) or _default_limits()
        self._max_head = limits.max_header_bytes
        self._max_header_lines = limits.max_header_count
        self._read_timeout = limits.request_read_timeout
        self._max_connections = limits.max_connections
        self._in_head = True
        """The next bytes belong to a request head (none of the current request's handling has started)."""
        self._head_bytes = 0
        self._received = 0
        """Complete requests read on this connection."""
        self._answered = 0
        """Complete answers sent; while fewer than ``_received`` the server, not the client, is waited for."""
        self._deadline = 0.0
        self._read_timer: TimerHandle | None = None
        self._refused = False
        """Answered with an error and closing: further input is dropped unparsed."""
        self._dropped = 0
        self._linger: TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._max_connections:
            self.transport = transport
            self._refused = True
            transport.write(_BUSY)
            transport.close()
            _warn_cap(self._max_connections)
            return
        super().connection_made(transport)
        self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    # -- input -----------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_bytes + len(data) <= self._max_head and not self._refused:
            # The common case, a whole head within the limit, on the shortest path.
            self._head_bytes += len(data)
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._parse_failed(exc)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if self._refused:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        while self._in_head:
            room = self._max_head - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                self._feed(data)
                return
            # Feed the parser no further than the limit: it copies a header's pieces on every feed.
            self._head_bytes += room
            self._feed(data[:room])
            if self._refused or self.transport.is_closing():
                return
            if self._in_head and self._head_bytes >= self._max_head:
                self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                             f"the request head exceeds {self._max_head} bytes")
                return
            data = data[room:]
        # Body bytes. A pipelined head that starts inside this read is counted from the next read on,
        # so one head can exceed the limit by at most one read before it is refused.
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(exc)

    def _parse_failed(self, exc: Exception) -> None:
        """What uvicorn does when the parser stops, unless a callback of ours stopped it after answering."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif not self._refused:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    # -- parser callbacks ------------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._in_head = False
        if len(self.headers) > self._max_header_lines:
            self._refuse(431, "Request Header Fields Too Large", "too_many_headers",
                         f"the request has more than {self._max_header_lines} header lines")
            raise _RequestRefused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._received += 1
        if self._answered >= self._received:  # answered before its body ended: the next request's turn
            self._wait_for_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._answered += 1
        if self._answered >= self._received and not self.transport.is_closing():
            self._deadline = self.loop.time() + self._read_timeout  # _wait_for_request, inlined: per request
            if self._read_timer is None:
                self._read_timer = self.loop.call_at(self._deadline, self._check_deadline)

    # -- the read deadline -----------------------------------------------------------------------------
    def _wait_for_request(self) -> None:
        """Start the window in which the client must send one complete request.

        One timer per connection at most: moving the deadline is an attribute write, and the timer, when
        it fires early, re-arms itself for the deadline that holds then.
        """
        self._deadline = self.loop.time() + self._read_timeout
        if self._read_timer is None:
            self._read_timer = self.loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._read_timer = None
        if self._refused or self.transport.is_closing() or self._answered < self._received:
            return  # closing, or the server owes an answer: the window restarts when it is sent
        if self._deadline - self.loop.time() > 0.005:
            self._read_timer = self.loop.call_at(self._deadline, self._check_deadline)
            return
        if self._in_head and self._head_bytes:
            self._refuse(408, "Request Timeout", "request_timeout",
                         f"the request did not arrive within {self._read_timeout:g}s")
        else:
            # Nothing sent (an idle connection), or a body that stalls while the app waits for it: the
            # app then sees a disconnect.
            self.transport.close()

    # -- refusal ---------------------------------------------------------------------------------------
    def _refuse(self, status: int, phrase: str, code: str, reason: str) -> None:
        """Answer an error and close, reading what the client still sends for a moment so it sees it."""
        self._refused = True
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        transport = self.transport
        if self._answered < self._received:  # an answer is being written: no room for ours
            transport.close()
            return
        transport.write(error_response(status, phrase, code, reason))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)


def _warn_cap(cap: int) -> None:
    global _last_cap_warning
    now = time.monotonic()
    if now - _last_cap_warning >= REFUSAL_LOG_INTERVAL:
        _last_cap_warning = now
        log.warning("refusing connections: %d open, the http.max_connections of this process", cap)
