"""Which URL goes to which view."""

from __future__ import annotations

from aiohttp import web

from stages.ingest import account, clicks, events, metrics_view, one_click, suppressions, views
from stages.ingest.apidocs import setup_docs
from stages.ingest.auth import protected
from stages.ingest.dashboard import setup_dashboard
from stages.ingest.errors import NO_ROUTE, Handler, answers_errors, no_route
from stages.ingest.forward import to_sending_node


def api(handler: Handler) -> Handler:
    return answers_errors(protected(handler))


def setup_routes(app: web.Application) -> None:
    """Public: health, the contract, the pixel, the click redirect, the unsubscribe link and the SNS webhook.
    Everything else is `protected`.

    Every route but the pixel `answers_errors`; the pixel answers its image whatever
    happens, with no error handling around it (see errors.py).
    """
    router = app.router
    router.add_get("/health", answers_errors(views.health))
    router.add_get("/ready", answers_errors(views.ready))
    router.add_get("/metrics", answers_errors(metrics_view.metrics_route))
    setup_docs(app)
    setup_dashboard(app)  # static and public like /docs; its data comes from the API below
    router.add_get("/v1/events/open", events.open_pixel)  # HEAD too
    router.add_get("/v1/events/click/{token}", answers_errors(clicks.click))  # HEAD too
    router.add_post("/v1/events/results", answers_errors(events.sns_results))
    # The one-click unsubscribe link: public, like the pixel (the token is the credential).
    router.add_get("/v1/unsubscribe/{token}", answers_errors(one_click.unsubscribe_page))  # HEAD too
    router.add_post("/v1/unsubscribe/{token}", answers_errors(to_sending_node(one_click.one_click)))
    router.add_post("/v1/messages", api(views.post_messages))
    router.add_get("/v1/events/counts/sent", api(events.sent_counts))
    router.add_get("/v1/suppressions", api(suppressions.list_suppressions))
    router.add_post("/v1/suppressions", api(suppressions.add_suppression))
    router.add_get("/v1/suppressions/{email:[^/]+}", api(suppressions.get_suppression))
    router.add_delete("/v1/suppressions/{email:[^/]+}", api(suppressions.delete_suppression))
    router.add_get("/v1/account", api(account.get_account))
    router.add_post("/v1/account/resume", api(account.resume_account))
    router.add_get("/v1/topics", api(views.list_topics))
    # A "/" in a topic id is sent as %2F: routes match the encoded path, then decode it.
    router.add_post("/v1/topics/{topic_id:[^/]+}/pause", api(to_sending_node(views.pause_topic)))
    router.add_post("/v1/topics/{topic_id:[^/]+}/resume", api(views.resume_topic))
    router.add_get("/v1/topics/{topic_id:[^/]+}/links", api(clicks.topic_links))
    router.add_get("/v1/topics/{topic_id:[^/]+}", api(views.get_topic))
    router.add_delete("/v1/topics/{topic_id:[^/]+}", api(to_sending_node(views.cancel_topic)))
    # Last: what no route above takes gets a 404 or a 405 in the one error shape.
    router.add_route("*", "/{path:.*}", answers_errors(no_route), name=NO_ROUTE)
