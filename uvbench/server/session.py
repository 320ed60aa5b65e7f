"""Websocket sessions (placeholder until the session layer lands)."""

from aiohttp import web


def setup_routes(app: web.Application) -> None:
    pass


async def close_all(state) -> None:
    pass
