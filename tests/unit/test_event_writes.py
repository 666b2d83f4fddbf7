"""SES events in the recorder, on a real SQLite file: what an event may change, when it is
linked, how it is counted, and that no event can take the writer down."""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import ses_events
from pipeline.db.dialect import POSTGRESQL, Conn, dialect
from pipeline.db.queries import original_result_counts
from pipeline.messages import (
    CampaignFacts,
    ClaimDue,
    EventsRecorded,
    EventsRecordedTogether,
    NewMessage,
    RecordEvents,
    RecordEventsTogether,
    RecordOutcomes,
    Refused,
    Sent,
    SesEvent,
    Stored,
    StoreMessages,
)
from stages.recorder import Writer, apply_batch, writes
from stages.recorder.claims import ClaimState, claim_due
from stages.recorder.events import record_events
from tests.helpers import http_status

LOG = logging.getLogger("test")


@pytest.fixture
def conn(store: Conn) -> Conn:
    return store


def claimed(conn: Conn, emails: tuple[str, ...]) -> list[int]:
    message = NewMessage("t", "S", "<p>x</p>", emails)
    writes.store_messages(conn, StoreMessages(1, "ingest", (message,), 0, CampaignFacts(0)), now_ms=0)
    return [r.recipient_id for r in claim_due(conn, ClaimDue(1, "s", 100, 1), ClaimState()).recipients]


def event(sns_id: str, kind: str, email: str, ses_id: str = "", recipient_id: int | None = None) -> SesEvent:
    subtype = "Permanent/General" if kind == "bounce" else "abuse" if kind == "complaint" else ""
    return SesEvent(sns_id, kind, subtype, email, ses_id, recipient_id, 5)


def record(conn: Conn, *seen: SesEvent) -> EventsRecorded:
    return record_events(conn, RecordEvents(9, "ingest", seen[0].sns_message_id, "{}", seen), 10)


def counters(conn: Conn) -> dict[str, int]:
    return dict(conn.execute("SELECT name, n FROM topic_counts WHERE topic_id = 't'").fetchall())


def suppressed(conn: Conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT email FROM suppressions")}


def test_an_early_event_is_linked_when_the_outcome_with_its_message_id_arrives(conn: Conn) -> None:
    """Identity notifications carry no tags, and SNS can beat the sender's outcome batch."""
    (rid,) = claimed(conn, ("early@x.io",))
    answer = record(conn, event("sns-1", "bounce", "early@x.io", ses_id="ses-1"))
    assert (answer.recorded, answer.matched) == (1, 0)
    assert suppressed(conn) == set() and counters(conn).get("bounced", 0) == 0
    writes.record_outcomes(conn, RecordOutcomes(2, "sender", (Sent(rid, "ses-1", 7),)), 20)
    assert conn.execute("SELECT recipient_id FROM events").fetchall() == [(rid,)]
    assert conn.execute("SELECT delivery FROM recipients WHERE id = ?", (rid,)).fetchone() == ("bounced",)
    assert suppressed(conn) == {"early@x.io"}
    assert counters(conn)["event:bounce"] == 1


def test_unmatched_events_and_events_about_other_addresses_suppress_nothing(conn: Conn) -> None:
    (rid,) = claimed(conn, ("ours@x.io",))
    record(conn, event("sns-1", "complaint", "victim@x.io", ses_id="nobody"))
    record(conn, event("sns-2", "bounce", "victim@x.io", recipient_id=rid))
    assert suppressed(conn) == set()
    record(conn, event("sns-3", "complaint", "OURS@x.io", recipient_id=rid))
    assert suppressed(conn) == {"ours@x.io"}


def test_result_counts_count_each_recipient_once_per_kind(conn: Conn) -> None:
    a, b = claimed(conn, ("a@x.io", "b@x.io"))
    record(conn, event("s1", "delivery", "a@x.io", recipient_id=a))
    record(conn, event("s2", "delivery", "a@x.io", recipient_id=a))  # SES sent it twice under two ids
    record(conn, event("s3", "delivery", "b@x.io", recipient_id=b))
    record(conn, event("s4", "bounce", "b@x.io", recipient_id=b))
    record(conn, event("s5", "open", "b@x.io", recipient_id=b))
    record(conn, event("s6", "delivery_delay", "a@x.io", recipient_id=a))
    assert original_result_counts(counters(conn)) == {
        "Delivery": 2,
        "Bounce": 1,
        "Complaint": 0,
        "Open": 1,
        "DeliveryDelay": 1,
    }


def test_a_request_that_raises_anything_rolls_back_alone(conn: Conn) -> None:
    """An id past SQLite's integer range (OverflowError) or a lone surrogate (UnicodeEncodeError)
    once crashed the recorder; now each fails alone, answered, and the batch commits."""
    (rid,) = claimed(conn, ("a@x.io",))
    store = StoreMessages(3, "ingest", (NewMessage("t", "S", "<p>x</p>", ("b@x.io",)),), 0, CampaignFacts(1))
    overflow = RecordEvents(4, "ingest", "sns-o", "{}", (event("sns-o", "delivery", "a@x.io", recipient_id=2**64),))
    surrogate = RecordEvents(5, "ingest", "sns-s", "{}", (event("sns-s", "delivery", "\ud800@x.io"),))
    good = RecordEvents(6, "ingest", "sns-g", "{}", (event("sns-g", "delivery", "a@x.io", recipient_id=rid),))
    replies = dict(
        (r.corr_id, r) for _, r in apply_batch(Writer(conn), LOG, [store, overflow, surrogate, good], Counter())
    )
    assert isinstance(replies[3], Stored)
    assert isinstance(replies[4], Refused) and http_status(replies[4]) == 422
    assert isinstance(replies[5], Refused) and http_status(replies[5]) == 422
    assert isinstance(replies[6], EventsRecorded) and replies[6].matched == 1
    assert conn.execute("SELECT sns_message_id FROM events").fetchall() == [("sns-g",)]
    assert conn.execute("SELECT COUNT(*) FROM sns_messages").fetchone() == (1,)


def test_notifications_handed_over_together_are_each_applied_as_if_alone(conn: Conn) -> None:
    # Given three notifications in one message: one fails, one repeats an SNS message id
    (rid,) = claimed(conn, ("a@x.io",))
    good = RecordEvents(1, "ingest", "sns-g", "{}", (event("sns-g", "delivery", "a@x.io", recipient_id=rid),))
    overflow = RecordEvents(2, "ingest", "sns-o", "{}", (event("sns-o", "bounce", "a@x.io", recipient_id=2**64),))
    again = RecordEvents(3, "ingest", "sns-g", "{}", (event("sns-g", "delivery", "a@x.io", recipient_id=rid),))
    together = RecordEventsTogether(7, "ingest", (good, overflow, again))

    ((reply_to, reply),) = apply_batch(Writer(conn), LOG, [together], Counter())

    # Then one answer holds each one's own, in order; the failed one is rolled back alone,
    # and the repeat is kept once, as SNS's retry of a notification would be
    assert reply_to == "ingest" and isinstance(reply, EventsRecordedTogether) and reply.corr_id == 7
    first, second, third = reply.answers
    assert isinstance(first, EventsRecorded) and (first.corr_id, first.recorded, first.matched) == (1, 1, 1)
    assert isinstance(second, Refused) and second.corr_id == 2 and http_status(second) == 422
    assert isinstance(third, EventsRecorded) and third.corr_id == 3
    assert conn.execute("SELECT sns_message_id FROM events").fetchall() == [("sns-g",)]
    assert suppressed(conn) == set()
    assert counters(conn).get("delivered") == 1


def test_expired_idempotency_keys_are_purged_while_running(conn: Conn) -> None:
    writer = Writer(conn)
    conn.execute("INSERT INTO idempotency_keys VALUES ('old', 'd', '{}', 0)")
    writer.purge_if_due(writes.IDEMPOTENCY_TTL_MS + 1)
    assert conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone() == (0,)
    conn.execute("INSERT INTO idempotency_keys VALUES ('later', 'd', '{}', 1)")
    writer.purge_if_due(writes.IDEMPOTENCY_TTL_MS + 2)  # not due again for an hour
    assert conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone() == (1,)


# --- any SES-shaped JSON: the parser answers or refuses, the recorder never crashes ----------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20) | st.sampled_from(
    ["a@x.io", "\ud800", "", "9" * 30, str(2**63), "1"]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
SNS_IDS = itertools.count()
KINDS = st.sampled_from([*ses_events.KINDS, "Other", ""])


@st.composite
def ses_json(draw: st.DrawFn) -> str:
    tags = draw(st.dictionaries(st.just("request_id"), st.lists(TEXT | st.integers(), max_size=2)) | JSONISH)
    mail = {"messageId": draw(TEXT | JSONISH), "destination": draw(st.lists(TEXT, max_size=3) | JSONISH), "tags": tags}
    body = {
        draw(st.sampled_from(["eventType", "notificationType"])): draw(KINDS),
        "mail": draw(st.just(mail) | JSONISH),
    }
    for key in ("bounce", "complaint", "delivery", "deliveryDelay", "open"):
        if draw(st.booleans()):
            body[key] = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "bouncedRecipients": st.lists(st.fixed_dictionaries({"emailAddress": TEXT}) | JSONISH),
                        "recipients": st.lists(TEXT | JSONISH),
                        "bounceType": TEXT | JSONISH,
                        "timestamp": TEXT | JSONISH,
                    },
                )
            )
    return json.dumps(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=ses_json())
def test_any_ses_shaped_message_is_parsed_or_refused_and_never_crashes_the_recorder(conn: Conn, message: str) -> None:
    claimed_ids = [r[0] for r in conn.execute("SELECT id FROM recipients")] or claimed(conn, ("a@x.io", "b@x.io"))
    sns_id = f"sns-{next(SNS_IDS)}"
    try:
        parsed = ses_events.parse(sns_id, message)
    except ses_events.InvalidEvent:
        return
    if parsed is None:
        return
    request = RecordEvents(1, "ingest", sns_id, message, tuple(parsed))
    (reply,) = [r for _, r in apply_batch(Writer(conn), LOG, [request], Counter())]
    if isinstance(reply, Refused) and dialect(conn) == POSTGRESQL:
        # PostgreSQL's text cannot hold a NUL character: refused as input, nothing stored
        assert "\\u0000" in message and http_status(reply) == 422, reply
        return
    assert isinstance(reply, EventsRecorded), reply
    assert claimed_ids


def test_an_ses_subscription_event_is_an_unsubscribe_from_all_mail_counted_once(conn: Conn) -> None:
    (rid,) = claimed(conn, ("leaver@x.io",))
    record(conn, event("sns-1", "subscription", "leaver@x.io", recipient_id=rid))
    record(conn, event("sns-2", "subscription", "leaver@x.io", recipient_id=rid))
    rows = conn.execute("SELECT email, scope, reason FROM suppressions").fetchall()
    assert rows == [("leaver@x.io", "", "unsubscribe")] and counters(conn)["unsubscribed"] == 1
