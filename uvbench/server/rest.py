"""REST routes of the local server (placeholder until the REST layer lands)."""

from aiohttp import web


def setup_routes(app: web.Application) -> None:
    pass
