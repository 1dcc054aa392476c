"""An OpenAI-compatible inference server over the ``llm`` example's model (``inference-subnet llm serve``).

It answers what vLLM, SGLang, llama.cpp's server and Ollama answer, on the model the validator reproduces,
so a miner's backend handler (:mod:`inference_subnet.tasks.llm.openai_backend`) and teacher-forced
verification can be exercised end to end on one machine without a GPU or a download. Built on the
framework's bounded uvicorn config (:func:`inference_subnet.serving.server_config`) like every other server.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

import uvicorn

from inference_subnet.serving import server_config
from inference_subnet.settings import HttpSettings
from inference_subnet.tasks.llm.server.app import ApiError, OpenAIServer, ServerLimits, create_app
from inference_subnet.tasks.llm.server.engine import Engine

__all__ = ["ApiError", "BackgroundServer", "Engine", "OpenAIServer", "ServerLimits", "create_app",
           "load_engine", "listen", "make_server"]


def load_engine(model: str | None = None, served_name: str | None = None) -> Engine:
    """The engine over ``model`` (default: ``examples.llm_model``), named ``served_name`` (default: the
    model id) in ``/v1/models`` and in the ``model`` field requests must match. Blocking: loads the model."""
    from inference_subnet.tasks.llm.model import load_text_generator

    generator = load_text_generator(model)
    return Engine(generator, served_name or generator.name)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything starts so a busy port is an ``OSError`` at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def make_server(engine: Engine, *, limits: ServerLimits | None = None, http: HttpSettings | None = None,
                log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``engine`` under the framework's HTTP limits (``http``: default settings)."""
    config = server_config(create_app(engine, limits), http or HttpSettings(), log_level=log_level,
                           lifespan="off", access_log=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """The server on a thread of this process, for tests and embedding: ``with BackgroundServer(engine) as
    s: s.base_url``. Binds 127.0.0.1 on a free port unless told otherwise; stops and joins on exit."""

    def __init__(self, engine: Engine, *, host: str = "127.0.0.1", port: int = 0,
                 limits: ServerLimits | None = None) -> None:
        self.sock = listen(host, port)
        self.port = int(self.sock.getsockname()[1])
        self.base_url = f"http://{host}:{self.port}/v1"
        self.server = make_server(engine, limits=limits)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="isn-llm-server", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the LLM server stopped before it started")
            self._thread.join(0.02)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()
