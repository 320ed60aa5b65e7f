"""The local server as an aiohttp application, and ways to run it in-process."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

from aiohttp import web

from uvbench.audio.tts import synthesize
from uvbench.protocol.schema import load_openapi
from uvbench.server import agents, rest, session
from uvbench.server.config import ServerConfig
from uvbench.server.sink import canned_speech, frame_samples
from uvbench.server.state import STATE_KEY, ServerState

MAX_BODY_BYTES = 1 << 20
"""Largest REST request body read; a larger one is a 413 naming this limit. (Websocket frames have
their own limit, session.MAX_FRAME_BYTES.)"""


def build_app(state: ServerState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    rest.setup_routes(app)
    agents.setup_routes(app)
    session.setup_routes(app)
    return app


class LocalServer:
    """The local Ultravox-compatible server, started on the running event loop.

    async with LocalServer(ServerConfig()) as server:
        server.base_url, server.api_key
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.state = ServerState(self.config)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return self.state.base_url

    @property
    def api_url(self) -> str:
        return self.state.base_url + "/api"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def store(self):
        return self.state.store

    async def start(self) -> LocalServer:
        app = build_app(self.state)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        self.state.base_url = f"http://{host}:{port}"
        return self

    def prepare(self, sample_rates: tuple[int, ...] = (8000, 16000, 24000, 48000)) -> None:
        """Warm what the first calls would otherwise pay for, then freeze the heap.

        Loading the OpenAPI schema and synthesizing the agent's fixed lines take milliseconds each,
        which would stall every live call's output once. The schema also leaves a few hundred
        thousand long-lived objects that each full garbage collection would walk again (tens of
        ms, all calls late at once); gc.freeze() moves everything alive now out of its reach.
        Meant for a process that runs only the server (`uvbench serve`, benchmarks).
        """
        load_openapi()
        behaviour = self.config.agent
        for rate in sample_rates:
            for text in (behaviour.greeting, *behaviour.replies):
                synthesize(text, rate, wpm=behaviour.voice_wpm)
            if behaviour.mode == "sink":
                samples = frame_samples(rate, behaviour.chunk_ms)
                for text in (behaviour.greeting, behaviour.replies[0]):
                    canned_speech(text, rate, samples, behaviour.voice_wpm)
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if self._runner is not None:
            await session.close_all(self.state)
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class ServerThread:
    """The local server on its own event loop in a background thread, for synchronous callers.

    with ServerThread(ServerConfig()) as server:
        server.base_url
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.server = LocalServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="uvbench-server", daemon=True)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_key(self) -> str:
        return self.server.api_key

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
