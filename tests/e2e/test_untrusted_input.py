"""Trust by default, on the real tree: events only from allow-listed topics, and no input
from any client can crash a stage or write more than it should."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes.fake_sns import TOPIC_ARN, FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, post_sns, sent_recipients


def rows(tree: Tree, sql: str) -> Any:
    with tree.db() as conn:
        return conn.execute(sql).fetchall()


def test_without_an_allow_list_ses_events_are_off_and_say_so(make_tree: Callable[..., Tree], fake_sns: FakeSns) -> None:
    """Anyone can sign a fake bounce with a topic of their own: no topic is trusted by default."""
    tree = make_tree({key: value for key, value in sns_env().items() if key != "SNS_TOPIC_ARNS"})
    assert tree.post("/v1/messages", campaign(["a@example.com"]))[0] == 200
    ((rid, email, mid),) = sent_recipients(tree, 1)
    bounce = fake_sns.notification(ses_event("Bounce", mid, email, request_id=rid))
    status, answer = post_sns(tree, bounce)
    assert status == 403 and "SNS_TOPIC_ARNS" in answer["error"]
    assert post_sns(tree, fake_sns.confirmation())[0] == 403
    assert not any("ConfirmSubscription" in r for r in fake_sns.requests), "an untrusted topic is never confirmed"
    assert rows(tree, "SELECT COUNT(*) FROM events") == [(0,)]
    assert tree.get(f"/v1/suppressions/{email}")[0] == 404
    assert tree.get("/ready")[1]["ses_events"] == "off until SNS_TOPIC_ARNS is set"
    assert "SES events are off until SNS_TOPIC_ARNS is set" in tree.log()


def test_any_topic_only_by_explicit_opt_out_with_a_warning(make_tree: Callable[..., Tree], fake_sns: FakeSns) -> None:
    env = {key: value for key, value in sns_env(SNS_ALLOW_ANY_TOPIC="true").items() if key != "SNS_TOPIC_ARNS"}
    tree = make_tree(env)
    other = "arn:aws:sns:us-east-1:210987654321:somebody-elses"
    assert post_sns(tree, fake_sns.notification(ses_event("Delivery", "m", "x@example.com"), topic_arn=other))[0] == 200
    assert "SNS_ALLOW_ANY_TOPIC=true: SES events are accepted from any SNS topic" in tree.log()
    assert tree.get("/ready")[1]["ses_events"].startswith("on, from any SNS topic")


def test_an_event_about_no_recipient_of_ours_changes_nothing(make_tree: Callable[..., Tree], fake_sns: FakeSns) -> None:
    """Kept for reconciliation, but no suppression and no counts: guessed ids must not hurt."""
    tree = make_tree(sns_env())
    assert tree.post("/v1/messages", campaign(["a@example.com"]))[0] == 200
    ((rid, email, _mid),) = sent_recipients(tree, 1)
    stranger = fake_sns.notification(ses_event("Complaint", "no-such-id", "victim@example.com"))
    assert post_sns(tree, stranger)[1] == {"status": "recorded", "recorded": 1, "matched": 0}
    # A tag that names our recipient, about another address, suppresses neither of them.
    aimed = ses_event("Bounce", "other-id", "victim@example.com", request_id=rid)
    assert post_sns(tree, fake_sns.notification(aimed))[1]["matched"] == 1
    assert tree.get("/v1/suppressions/victim@example.com")[0] == 404
    assert tree.get(f"/v1/suppressions/{email}")[0] == 404
    assert tree.get("/v1/topics/t1")[1]["complained"] == 0
    assert rows(tree, "SELECT COUNT(*) FROM events WHERE recipient_id IS NULL") == [(1,)]


def tagged(kind: str, email: str, request_id: str) -> dict[str, Any]:
    """An SES event whose request_id tag is exactly `request_id`."""
    event = ses_event(kind, "m-tagged", email)
    event["mail"]["tags"] = {"request_id": [request_id]}
    return event


def deliveries(count: int) -> dict[str, Any]:
    event = ses_event("Delivery", "m-many", "r0@example.com")
    event["delivery"]["recipients"] = [f"r{i}@example.com" for i in range(count)]
    return event


def poisons(fake: FakeSns, email: str) -> dict[str, dict[str, Any]]:
    """Envelopes that crashed the recorder (and so the tree) before, each genuinely signed."""
    plain = json.dumps(ses_event("Delivery", "m-plain", email))
    return {
        "request_id 2**63": fake.notification(tagged("Bounce", email, str(2**63))),
        "request_id of 5,000 digits": fake.notification(tagged("Delivery", email, "9" * 5000)),
        "lone surrogate in Message": fake.notification(plain.replace(email, "\\ud800" + email)),
        "51 recipients": fake.notification(deliveries(51)),
        "deep nesting": fake.notification(plain[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"),
    }


def test_poisoned_events_replayed_never_restart_a_stage(make_tree: Callable[..., Tree], fake_sns: FakeSns) -> None:
    """Each poisoned envelope ten times, as SNS and an attacker would replay it: 4xx, nothing
    stored, no stage restarts, and a valid event afterwards is recorded."""
    tree = make_tree(sns_env())
    assert tree.post("/v1/messages", campaign(["p@example.com"]))[0] == 200
    ((rid, email, mid),) = sent_recipients(tree, 1)
    pids = tree.children()
    for name, envelope in poisons(fake_sns, email).items():
        for _ in range(10):
            status, answer = post_sns(tree, envelope)
            assert 400 <= status < 500, (name, status, answer)
    assert tree.children() == pids, "no stage restarted"
    assert rows(tree, "SELECT COUNT(*) FROM events") == [(0,)]
    good = fake_sns.notification(ses_event("Delivery", mid, email, request_id=rid))
    assert post_sns(tree, good)[1] == {"status": "recorded", "recorded": 1, "matched": 1}
    assert tree.get("/v1/topics/t1")[1]["delivered"] == 1
    assert "Traceback" not in tree.log()


def test_a_notification_naming_50_recipients_stores_its_message_once(
    make_tree: Callable[..., Tree], fake_sns: FakeSns
) -> None:
    """One POST cannot write gigabytes: the raw message is kept once, not once per recipient."""
    tree = make_tree(sns_env())
    delivery = deliveries(50)
    delivery["padding"] = "x" * 100_000
    status, answer = post_sns(tree, fake_sns.notification(delivery))
    assert status == 200 and answer["recorded"] == 50
    assert rows(tree, "SELECT COUNT(*), SUM(LENGTH(raw)) > 100000 FROM sns_messages") == [(1, 1)]
    if tree.env["DATABASE_URL"].startswith("sqlite"):
        columns = [c[1] for c in rows(tree, "PRAGMA table_info(events)")]
    else:
        columns = [
            c[0] for c in rows(tree, "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'")
        ]
    assert "occurred_at_ms" in columns and "raw" not in columns


@pytest.mark.parametrize("topic", [TOPIC_ARN])
def test_the_allow_listed_topic_is_confirmed(make_tree: Callable[..., Tree], fake_sns: FakeSns, topic: str) -> None:
    tree = make_tree(sns_env())
    assert post_sns(tree, fake_sns.confirmation(topic_arn=topic)) == (200, {"status": "confirmed"})
