"""`inference-subnet config ...`: show the effective settings and generate their documentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_origin

import typer
from pydantic import BaseModel

from inference_subnet.cli.common import settings
from inference_subnet.redaction import redact_url
from inference_subnet.settings import OTHER_ENV_VARS, REDIS_URL_SCHEMES, RESERVED_ENV_PREFIXES, Settings

app = typer.Typer(help="Inspect settings and generate docs/configuration.md.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the effective settings as JSON, secrets masked: secret settings, and the password of every URL
    (``database_url``, ``redis_url``, an endpoint with ``user:password@``)."""
    typer.echo(json.dumps(masked(settings().model_dump(mode="json")), indent=2))


def masked(value: Any) -> Any:
    """``value`` (dumped settings) with every URL's userinfo and secret query parameters masked; secret
    settings (``SecretStr``) are already masked by the dump."""
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return redact_url(value) if isinstance(value, str) else value


@app.command("docs")
def docs(
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Generate the configuration reference from the settings model."""
    text = render_docs()
    if out:
        out.write_text(text)
    else:
        typer.echo(text, nl=False)


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
        "Every key is checked: a key of the TOML file or an `ISN_` variable that names no setting is an error "
        "(with the nearest valid name), never ignored. `ISN_` variables that are not settings: "
        + ", ".join(f"`{name}`" for name in sorted(OTHER_ENV_VARS))
        + ", and names starting with "
        + ", ".join(f"`{prefix}`" for prefix in RESERVED_ENV_PREFIXES)
        + " (the test harness). List, table and section variables take JSON "
        "(`ISN_MINER__TASKS='[\"arithmetic\"]'`, `ISN_MINER__CAPACITY='{\"arithmetic\": 500}'`); one entry of a "
        "table can also be set alone (`ISN_MINER__CAPACITY__ARITHMETIC=500`). `redis_url` takes "
        + ", ".join(f"`{scheme}://`" for scheme in REDIS_URL_SCHEMES)
        + " URLs.",
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
        type_name = (None if get_origin(annotation) is Literal else getattr(annotation, "__name__", None)) or str(
            annotation
        ).replace("typing.", "")
        lines.append(
            f"| `{prefix}{name}` | `{type_name}` | `{default!r}` | {field.description or ''} |"
        )
