"""The OpenAPI 3.1 document served at `/openapi.json`.

Bodies and answers come from the msgspec types in `schemas.py` (the request types are
the validators themselves); this module adds the paths, parameters and statuses.
Tests check live answers against it, and a schemathesis run fuzzes the real tree with it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import msgspec

from stages.ingest import schemas
from stages.ingest.params import HOURS, SUPPRESSIONS_LIMIT, TOPICS_LIMIT, TOPICS_OFFSET, WholeNumber
from stages.ingest.schemas import MAX_EMAIL_CHARS, MAX_TOPIC_CHARS, NO_CONTROL_CHARACTERS, NO_SPACE_OR_CONTROL

Json = dict[str, Any]
REF: Final = "#/components/schemas/{name}"
JSON: Final = "application/json"

# Error answers, shared by reference: (status, description, extra headers).
ERRORS: Final = {
    400: ("BadRequest", "The request is malformed; `field` names what to fix. Nothing was changed.", ()),
    401: ("Unauthorized", "No valid Bearer token (or X-API-KEY).", ("WWW-Authenticate",)),
    403: ("Forbidden", "Not provably from SNS (signature, certificate host, topic).", ()),
    404: ("NotFound", "Nothing by that name.", ()),
    408: ("RequestTimeout", "The body did not all arrive within HTTP_BODY_TIMEOUT_S; nothing was changed.", ()),
    413: ("TooLarge", "The body is over the limit for this route.", ()),
    415: ("UnsupportedMediaType", "The body must be application/json.", ()),
    422: (
        "Unprocessable",
        "The Idempotency-Key was used before with a different body, or the request could not be applied.",
        (),
    ),
    429: ("TooManyRequests", "Over API_RATE_LIMIT for this client; retry after Retry-After.", ("Retry-After",)),
    503: ("Unavailable", "A stage could not answer in time; nothing was acknowledged. Retry.", ("Retry-After",)),
}
HEADERS: Final = {
    "WWW-Authenticate": {"description": "`Bearer realm=...`", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
}


def ref(name: str) -> Json:
    return {"$ref": REF.format(name=name)}


def json_answer(description: str, schema: Json) -> Json:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def query(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def number_query(parameter: WholeNumber, description: str) -> Json:
    return query(parameter.name, description, parameter.schema())


def path(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def html_answer(description: str) -> Json:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def text_answer(description: str) -> Json:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


CLICK_TOKEN: Final = path("token", "The signed token from the mail's link.", {"type": "string", "maxLength": 64})
UNSUBSCRIBE_TOKEN: Final = path(
    "token", "The signed token from List-Unsubscribe or the mail's link.", {"type": "string", "maxLength": 300}
)
TOPIC_ID: Final = path(
    "topic_id",
    "The topic; URL-encode it (a `/` as `%2F`).",
    {"type": "string", "minLength": 1, "maxLength": MAX_TOPIC_CHARS, "pattern": NO_CONTROL_CHARACTERS},
)
EMAIL: Final = path(
    "email",
    "The address (matched case-insensitively).",
    {"type": "string", "minLength": 1, "maxLength": MAX_EMAIL_CHARS, "pattern": NO_SPACE_OR_CONTROL},
)


def operation(
    operation_id: str,
    summary: str,
    answers: dict[int | str, Json],
    errors: tuple[int, ...] = (),
    *,
    tag: str,
    body: Json | None = None,
    parameters: tuple[Json, ...] = (),
    public: bool = False,
    description: str | None = None,
) -> Json:
    """One operation; the API's own errors (401, 429) are added unless it is public."""
    statuses = errors if public else (*errors, 401, 429)
    responses: dict[str, Json] = {str(status): answer for status, answer in answers.items()}
    for status in sorted(set(statuses)):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    op: Json = {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


def json_body(name: str) -> Json:
    return {"required": True, "content": {JSON: {"schema": ref(name)}}}


def paths() -> Json:
    topics = "Topics"
    held = (400, 404, 503)
    return {
        "/v1/messages": {
            "post": operation(
                "postMessages",
                "Store a campaign durably, then send it now or at `scheduled_at`",
                {200: json_answer("Stored (committed) before this answer.", ref("CampaignAccepted"))},
                (400, 408, 413, 415, 422, 503),
                tag="Messages",
                body=json_body("CampaignIn"),
                parameters=(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Repeat a POST safely: the same key and body replay the first answer.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[ -~]+$"},
                    },
                ),
                description="Invalid addresses are listed in `rejected`, not refused; unknown fields are ignored.",
            )
        },
        "/v1/account": {
            "get": operation(
                "getAccount",
                "The SES account, our own rolling bounce and complaint rates, and the reputation guard",
                {200: json_answer("The account.", ref("Account"))},
                (503,),
                tag="Account",
            )
        },
        "/v1/account/resume": {
            "post": operation(
                "resumeAccount",
                "Let sending go on after the guard held it; the guard then judges only what comes after",
                {200: json_answer("Resumed (or it was not held).", ref("AccountResumedAnswer"))},
                (503,),
                tag="Account",
            )
        },
        "/v1/topics": {
            "get": operation(
                "listTopics",
                "Topics with their totals, newest first",
                {200: json_answer("A page of topics.", ref("TopicList"))},
                (400,),
                tag=topics,
                parameters=(
                    number_query(TOPICS_LIMIT, "Page size."),
                    number_query(TOPICS_OFFSET, "Topics to skip."),
                ),
            )
        },
        "/v1/topics/{topic_id}": {
            "get": operation(
                "getTopic",
                "Totals for one topic",
                {
                    200: json_answer(
                        "Counts by status and by result; all zeros for a topic never posted to, as the original"
                        " server answered.",
                        ref("TopicTotals"),
                    )
                },
                (400,),
                tag=topics,
                parameters=(TOPIC_ID,),
            ),
            "delete": operation(
                "cancelTopic",
                "Cancel every recipient not yet handed to SES",
                {200: json_answer("How many were cancelled (0 for an unknown topic).", ref("TopicCancelled"))},
                (400, 503),
                tag=topics,
                parameters=(TOPIC_ID,),
            ),
        },
        "/v1/topics/{topic_id}/pause": {
            "post": operation(
                "pauseTopic",
                "Stop sending a topic, keeping its recipients",
                {200: json_answer("How many were paused.", ref("TopicPaused"))},
                held,
                tag=topics,
                parameters=(TOPIC_ID,),
            )
        },
        "/v1/topics/{topic_id}/resume": {
            "post": operation(
                "resumeTopic",
                "Queue a paused topic again at its original times",
                {200: json_answer("How many were resumed.", ref("TopicResumed"))},
                held,
                tag=topics,
                parameters=(TOPIC_ID,),
            )
        },
        "/v1/events/counts/sent": {
            "get": operation(
                "sentCounts",
                "Recipients sent in the last hours, and the SES 24-hour quota",
                {200: json_answer("`quota` is null (with `quota_error`) when SES cannot be asked.", ref("SentCounts"))},
                (400,),
                tag="Events",
                parameters=(number_query(HOURS, "Hours back."),),
            )
        },
        "/v1/events/results": {
            "post": operation(
                "snsResults",
                "The AWS SNS webhook for SES delivery, bounce and complaint events",
                {200: json_answer("Recorded (committed), confirmed, noted or ignored.", ref("WebhookAnswer"))},
                (400, 403, 408, 413, 503),
                tag="Events",
                public=True,
                parameters=(
                    {
                        "name": "x-amz-sns-message-type",
                        "in": "header",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"],
                        },
                    },
                ),
                body={
                    "required": True,
                    "description": "The SNS envelope (JSON), signed by SNS; sent as text/plain by SNS.",
                    "content": {"text/plain": {"schema": {"type": "string"}}, JSON: {"schema": {"type": "object"}}},
                },
                description="Public; only messages signed by SNS (and from SNS_TOPIC_ARNS, when set) count.",
            )
        },
        "/v1/events/open": {
            "get": operation(
                "openPixel",
                "The 1x1 open-tracking image",
                {
                    200: {
                        "description": "Always the image; an open counts only for a link this server signed.",
                        "content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}},
                    }
                },
                tag="Events",
                public=True,
                parameters=(
                    query("request_id", "The recipient, from the link in the email.", {"type": "string"}),
                    query("sig", "The link's signature.", {"type": "string"}),
                ),
            )
        },
        "/v1/events/click/{token}": {
            "get": operation(
                "clickRedirect",
                "A tracked link: 302 to its URL when the token is ours, counted as a click",
                {
                    302: {
                        "description": "To the link's own URL.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    404: html_answer("A forged token or an unknown link; never a redirect."),
                },
                tag="Events",
                public=True,
                parameters=(
                    path("token", "The signed token from the mail's link.", {"type": "string", "maxLength": 64}),
                ),
            )
        },
        "/v1/topics/{topic_id}/links": {
            "get": operation(
                "topicLinks",
                "The topic's tracked links, with unique and total clicks",
                {200: json_answer("The links, most clicked first.", ref("TopicLinks"))},
                (400,),
                tag=topics,
                parameters=(TOPIC_ID,),
            )
        },
        "/v1/unsubscribe/{token}": {
            "get": operation(
                "unsubscribePage",
                "The unsubscribe link, opened: a page with a button; changes nothing",
                {
                    200: html_answer("The page; its button POSTs to the same URL."),
                    404: html_answer("A forged or unknown link."),
                },
                tag="Unsubscribe",
                public=True,
                parameters=(UNSUBSCRIBE_TOKEN,),
            ),
            "post": operation(
                "oneClickUnsubscribe",
                "One-click unsubscribe (RFC 8058): at once, idempotent, never a redirect",
                {
                    200: html_answer("Unsubscribed (or it already was)."),
                    404: html_answer("A forged or unknown link; nothing changed."),
                    503: html_answer("Not confirmed in time; nothing is promised, try again."),
                },
                tag="Unsubscribe",
                public=True,
                parameters=(UNSUBSCRIBE_TOKEN,),
                description=(
                    "Mail clients POST `List-Unsubscribe=One-Click` (urlencoded or multipart); the body is not needed."
                    " The address leaves the message's list, or all mail when it named none, and its unsent mail"
                    " in that scope is withdrawn before it reaches SES."
                ),
            ),
        },
        "/v1/suppressions": {
            "get": operation(
                "listSuppressions",
                "Suppressed addresses, in address order",
                {200: json_answer("A page; pass `next_after` as `after` for the next.", ref("SuppressionList"))},
                (400,),
                tag="Suppressions",
                parameters=(
                    number_query(SUPPRESSIONS_LIMIT, "Page size."),
                    query("after", "Start after this address.", {"type": "string"}),
                ),
            ),
            "post": operation(
                "addSuppression",
                "Suppress an address by hand",
                {
                    201: json_answer("Added.", ref("SuppressionState")),
                    200: json_answer("It was already suppressed.", ref("SuppressionState")),
                },
                (400, 408, 413, 415, 503),
                tag="Suppressions",
                body=json_body("SuppressionIn"),
            ),
        },
        "/v1/suppressions/{email}": {
            "get": operation(
                "getSuppression",
                "Whether and why an address is suppressed",
                {200: json_answer("Suppressed.", ref("SuppressionFound"))},
                (400, 404),
                tag="Suppressions",
                parameters=(EMAIL,),
            ),
            "delete": operation(
                "deleteSuppression",
                "Send to an address again",
                {200: json_answer("No longer suppressed.", ref("SuppressionState"))},
                (400, 404, 503),
                tag="Suppressions",
                parameters=(EMAIL,),
            ),
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                {200: json_answer("OpenAPI 3.1.", {"type": "object"})},
                tag="Operations",
                public=True,
            )
        },
        "/docs": {
            "get": operation(
                "docs",
                "This document, readable (Swagger UI, served from this server: no CDN)",
                {200: {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
                tag="Operations",
                public=True,
            )
        },
        "/dashboard": {
            "get": operation(
                "dashboard",
                "A live dashboard of topics, the account and the stages (static; its data comes from this API)",
                {200: html_answer("An HTML page; its script and stylesheet are under /dashboard/static/.")},
                tag="Operations",
                public=True,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics from every stage, and the backlog by status",
                {200: text_answer("Prometheus's text exposition format (version 0.0.4).")},
                tag="Operations",
                description="Authenticated as the API, unless METRICS_PUBLIC=true (docs/metrics.md).",
            )
        },
        "/health": {
            "get": operation(
                "health",
                "Liveness",
                {200: json_answer("The API answers.", ref("Health"))},
                tag="Operations",
                public=True,
            )
        },
        "/ready": {
            "get": operation(
                "ready",
                "Readiness: every stage runs, the database reads, the recorder answers",
                {
                    200: json_answer("Ready.", ref("Readiness")),
                    503: json_answer("Not ready; `problems` says why.", ref("Readiness")),
                },
                tag="Operations",
                public=True,
            )
        },
    }


def package_version() -> str:
    try:
        return version("ses-sender")
    except PackageNotFoundError:
        return "0+unknown"


def build_document() -> Json:
    """The whole document, as plain JSON-ready data."""
    _, schemas_by_name = msgspec.json.schema_components((*schemas.REQUESTS, *schemas.ANSWERS), ref_template=REF)
    responses = {
        name: {
            "description": description,
            "headers": {header: HEADERS[header] for header in headers},
            "content": {JSON: {"schema": ref("ErrorAnswer")}},
        }
        for name, description, headers in ERRORS.values()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ses-sender",
            "version": package_version(),
            "description": "Self-hosted bulk email through AWS SES: campaigns, scheduling, cancellation, events.",
        },
        "paths": paths(),
        "components": {
            "schemas": schemas_by_name,
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256, JWT_SECRET)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
