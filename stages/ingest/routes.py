"""Which URL goes to which view."""

from __future__ import annotations

from aiohttp import web

from stages.ingest import events, suppressions, views
from stages.ingest.apidocs import setup_docs


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    setup_docs(app)
    app.router.add_post("/v1/messages", views.post_messages)
    app.router.add_post("/v1/events/results", events.sns_results)
    app.router.add_get("/v1/events/open", events.open_pixel)  # HEAD too
    app.router.add_get("/v1/events/counts/sent", events.sent_counts)
    app.router.add_get("/v1/suppressions", suppressions.list_suppressions)
    app.router.add_post("/v1/suppressions", suppressions.add_suppression)
    app.router.add_get("/v1/suppressions/{email:[^/]+}", suppressions.get_suppression)
    app.router.add_delete("/v1/suppressions/{email:[^/]+}", suppressions.delete_suppression)
    app.router.add_get("/v1/topics", views.list_topics)
    # A "/" in a topic id is sent as %2F: routes match the encoded path, then decode it.
    app.router.add_post("/v1/topics/{topic_id:[^/]+}/pause", views.pause_topic)
    app.router.add_post("/v1/topics/{topic_id:[^/]+}/resume", views.resume_topic)
    app.router.add_get("/v1/topics/{topic_id:[^/]+}", views.get_topic)
    app.router.add_delete("/v1/topics/{topic_id:[^/]+}", views.cancel_topic)
