"""Shared fixtures: a real local server on a free port and an authenticated HTTP client for it.

A test picks the server's configuration with a marker, keyword arguments of `ServerConfig`:

    @pytest.mark.server_config(plan=PLANS["free"], faults=Faults(rest_429=1))
    async def test_x(api, server): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from uvbench.server import LocalServer, ServerConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "server_config(**kwargs): ServerConfig keyword arguments for the `server` fixture",
    )


@pytest.fixture
def server_config(request: pytest.FixtureRequest) -> ServerConfig:
    marker = request.node.get_closest_marker("server_config")
    return ServerConfig(**(marker.kwargs if marker else {}))


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[LocalServer]:
    async with LocalServer(server_config) as running:
        yield running


@pytest.fixture
async def api(server: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    """httpx client on the server's base URL, sending the server's API key."""
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=10.0
    ) as client:
        yield client
