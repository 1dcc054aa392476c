"""What every subcommand shares: the config file option, settings loading, clean error exits."""

from __future__ import annotations

import getpass
import sys
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from inference_subnet.logs import setup_logging
from inference_subnet.settings import ConfigFileError, Settings, SettingsError, load_settings

console = Console(stderr=True)


@dataclass
class _State:
    config_file: Path | None = None
    debug: bool = False


state = _State()


def printable(text: str) -> str:
    """``text`` with control and format characters shown as escapes (``\\x1b``, ``\\u202e``).

    Names a user or a peer chose (an API key's, a wallet's) are printed to an operator's terminal: raw, an
    escape sequence in one could recolour it, move the cursor or hide the rest of the line."""
    return "".join(_escaped(ch) if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(text: str) -> str:
    """``text`` ready for a Rich markup string: control characters escaped, ``[tags]`` shown literally."""
    return escape(printable(text))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear error naming the flag or file at fault, on one line, and exit.

    The message is never read as Rich markup (it often quotes user input), and line breaks of a multi-line
    cause are folded so the error stays one line whatever the terminal's width."""
    line = printable(" ".join(str(message).split()))
    console.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def bad_input_message(exc: BaseException) -> str | None:
    """The one-line error for an exception that bad input (a flag, file, variable or key) explains, or
    ``None`` for an exception that is a fault of the program (its traceback is worth showing)."""
    from inference_subnet.chain.wallet import WalletError
    from inference_subnet.protocol.task import UnknownTask

    if isinstance(exc, ConfigFileError):
        return f"--config: {exc}"
    if isinstance(exc, (SettingsError, WalletError)):
        return str(exc)
    if isinstance(exc, UnknownTask):
        return f"--task: {exc}"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"not valid TOML: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror or exc}"
    return None


def ask_password(path: str) -> str | None:
    """The password of the encrypted key file at ``path``, asked on the terminal; ``None`` when stdin is no
    terminal (a supervisor, a pipe): a service then fails with one line instead of waiting for an answer."""
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(f"password of {printable(path)}: ")


def settings(*, service: bool = False, **overrides: Any) -> Settings:
    """Settings from defaults < config file < environment < the given CLI flags; set up logging.

    ``service``: a long-running command, whose INFO lines go to stdout and warnings to stderr; a one-shot
    command's stdout is its result, so all its log lines go to stderr. ``--debug`` also shows the INFO lines
    of libraries kept quiet otherwise (Alembic's)."""
    try:
        loaded = load_settings(state.config_file, **overrides)
    except SettingsError as exc:
        if state.debug:
            raise
        fail(bad_input_message(exc) or str(exc))
    setup_logging("DEBUG" if state.debug and loaded.log_level.upper() == "INFO" else loaded.log_level,
                  loaded.log_format, split=service)
    return loaded
