"""Which URL goes to which view."""

from __future__ import annotations

from aiohttp import web

from stages.ingest import events, suppressions, views
from stages.ingest.apidocs import setup_docs
from stages.ingest.auth import protected


def setup_routes(app: web.Application) -> None:
    """Public: health, the contract, the pixel and the SNS webhook. Everything else is `protected`."""
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    setup_docs(app)
    app.router.add_get("/v1/events/open", events.open_pixel)  # HEAD too
    app.router.add_post("/v1/events/results", events.sns_results)
    api = app.router
    api.add_post("/v1/messages", protected(views.post_messages))
    api.add_get("/v1/events/counts/sent", protected(events.sent_counts))
    api.add_get("/v1/suppressions", protected(suppressions.list_suppressions))
    api.add_post("/v1/suppressions", protected(suppressions.add_suppression))
    api.add_get("/v1/suppressions/{email:[^/]+}", protected(suppressions.get_suppression))
    api.add_delete("/v1/suppressions/{email:[^/]+}", protected(suppressions.delete_suppression))
    api.add_get("/v1/topics", protected(views.list_topics))
    # A "/" in a topic id is sent as %2F: routes match the encoded path, then decode it.
    api.add_post("/v1/topics/{topic_id:[^/]+}/pause", protected(views.pause_topic))
    api.add_post("/v1/topics/{topic_id:[^/]+}/resume", protected(views.resume_topic))
    api.add_get("/v1/topics/{topic_id:[^/]+}", protected(views.get_topic))
    api.add_delete("/v1/topics/{topic_id:[^/]+}", protected(views.cancel_topic))
