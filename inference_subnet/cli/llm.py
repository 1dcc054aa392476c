"""`inference-subnet llm serve`: the ``llm`` example's model behind an OpenAI-compatible HTTP server.

What a miner's backend handler talks to when no vLLM, SGLang, llama.cpp or Ollama server is at hand, and the
external reference teacher-forced verification reads prompt logprobs from.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Optional

import typer

from inference_subnet.cli.common import fail, settings
from inference_subnet.cli.options import LogFormatOpt

app = typer.Typer(help="The llm example's model as an OpenAI-compatible server.", no_args_is_help=True)

log = logging.getLogger(__name__)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="Hub id or local path of the causal LM; default: examples.llm_model."),
    ] = None,
    served_model_name: Annotated[
        Optional[str],
        typer.Option("--served-model-name", help="Name in /v1/models and in requests; default: the model id."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=100_000, help="Largest max_tokens a request may ask.")
    ] = 512,
    max_running: Annotated[
        int, typer.Option("--max-running", min=1, max=4096, help="Requests decoding at once; 503 beyond.")
    ] = 16,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="Largest request body; 413 beyond.")
    ] = 1_048_576,
    log_format: LogFormatOpt = None,
) -> None:
    """Serve GET /v1/models, POST /v1/chat/completions and POST /v1/completions (JSON or SSE; prompt
    logprobs in vLLM's shape) until interrupted."""
    from inference_subnet.tasks.llm.server import ServerLimits, listen, load_engine, make_server

    cfg = settings(service=True, log_format=log_format)
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        engine = load_engine(model, served_model_name)
    except Exception as exc:
        sock.close()
        fail(f"--model: cannot load {model or cfg.examples.llm_model}: {type(exc).__name__}: {exc}")
    limits = ServerLimits(max_body_bytes=max_body_bytes, max_tokens=max_tokens, max_running=max_running)
    server = make_server(engine, limits=limits, http=cfg.http)
    log.info("LLM server listening on http://%s:%d/v1, serving %s", host, sock.getsockname()[1], engine.name)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
