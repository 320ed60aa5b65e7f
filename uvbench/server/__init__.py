"""The local Ultravox-compatible server (`uvbench serve`) with a simulated agent."""

from uvbench.server.app import LocalServer, ServerThread, build_app
from uvbench.server.config import AgentBehaviour, Faults, Latency, ServerConfig

__all__ = [
    "AgentBehaviour",
    "Faults",
    "Latency",
    "LocalServer",
    "ServerConfig",
    "ServerThread",
    "build_app",
]
