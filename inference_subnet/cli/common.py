"""What every subcommand shares: the config file option, settings loading, clean error exits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from inference_subnet.logs import setup_logging
from inference_subnet.settings import ConfigFileError, Settings, load_settings

console = Console(stderr=True)


@dataclass
class _State:
    config_file: Path | None = None


state = _State()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear error naming the flag or file at fault, and exit."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    """Settings from defaults < config file < environment < the given CLI flags; set up logging."""
    try:
        loaded = load_settings(state.config_file, **overrides)
    except ConfigFileError as exc:
        fail(f"--config: {exc}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        fail(f"invalid settings: {problems}")
    setup_logging(loaded.log_level, loaded.log_json)
    return loaded
