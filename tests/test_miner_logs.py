"""A miner's log read back: the first error it logs (message and exception on one line, in either log format)
and its whole output in a file that rotates at a size, so a chatty handler cannot fill the disk."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from inference_subnet.logs import FirstError, JsonFormatter, TextFormatter, TEXT_FORMAT
from inference_subnet.miner.process import MinerProcess


def logged(formatter: logging.Formatter) -> list[str]:
    """What a miner writes when its handler raises, between two ordinary records."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.Logger("inference_subnet.miner.app")
    logger.addHandler(handler)
    logger.info("miner accepting connections")
    try:
        {}["model"]  # noqa: B018 - the handler's bug
    except KeyError:
        logger.exception("handler of task arithmetic failed")
    logger.error("a second error, not the first")
    return out.getvalue().splitlines(keepends=True)


@pytest.mark.parametrize("formatter", [TextFormatter(TEXT_FORMAT), JsonFormatter()], ids=["text", "json"])
def test_the_first_error_is_its_message_and_its_exception(formatter: logging.Formatter) -> None:
    first = FirstError()
    lines = logged(formatter)
    for line in lines[:1]:
        first.feed(line)
    assert first.line is None  # INFO is no error
    for line in lines[1:]:
        first.feed(line)
    assert first.line == "handler of task arithmetic failed: KeyError: 'model'"


def test_the_whole_output_goes_to_a_file_that_rotates_at_its_cap(tmp_path: Path) -> None:
    log_file = tmp_path / "miners" / "miner-0.log"
    proc = MinerProcess(port=1, wallet_path=tmp_path, wallet_name="w", log_file=log_file, log_file_max_bytes=10_000)
    # the runner's drain, fed by a child that writes 2,000 numbered lines (~40 kB) and one error record
    proc.args = [sys.executable, "-c",
                 "import sys\n"
                 "for i in range(2000): print(f'line {i:05d} ' + 'x' * 10)\n"
                 "print('2026-01-01 00:00:00,000 ERROR inference_subnet.miner.app: handler of task t failed')\n"
                 "print('ValueError: bad model output')\n"]
    proc.start()
    with pytest.raises(Exception, match="exited"):
        proc.wait_ready(30)
    assert proc.first_error == "handler of task t failed: ValueError: bad model output"
    backup = log_file.with_name("miner-0.log.1")
    assert log_file.stat().st_size <= 10_000 and backup.stat().st_size <= 10_000
    assert sorted(p.name for p in log_file.parent.iterdir()) == ["miner-0.log", "miner-0.log.1"]
    assert log_file.read_text().endswith("ValueError: bad model output\n")  # the newest lines are kept
    assert "line 01999" in log_file.read_text() + backup.read_text()
    assert proc.stop() == 0
