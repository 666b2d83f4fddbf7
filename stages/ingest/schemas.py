"""The API's shapes: request bodies (decoded and checked by msgspec) and answers.

One set of types serves twice: the request structs validate what clients send, and
`openapi.py` turns all of them into the JSON Schemas of `/openapi.json`, so the
documented limits are the enforced ones. Patterns that would give clients an unhelpful
regex error are documented here (`extra_json_schema`) and checked in `campaigns.py`
with messages in words. Unknown fields are ignored everywhere (msgspec's default),
so clients of the original server keep working.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pipeline.jsondepth import MAX_DEPTH, too_deep
from pipeline.unsubscribe import LIST_ID_MAX_CHARS
from stages.ingest.errors import ApiError

T = TypeVar("T")

MAX_TOPIC_CHARS: Final = 255
MAX_SUBJECT_CHARS: Final = 998  # RFC 5322 line length
MAX_EMAIL_CHARS: Final = 320  # a JSON string this long cannot be an address; longer is refused
MAX_REASON_CHARS: Final = 100
NO_CONTROL_CHARACTERS: Final = r"^[^\x00-\x1f\x7f]*$"
NO_SPACE_OR_CONTROL: Final = r"^[^\x00-\x20\x7f]+$"
LIST_ID_PATTERN: Final = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"


def conforms(pattern: str, value: str) -> bool:
    """The check a schema `pattern` documents, made here with the same expression."""
    return re.fullmatch(pattern, value) is not None


TopicId = Annotated[
    str,
    Meta(
        max_length=MAX_TOPIC_CHARS,
        description="Groups recipients for statistics and cancellation; no control characters.",
        extra_json_schema={"pattern": NO_CONTROL_CHARACTERS},
    ),
]
Subject = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_SUBJECT_CHARS,
        description="One line: no CR or LF, not blank.",
        extra_json_schema={"pattern": r"^[^\r\n]*[^\s][^\r\n]*$"},
    ),
]
Content = Annotated[
    str,
    Meta(
        min_length=1,
        description="HTML, sent unchanged apart from the open pixel; a text part is derived from it.",
        extra_json_schema={"pattern": r"[^\s]"},
    ),
]
Email = Annotated[str, Meta(max_length=MAX_EMAIL_CHARS, description="An address; invalid ones go to `rejected`.")]


ListId = Annotated[
    str,
    Meta(
        max_length=LIST_ID_MAX_CHARS,
        description=(
            "The mailing list this message belongs to (List-Id); an unsubscribe from it stops this list only."
            " Letters, digits, '_' and '-', in parts joined by dots."
        ),
        extra_json_schema={"pattern": LIST_ID_PATTERN},
        examples=["newsletter"],
    ),
]


class RecipientIn(Struct):
    """A recipient with the data its templates are rendered with."""

    email: Email
    data: Annotated[
        dict[str, Any],
        Meta(description="Template values: JSON, at most 16 KiB and 5 levels deep; `{{name}}` reads `data.name`."),
    ] = msgspec.field(default_factory=dict)


class MessageIn(Struct):
    """One message to a list of recipients (`emails`, `recipients` with data, or both)."""

    subject: Subject
    content: Content
    emails: Annotated[
        list[Email], Meta(description="Recipients without data. At least one here or in `recipients`.")
    ] = msgspec.field(default_factory=list)
    recipients: list[RecipientIn] | None = None
    text: (
        Annotated[
            str,
            Meta(min_length=1, description="The plain-text part; derived from `content` when absent."),
        ]
        | None
    ) = None
    template: Annotated[
        bool,
        Meta(description="Render `subject`, `content` and `text` as templates (implied by `recipients`)."),
    ] = False
    strict: Annotated[
        bool,
        Meta(description="A variable that some recipient's data lacks is a 400 instead of rendering empty."),
    ] = False
    topic_id: TopicId | None = None
    track_clicks: Annotated[
        bool | None,
        Meta(description="Count clicks: each http(s) link goes through a signed redirect (default: TRACK_CLICKS)."),
    ] = None
    list_id: ListId | None = None
    transactional: Annotated[
        bool,
        Meta(description="A password reset or a receipt: no unsubscribe headers or footer (Gmail's rules exempt it)."),
    ] = False


class CampaignIn(Struct):
    """`POST /v1/messages`: at most MAX_EMAILS_PER_REQUEST recipients in all."""

    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    scheduled_at: (
        Annotated[
            str,
            Meta(
                max_length=64,
                description="ISO 8601; without an offset it is read in TIMEZONE. Past or empty: now.",
                examples=["2026-12-01T09:00:00+09:00"],
            ),
        ]
        | None
    ) = None


class SuppressionIn(Struct):
    """`POST /v1/suppressions`."""

    email: Annotated[str, Meta(max_length=MAX_EMAIL_CHARS, extra_json_schema={"format": "email"})]
    reason: Annotated[str, Meta(min_length=1, max_length=MAX_REASON_CHARS, extra_json_schema={"pattern": r"[^\s]"})] = (
        "manual"
    )


# Answers: documentation only, kept true by tests that check live answers against them.


class ErrorAnswer(Struct):
    """Every answer that is not a success: the original server's `error` string, our `code` and `field`."""

    error: str
    code: str
    field: str | UnsetType = UNSET


class RejectedAddress(Struct):
    email: str
    reason: str


class CampaignAccepted(Struct):
    """Everything in it was committed before this answer."""

    total: int
    success: int
    errors: int
    scheduled: bool
    scheduled_at: str | None
    rejected: list[RejectedAddress]
    duplicates: int
    suppressed: int
    duration_ms: int


class TopicTotals(Struct):
    topic_id: str
    total: int
    pending: int
    sending: int
    sent: int
    failed: int
    cancelled: int
    paused: int
    suppressed: int
    unknown: int
    delivered: int
    bounced: int
    complained: int
    opened: int
    opens: int
    opened_human: Annotated[int, Meta(description="Recipients opened by a person (not a proxy or scanner).")]
    opens_machine: Annotated[int, Meta(description="Pixel loads by Apple's proxy, scanners and the like.")]
    clicked: Annotated[int, Meta(description="Recipients who clicked a tracked link (`track_clicks`).")]
    clicks: Annotated[int, Meta(description="Clicks of tracked links, every one.")]
    clicked_human: Annotated[int, Meta(description="Recipients who clicked, a person.")]
    clicks_machine: Annotated[int, Meta(description="Clicks by scanners and the like.")]
    unsubscribed: Annotated[int, Meta(description="Recipients of this topic who used its unsubscribe link.")]
    first_sent_at: str | None
    last_sent_at: str | None
    # The original server's keys: Created, Processed, Sent, Failed, Stopped.
    request_counts: dict[str, int]
    # Recipients with each kind of SES event, keyed as SES names it (Delivery, Bounce, ...).
    result_counts: dict[str, int]
    paused_reason: Annotated[
        str | None,
        Meta(description="Why the reputation guard holds it (its own rates, or the account's); null otherwise."),
    ]


class LinkClicks(Struct):
    url: str
    clicked: int
    clicks: int


class TopicLinks(Struct):
    topic_id: str
    links: list[LinkClicks]


class TopicSummary(Struct):
    topic_id: str
    total: int
    first_posted_at: str | None
    last_posted_at: str | None


class TopicList(Struct):
    topics: list[TopicSummary]
    limit: int
    offset: int


class TopicCancelled(Struct):
    status: str
    topic_id: str
    cancelled: int


class TopicPaused(Struct):
    topic_id: str
    paused: int


class TopicResumed(Struct):
    topic_id: str
    resumed: int


class Quota(Struct):
    max_24_hour_send: float
    max_send_rate: float
    sent_last_24_hours: float
    remaining: float | None
    # From SES v2 GetAccount, when it said (the v1 fallback does not).
    enforcement_status: str | UnsetType | None = UNSET
    sending_enabled: bool | UnsetType | None = UNSET
    production_access_enabled: bool | UnsetType | None = UNSET


class AccountRates(Struct):
    """Our own figures over the last 24 hours (since the last resume of the account)."""

    window_hours: int
    sent: int
    hard_bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None


class GuardStatus(Struct):
    state: Annotated[str, Meta(description="`sending`, or `holding` all sending until POST /v1/account/resume.")]
    reason: str | None
    resumed_at: str | None
    bounce_rate_limit: float
    complaint_rate_limit: float
    min_sent: int


class SendingRate(Struct):
    rate_limit_per_second: Annotated[
        float, Meta(description="The sender's rate now: the ceiling, less AIMD's cuts after SES throttled.")
    ]
    max_per_second: Annotated[float, Meta(description="MAX_SEND_PER_SECOND, else SES's MaxSendRate at start.")]


class Account(Struct):
    """`GET /v1/account`: SES's quota and status (null on the outbox backend), our rates, the guard."""

    backend: str
    quota: Quota | None
    quota_error: str | UnsetType = UNSET
    sending: SendingRate | UnsetType = UNSET
    rates: AccountRates | UnsetType = UNSET
    guard: GuardStatus | UnsetType = UNSET


class AccountResumedAnswer(Struct):
    resumed: Annotated[bool, Meta(description="False when sending was not held.")]


class SentCounts(Struct):
    count: int
    hours: int
    quota: Quota | None
    quota_error: str | UnsetType = UNSET


class Suppression(Struct):
    email: str
    reason: str
    detail: str | None
    created_at_ms: int
    scope: Annotated[str | None, Meta(description="null: all mail; else the list an unsubscribe left.")]


class SuppressionFound(Suppression):
    """The all-mail entry when there is one, else the first list entry; `scopes` lists them all."""

    scopes: list[str | None]


class SuppressionList(Struct):
    suppressions: list[Suppression]
    next_after: str | None


class SuppressionState(Struct):
    email: str
    suppressed: bool


class WebhookAnswer(Struct):
    status: str
    recorded: int | UnsetType = UNSET
    matched: int | UnsetType = UNSET


class Health(Struct):
    status: str


class Readiness(Struct):
    status: str
    stages: dict[str, str]
    database: str
    # The original server's readiness field: "connected" or "disconnected".
    db: str
    # Whether SES events are taken, and from which SNS topics.
    ses_events: str
    problems: list[str] | UnsetType = UNSET


ANSWERS: Final = (
    ErrorAnswer,
    CampaignAccepted,
    TopicTotals,
    TopicList,
    TopicLinks,
    TopicCancelled,
    TopicPaused,
    TopicResumed,
    SentCounts,
    Account,
    AccountResumedAnswer,
    Suppression,
    SuppressionFound,
    SuppressionList,
    SuppressionState,
    WebhookAnswer,
    Health,
    Readiness,
)
REQUESTS: Final = (CampaignIn, SuppressionIn)


def split_error(text: str) -> tuple[str, str | None]:
    """'Expected `str`, got `int` - at `$.messages[0].subject`' -> (message, 'messages[0].subject')."""
    message, _, where = text.partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    missing = "missing required field `"
    if missing in message:
        name = message.split(missing, 1)[1].split("`", 1)[0]
        path = f"{path}.{name}" if path else name
        message = "is required"
    return message, path or None


def decode(body: bytes, kind: type[T]) -> T:
    """Decode and check a JSON body; ApiError(400) naming the field otherwise."""
    if too_deep(body):
        raise ApiError(400, "invalid_json", f"the body is nested too deeply (at most {MAX_DEPTH} levels)")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as problem:
        message, field = split_error(str(problem))
        raise ApiError(400, "invalid_field", message, field) from None
    except msgspec.DecodeError as problem:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {problem}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
