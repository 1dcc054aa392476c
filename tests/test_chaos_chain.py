"""Chaos: the chain process dies mid-run and comes back on the same port.

Runs its own chain (a copy of the shared chopsticks install under a temporary ``LOCALCHAIN_HOME``, a free
port), so killing it disturbs no other test. What must hold: a call while the node is dead fails with a
clear error within its deadline; a miner's :class:`RefreshingMetagraphSource` keeps serving its last
snapshot with a growing age; once the node is back, the source recovers with nobody's help.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_subnet.chain.refresh import RefreshingMetagraphSource
from inference_subnet.chain.substrate import SubstrateChainClient
from inference_subnet.chain.types import ChainTimeout, ChainUnavailable
from inference_subnet.localnet.ports import free_port

pytestmark = pytest.mark.chain

SHARED_CHAIN = Path(__file__).resolve().parents[2] / "shared" / "chain"
DEFAULT_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "subtensor-localchain"
DEADLINE = 3.0


@dataclass
class OwnChain:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "LOCALCHAIN_HOME": str(self.home)}
        out = subprocess.run(["bash", str(SHARED_CHAIN / "start.sh"), str(self.port)], env=env, check=False,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"chain did not start: {out.stderr[-2000:]}")

    def pid(self) -> int:
        return int((self.home / f"chopsticks-{self.port}.pid").read_text())

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on the websocket."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # bounded: the process is reaped by init, we only wait for it to vanish
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


@pytest.fixture(scope="module")
def own_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnChain]:
    home = tmp_path_factory.mktemp("localchain")
    installed = Path(os.environ.get("LOCALCHAIN_HOME", DEFAULT_HOME)) / "node_modules"
    if installed.is_dir():  # a cold `npm ci` takes ~100 s; a copy of the shared install takes seconds
        shutil.copytree(installed, home / "node_modules", symlinks=True)
    chain = OwnChain(home, free_port())
    chain.start()
    try:
        yield chain
    finally:
        with_pid = home / f"chopsticks-{chain.port}.pid"
        if with_pid.exists():
            try:
                os.kill(chain.pid(), signal.SIGTERM)
            except ProcessLookupError:
                pass


async def test_chain_killed_mid_run_then_back(own_chain: OwnChain) -> None:
    client = SubstrateChainClient(own_chain.url, call_timeout=DEADLINE, backoff_initial=0.2, backoff_max=1.0)
    source = RefreshingMetagraphSource(client, netuid=1, interval=0.25)
    try:
        before = await source.current()  # first snapshot, read synchronously
        assert before.neurons and source.age_seconds < 5
        await asyncio.wait_for(source.wait_refreshed(), 10)  # the background loop is running

        own_chain.kill()
        killed_at = time.monotonic()
        started = time.monotonic()
        with pytest.raises((ChainTimeout, ChainUnavailable)) as dead:
            await client.metagraph(1)
        assert time.monotonic() - started <= DEADLINE + 1.0, "a dead node must not hang a call"
        assert "127.0.0.1" in str(dead.value) or "within" in str(dead.value)

        # The miner keeps serving from its last snapshot while refreshes fail.
        await asyncio.wait_for(source.wait_failures(2), 20)  # the background loop noticed
        assert await source.current() is source.snapshot
        assert (await source.current()).by_hotkey.keys() == before.by_hotkey.keys()
        assert source.age_seconds >= time.monotonic() - killed_at - 0.5
        assert isinstance(source.last_error, (ChainTimeout, ChainUnavailable))

        await asyncio.to_thread(own_chain.start)  # same port, same install; refreshes keep failing meanwhile
        after = await asyncio.wait_for(source.wait_refreshed(after=time.monotonic()), 60)
        assert source.failures == 0 and source.last_error is None and source.age_seconds < 5
        assert after.by_hotkey.keys() == before.by_hotkey.keys()  # the same genesis subnet, read anew
        assert (await client.metagraph(1)).netuid == 1  # the client reconnected by itself as well
    finally:
        await source.stop()
        await client.close()
