"""Processes that own children stop them on SIGTERM, SIGHUP and on their own death.

Real processes on 127.0.0.1: a miner (one worker, and uvicorn workers) and a gateway, each with its own
embedded Valkey (no ``REDIS_URL``). Their children (``valkey-server``, the reaper, workers) are read from
``/proc`` while they serve; after the signal each must be gone, within a bounded wait. A zombie counts as
gone (here the init process may be slow to reap), and a pid is matched by its start time so a recycled
pid cannot pass for a survivor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from test_miner_processes import setup_subnet

from inference_subnet import lifecycle
from inference_subnet.miner.process import MinerProcess
from inference_subnet.reaper import is_same_process, process_start_time, read_orders, reap

EMBEDDED = {"REDIS_URL": "", "ISN_REDIS_URL": ""}
EXIT_WAIT = 30.0
GONE_WAIT = 15.0


def children(pid: int) -> dict[int, int]:
    """Direct children of ``pid`` -> their start times."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            start = process_start_time(int(child))
            if start is not None:
                found[int(child)] = start
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def survivors(procs: dict[int, int], timeout: float = GONE_WAIT) -> list[str]:
    """Those of ``procs`` still running after ``timeout`` (killed then, so a failure leaks nothing)."""
    deadline = time.monotonic() + timeout
    alive = dict(procs)
    while alive and time.monotonic() < deadline:
        alive = {pid: start for pid, start in alive.items() if is_same_process(pid, start)}
        time.sleep(0.05)
    left = [f"{pid} {cmdline(pid)}" for pid in alive]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return left


def wait_exit(proc: subprocess.Popen, timeout: float = EXIT_WAIT) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def miner(tmp_path: Path, workers: int) -> MinerProcess:
    _, _, _, metagraph = setup_subnet(tmp_path)
    proc = MinerProcess(port=free_port(), wallet_path=tmp_path / "wallets", wallet_name="miner",
                        metagraph_file=metagraph, workers=workers, env=EMBEDDED)
    proc.start()
    proc.wait_ready(60)
    return proc


def owned(pid: int, expected: int) -> dict[int, int]:
    """The children of ``pid`` once ``expected`` of them run (workers start after the socket listens)."""
    deadline = time.monotonic() + 30
    found = children(pid)
    while len(found) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        found = children(pid)
    return found


@pytest.mark.parametrize(
    ("sig", "workers", "code"),
    [
        (signal.SIGTERM, 1, 0),
        (signal.SIGHUP, 1, 0),
        (signal.SIGKILL, 1, -signal.SIGKILL),
        (signal.SIGHUP, 2, 0),
        (signal.SIGKILL, 2, -signal.SIGKILL),
    ],
    ids=["term", "hup", "kill", "hup-2-workers", "kill-2-workers"],
)
def test_miner_leaves_no_child_behind(tmp_path: Path, sig: signal.Signals, workers: int, code: int) -> None:
    proc = miner(tmp_path, workers)
    try:
        assert proc.pid is not None and proc._proc is not None
        # valkey-server and the reaper, plus with workers each worker and multiprocessing's resource tracker
        kids = owned(proc.pid, 2 if workers == 1 else 3 + workers)
        names = [cmdline(pid) for pid in kids]
        assert sum("valkey-server" in n for n in names) == 1, names
        assert sum("reaper.py" in n for n in names) == 1, names
        assert sum("spawn_main" in n for n in names) == (workers if workers > 1 else 0), names
        os.kill(proc.pid, sig)
        assert wait_exit(proc._proc) == code, proc.tail()
        assert survivors(kids) == [], proc.tail()
    finally:
        proc.stop()


def test_gateway_with_embedded_valkey_stops_it_on_sighup_and_when_killed(tmp_path: Path) -> None:
    _, _, _, metagraph = setup_subnet(tmp_path)
    env = {**os.environ, **EMBEDDED, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
           "ISN_LOG_LEVEL": "INFO"}
    for sig, code in ((signal.SIGHUP, 0), (signal.SIGKILL, -signal.SIGKILL)):
        port = free_port()
        log = (tmp_path / f"gateway-{sig.name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_subnet.cli.main", "gateway", "run", "--host", "127.0.0.1",
             "--port", str(port), "--wallet-path", str(tmp_path / "wallets"), "--wallet-name", "validator",
             "--metagraph-file", str(metagraph), "--task", "arithmetic"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            tail = lambda: (tmp_path / f"gateway-{sig.name}.log").read_text()[-2000:]  # noqa: E731
            kids = children(proc.pid)
            assert sum("valkey-server" in cmdline(pid) for pid in kids) == 1, tail()
            os.kill(proc.pid, sig)
            assert wait_exit(proc) == code, tail()
            assert survivors(kids) == [], tail()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` -> its start time."""
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        try:
            kids = children(todo.pop())
        except OSError:  # exited meanwhile
            continue
        found.update(kids)
        todo += kids
    return found


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["hup", "kill"])
def test_localnet_stops_its_miners_gateway_and_valkey(tmp_path: Path, sig: signal.Signals) -> None:
    workdir, out = tmp_path / "localnet", tmp_path / "localnet.log"
    with out.open("wb") as sink:  # a file, not a pipe: nothing must block on a full pipe while stopping
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_subnet.cli.main", "localnet", "--miners", "2",
             "--duration", "0", "--no-live", "--workdir", str(workdir)],
            env={**os.environ, **EMBEDDED, "ISN_LOG_LEVEL": "INFO"}, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    tail = lambda: out.read_text()[-3000:]  # noqa: E731
    try:
        # two miners, a gateway, valkey-server and the reaper, once the gateway runs its own code (a
        # SIGKILL in the instant between a child's start and its guard is the one case left uncovered)
        gateway_log = workdir / "gateway.log"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and (
            not gateway_log.exists() or "gateway for validator" not in gateway_log.read_text()
        ):
            time.sleep(0.1)
        procs = descendants(proc.pid)
        names = [cmdline(pid) for pid in procs]
        assert sum(" miner " in n for n in names) == 2, tail()
        assert sum(" gateway run " in n for n in names) == 1, tail()
        assert sum("valkey-server" in n for n in names) == 1, names
        os.kill(proc.pid, sig)
        assert wait_exit(proc) in ((0, 1) if sig == signal.SIGHUP else (-signal.SIGKILL,)), tail()
        assert survivors(procs) == [], tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_stop_signals_keep_an_ignored_hangup_and_unwind_through_finally(tmp_path: Path) -> None:
    """nohup's ignored SIGHUP stays ignored; SIGTERM runs ``finally`` and atexit, then exits 0."""
    marker = tmp_path / "cleaned"
    code = f"""
import atexit, os, signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_IGN)
from inference_subnet.lifecycle import install_stop_signals
assert install_stop_signals() == [signal.SIGTERM]
assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
assert install_stop_signals() == []  # again: nothing changes
atexit.register(lambda: open({str(marker)!r}, "a").write("atexit\\n"))
os.kill(os.getpid(), signal.SIGHUP)  # ignored
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
finally:
    open({str(marker)!r}, "a").write("finally\\n")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert marker.read_text().split() == ["finally", "atexit"]


def test_reaper_stops_guarded_children_once_its_pipe_closes() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    released = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        starts = {p.pid: process_start_time(p.pid) for p in (sleeper, stubborn, released)}
        orders = [f"+{pid} {start}\n".encode() for pid, start in starts.items()]
        orders += [f"-{released.pid}\n".encode(), b"garbage\n", b"+999999999 123\n"]
        guarded = read_orders(orders)
        assert guarded == {sleeper.pid: starts[sleeper.pid], stubborn.pid: starts[stubborn.pid],
                           999999999: 123}
        assert reap(guarded, grace=0.5) == [stubborn.pid]  # SIGTERM ignored: killed after the grace
        assert sleeper.wait(10) == -signal.SIGTERM and stubborn.wait(10) == -signal.SIGKILL
        assert released.poll() is None
        # a recycled pid (same pid, another start time) is never signalled
        assert reap({released.pid: starts[released.pid] + 1}, grace=0.1) == []
        assert released.poll() is None
    finally:
        for p in (sleeper, stubborn, released):
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_a_process_killed_with_sigkill_takes_its_guarded_child_along(tmp_path: Path) -> None:
    """lifecycle.guard in a parent that then dies by SIGKILL: the reaper stops the orphaned child."""
    pids = tmp_path / "pids"
    code = f"""
import subprocess, sys, time
from inference_subnet import lifecycle
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
lifecycle.guard(child.pid)
open({str(pids)!r}, "w").write(f"{{child.pid}} {{lifecycle.reaper_pid()}}")
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child, reaper = (int(p) for p in pids.read_text().split())
        procs = {pid: process_start_time(pid) or 0 for pid in (child, reaper)}
        assert all(is_same_process(pid, start) for pid, start in procs.items())
        parent.kill()
        assert parent.wait(10) == -signal.SIGKILL
        assert survivors(procs) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_guard_and_release_in_this_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lifecycle.guard(child.pid)
        reaper = lifecycle.reaper_pid()
        assert reaper is not None and is_same_process(reaper, 0)
        assert "reaper.py" in cmdline(reaper)
        lifecycle.release(child.pid)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(10)
