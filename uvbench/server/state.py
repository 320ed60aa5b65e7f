"""Everything one running local server shares between its REST routes and websocket sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from uvbench.server.config import Faults, ServerConfig
from uvbench.server.store import CallStore


@dataclass
class ServerState:
    config: ServerConfig
    store: CallStore = field(default_factory=CallStore)
    faults: Faults = field(default_factory=Faults)
    """Server-wide faults in force now; starts as config.faults, changed by PUT /_uvbench/faults."""
    rest_429_left: int = 0
    rest_503_left: int = 0
    base_url: str = ""
    """http://host:port once bound; join URLs are built from it."""
    read_ticks: dict[float, Any] = field(default_factory=dict)
    """The sink agent's shared read ticks (sink.ReadTick), one per read_batch_ms in use."""

    def __post_init__(self) -> None:
        self.set_faults(self.config.faults)
        self.store.keep_ended = self.config.keep_calls

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rest_429_left = faults.rest_429
        self.rest_503_left = faults.rest_503

    @property
    def ws_base_url(self) -> str:
        return "ws" + self.base_url[len("http") :]


STATE_KEY: web.AppKey[ServerState] = web.AppKey("uvbench_state", ServerState)
