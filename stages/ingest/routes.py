"""Which URL goes to which view."""

from __future__ import annotations

from aiohttp import web

from stages.ingest import views


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    app.router.add_post("/v1/messages", views.post_messages)
