"""The gateway benchmark's baseline: a minimal pass-through proxy on the gateway's own server stack.

Run by ``benchmarks/gateway.py`` as ``python benchmarks/passthrough.py PORT METAGRAPH WALLETS``. Same
uvicorn config (``server_config``: the bounded httptools protocol, uvloop, a ``TCP_NODELAY`` socket), same
FastAPI, same validator ``MinerClient``; no API keys, limits, quota, request log, metrics or scoring. It
parses the payload as the task's Request, calls the next miner round-robin and answers the Response JSON,
so what the gateway costs beyond it is the cost of its features.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from inference_subnet.chain.types import Metagraph
from inference_subnet.chain.wallet import load_hotkey
from inference_subnet.cli.gateway import _listen, _run_loop
from inference_subnet.serving import server_config
from inference_subnet.settings import load_settings
from inference_subnet.tasks.arithmetic import ArithmeticTask
from inference_subnet.validator.client import MinerClient


def create_app(client: MinerClient, metagraph: Metagraph) -> FastAPI:
    task = ArithmeticTask()
    miners = [n for n in metagraph.neurons if n.axon is not None and n.axon.port]
    rotation = itertools.cycle(miners)
    app = FastAPI()

    @app.post("/v1/tasks/arithmetic")
    async def call(request: Request) -> Response:
        payload = task.Request.model_validate_json(await request.body())
        result = await client.call(task, next(rotation), payload)
        if not result.ok or result.response is None:
            return JSONResponse({"error": result.error}, status_code=502)
        return Response(result.response.model_dump_json().encode(), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def serve(port: int, metagraph_file: Path, wallets: Path) -> None:
    import uvicorn

    settings = load_settings()
    keypair = load_hotkey(wallets, "validator", "default")
    client = MinerClient(keypair)
    app = create_app(client, Metagraph.from_json(metagraph_file.read_text()))
    sock = _listen("127.0.0.1", port)
    config = server_config(app, settings.http, log_config=None, access_log=False, log_level="warning")
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        await client.aclose()


if __name__ == "__main__":
    _run_loop(serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
