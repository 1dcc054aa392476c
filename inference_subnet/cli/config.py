"""`inference-subnet config ...`: show the effective settings and generate their documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel

from inference_subnet.cli.common import settings
from inference_subnet.settings import Settings

app = typer.Typer(help="Inspect settings and generate docs/configuration.md.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the effective settings as JSON (secrets masked)."""
    typer.echo(settings().model_dump_json(indent=2))


@app.command("docs")
def docs(
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Generate the configuration reference from the settings model."""
    text = render_docs()
    if out:
        out.write_text(text)
    else:
        typer.echo(text)


def render_docs() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from `inference_subnet/settings.py` by `inference-subnet config docs`; do not edit by hand.",
        "",
        "Precedence, lowest first: defaults < TOML file (`--config` or `ISN_CONFIG`) < environment < CLI flags.",
        "Environment names: `ISN_` + the dotted path in upper case with `__` between parts "
        "(`miner.port` -> `ISN_MINER__PORT`). `REDIS_URL` and `DATABASE_URL` are also read without prefix.",
        "In TOML, sections are tables: `[miner]`, `[validator.quotas]`.",
        "",
        "| setting | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    _walk(Settings, "", lines)
    return "\n".join(lines) + "\n"


def _walk(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, f"{prefix}{name}.", lines)
            continue
        default = field.get_default(call_default_factory=True)
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        lines.append(
            f"| `{prefix}{name}` | `{type_name}` | `{default!r}` | {field.description or ''} |"
        )
