"""HTTP serving for every server the framework starts (miner, gateway, validator services).

A bottom layer: it imports only :mod:`inference_subnet.settings` and third-party libraries, so the miner,
the validator services and the CLI can all build their uvicorn config with :func:`server_config`.
"""

from inference_subnet.serving.config import ServerConfig, server_config
from inference_subnet.serving.limits import HttpLimits, connection_cap
from inference_subnet.serving.protocol import BoundedHttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol", "HttpLimits", "ServerConfig", "connection_cap", "server_config"]
