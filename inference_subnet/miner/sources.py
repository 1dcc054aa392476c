"""Metagraph sources a miner can run on without a chain connection: a fixed snapshot, or a JSON file.

:func:`source_from_settings` is the one place that chooses a miner's source; the chain-backed source slots
in there.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from inference_subnet.chain.types import ChainError, Metagraph, MetagraphSource

if TYPE_CHECKING:
    from inference_subnet.settings import Settings

log = logging.getLogger(__name__)


class StaticMetagraphSource:
    """A snapshot that never changes (tests, benchmarks, fixed allow-lists)."""

    def __init__(self, metagraph: Metagraph) -> None:
        self._metagraph = metagraph
        self._since = time.monotonic()

    async def current(self) -> Metagraph:
        return self._metagraph

    def replace(self, metagraph: Metagraph) -> None:
        """Swap the snapshot (a test promoting a validator, a caller refreshing by hand)."""
        self._metagraph = metagraph
        self._since = time.monotonic()

    @property
    def age_seconds(self) -> float:
        return time.monotonic() - self._since


class FileMetagraphSource:
    """The JSON written by :meth:`Metagraph.to_json`, re-read when the file changes.

    The file's modification time is checked at most every ``check_interval`` seconds, so the hot path
    costs a clock read. A file that turns unreadable or invalid after a good read keeps the last good
    snapshot (logged), because refusing every caller over a half-written file would be worse.
    """

    def __init__(self, path: Path | str, *, check_interval: float = 1.0) -> None:
        self.path = Path(path).expanduser()
        self.check_interval = check_interval
        self._metagraph: Metagraph | None = None
        self._mtime_ns: int | None = None
        self._next_check = 0.0

    def load(self) -> Metagraph:
        """Read the file now; raises :class:`ChainError` naming the file when it cannot be used."""
        try:
            stat = os.stat(self.path)
            metagraph = Metagraph.from_json(self.path.read_bytes())
        except FileNotFoundError:
            raise ChainError(f"metagraph file not found: {self.path}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"metagraph file {self.path} is not a valid metagraph JSON: {exc}") from None
        self._metagraph = metagraph
        self._mtime_ns = stat.st_mtime_ns
        return metagraph

    async def current(self) -> Metagraph:
        now = time.monotonic()
        if now >= self._next_check or self._metagraph is None:
            self._next_check = now + self.check_interval
            self._refresh()
        assert self._metagraph is not None
        return self._metagraph

    def _refresh(self) -> None:
        try:
            if self._metagraph is not None and os.stat(self.path).st_mtime_ns == self._mtime_ns:
                return
            self.load()
        except (OSError, ChainError) as exc:
            if self._metagraph is None:
                raise ChainError(str(exc)) from None
            log.warning("keeping the last good metagraph: %s", exc)

    @property
    def age_seconds(self) -> float:
        """Seconds since the file holding the current snapshot was written."""
        if self._mtime_ns is None:
            return float("inf")
        return max(0.0, time.time() - self._mtime_ns / 1e9)


def source_from_settings(settings: Settings) -> MetagraphSource:
    """The metagraph source a miner uses, chosen from settings (the one place this choice is made).

    ``chain.metagraph_file`` when set (development, tests); otherwise the chain named by
    ``chain.network``, refreshed in the background every ``chain.metagraph_refresh_seconds``. The chain
    source connects lazily, so a miner starts while its node is still coming up and answers 503 until
    the first snapshot is read.
    """
    if settings.chain.metagraph_file is not None:
        source = FileMetagraphSource(settings.chain.metagraph_file)
        source.load()
        return source
    from inference_subnet.chain.refresh import RefreshingMetagraphSource
    from inference_subnet.chain.substrate import SubstrateChainClient

    return RefreshingMetagraphSource(
        SubstrateChainClient.from_settings(settings.chain),
        settings.chain.netuid,
        settings.chain.metagraph_refresh_seconds,
        settings.chain.mechid,
    )
