"""Run ``inference-subnet miner`` as a child process and know when it serves: for local subnets,
benchmarks and end-to-end tests.

Readiness is an event, not a guess: the child's log is drained by a thread that fires when uvicorn
announces it is listening (or when the child dies, with its last log lines in the error). The same thread
keeps the first error the child logs and, given a file, writes the whole log there, rotated at a size so a
chatty handler cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from inference_subnet import lifecycle
from inference_subnet.logs import FirstError

LISTENING = "miner accepting connections on"
"""What the CLI logs once its socket listens when it runs several workers."""
READY_MARKERS = {False: "Uvicorn running on", True: LISTENING}
"""The log line after which the socket listens: one worker (uvicorn's own line), several (the CLI's)."""
LOG_FILE_MAX_BYTES = 5 * 1024 * 1024
"""A log file rotates at this size, keeping one previous file: at most twice this on disk per miner."""


class MinerProcessError(RuntimeError):
    """The miner process exited or did not become ready in time."""


class MinerProcess:
    """One ``inference-subnet miner`` child process."""

    def __init__(
        self,
        *,
        port: int,
        wallet_path: Path,
        wallet_name: str,
        wallet_hotkey: str = "default",
        metagraph_file: Path | None = None,
        tasks: Sequence[str] = ("arithmetic",),
        behaviour: str = "honest",
        workers: int = 1,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_file: Path | None = None,
        log_file_max_bytes: int = LOG_FILE_MAX_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        args = [sys.executable, "-m", "inference_subnet.cli.main", "miner", "--port", str(port), "--host", host,
                "--wallet.path", str(wallet_path), "--wallet.name", wallet_name, "--wallet.hotkey", wallet_hotkey,
                "--behaviour", behaviour, "--workers", str(workers)]
        for task in tasks:
            args += ["--task", task]
        if metagraph_file is not None:
            args += ["--metagraph-file", str(metagraph_file)]
        self.args = [*args, *extra_args]
        # INFO at least: readiness is read from uvicorn's "running on" log line.
        self.env = {**os.environ, "ISN_LOG_LEVEL": "INFO", **(env or {})}
        self._marker = READY_MARKERS[workers > 1]
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._exited = threading.Event()
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self.log_file = log_file
        self._log_file_max_bytes = log_file_max_bytes
        self._first_error = FirstError()

    @property
    def first_error(self) -> str | None:
        """The first error the child logged (message and exception on one line), if any yet."""
        return self._first_error.line

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> MinerProcess:
        self._proc = subprocess.Popen(
            self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )
        lifecycle.guard(self._proc.pid)  # its own session: stopped by the reaper if this process dies
        threading.Thread(target=self._drain, name=f"miner-log-{self.port}", daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._open_log_file()
        try:
            for line in self._proc.stdout:
                self.log.append(line.rstrip())
                self._first_error.feed(line)
                if out is not None:
                    out.handle(logging.makeLogRecord({"msg": line.rstrip("\n")}))
                if self._marker in line:
                    self._ready.set()
        finally:
            if out is not None:
                out.close()
            self._exited.set()
            self._ready.set()  # wake waiters; they check whether the process is still alive

    def _open_log_file(self) -> logging.handlers.RotatingFileHandler | None:
        """The child's lines verbatim (they carry their own timestamps), rotated to ``<name>.1`` at the cap."""
        if self.log_file is None:
            return None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = logging.handlers.RotatingFileHandler(
            self.log_file, maxBytes=self._log_file_max_bytes, backupCount=1, encoding="utf-8")
        out.setFormatter(logging.Formatter("%(message)s"))
        return out

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self._ready.wait(timeout):
            raise MinerProcessError(f"miner on port {self.port} not ready after {timeout:g}s: {self.tail()}")
        if self._exited.is_set():
            raise MinerProcessError(f"miner on port {self.port} exited: {self.tail()}")

    async def wait_ready_async(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_ready, timeout)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(list(self.log)[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful uvicorn shutdown that also stops an embedded Valkey), SIGKILL if it hangs."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is not None:
                return proc.returncode
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(timeout)
        finally:
            lifecycle.release(proc.pid)

    def __enter__(self) -> Self:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
