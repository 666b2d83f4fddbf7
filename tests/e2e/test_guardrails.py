"""The reputation guard against the real tree, the fake SES and signed SNS events: a topic
whose hard bounces cross the limit pauses by itself, and complaints across the account
hold all sending, until the operator resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.fakes.fake_ses import FakeSes
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, post_sns, ses_env, wait_until


def guarded_tree(make_tree: Callable[..., Tree], fake_ses: FakeSes, **extra: str) -> Tree:
    return make_tree({**ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"), **sns_env(), "GUARD_MIN_SENT": "10", **extra})


def sent_rows(tree: Tree, topic: str) -> list[tuple[int, str, str]]:
    with tree.db() as conn:
        return conn.execute(
            "SELECT id, email, message_id FROM recipients WHERE topic_id = ? AND status = 'sent' ORDER BY id", (topic,)
        ).fetchall()


def report(tree: Tree, fake_sns: FakeSns, kind: str, rows: list[tuple[int, str, str]]) -> None:
    for rid, email, message_id in rows:
        assert post_sns(tree, fake_sns.notification(ses_event(kind, message_id, email, request_id=rid)))[0] == 200


def topic(tree: Tree, topic_id: str) -> dict[str, Any]:
    return dict(tree.get(f"/v1/topics/{topic_id}")[1])


def to_ses(fake: FakeSes, topic_id: str) -> list[str]:
    return [c.to for c in fake.sent() if c.tags.get("topic_id") == topic_id]


def test_a_bounce_storm_pauses_its_topic_and_resume_sends_the_rest_exactly_once(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, fake_sns: FakeSns
) -> None:
    tree = guarded_tree(make_tree, fake_ses)
    # Given a clean list sent first, so the account as a whole stays under the limit
    assert tree.post("/v1/messages", campaign([f"c{i}@example.com" for i in range(150)], topic_id="clean"))[0] == 200
    wait_until(lambda: len(sent_rows(tree, "clean")) == 150, 15, "the clean list")
    emails = [f"u{i}@example.com" for i in range(300)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="storm"))[0] == 200
    wait_until(lambda: len(sent_rows(tree, "storm")) >= 12, 15, "a dozen sent")
    # When hard bounces come back for three of them (over 4% of the topic, under it for the account)
    reported_at = time.monotonic()
    report(tree, fake_sns, "Bounce", sent_rows(tree, "storm")[:3])
    # Then the topic pauses by itself within 5 seconds, saying why
    paused = wait_until(lambda: (t := topic(tree, "storm"))["paused"] and t, 5, "the guard to pause the topic")
    assert time.monotonic() - reported_at < 5
    assert "hard bounce rate" in paused["paused_reason"] and "GUARD_BOUNCE_RATE" in paused["paused_reason"]
    in_flight = paused["sending"]
    # Nothing more is dispatched: while another topic goes out, the storm gets no new sends
    assert tree.post("/v1/messages", campaign(["x@example.com", "y@example.com"], topic_id="other"))[0] == 200
    wait_until(lambda: len(to_ses(fake_ses, "other")) == 2, 10, "the other topic to be sent")
    assert len(to_ses(fake_ses, "storm")) <= paused["sent"] + in_flight
    # When the operator resumes, the rest goes out, each address exactly once
    assert tree.post("/v1/topics/storm/resume", None)[0] == 200
    wait_until(lambda: len(to_ses(fake_ses, "storm")) == 300, 20, "the rest of the storm")
    assert sorted(to_ses(fake_ses, "storm")) == sorted(emails)
    wait_until(lambda: topic(tree, "storm")["sent"] == 300, 5, "every outcome recorded")
    assert topic(tree, "storm")["paused_reason"] is None  # the guard judges only what comes after the resume


def test_complaints_across_the_account_hold_all_sending_until_resumed(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, fake_sns: FakeSns
) -> None:
    tree = guarded_tree(make_tree, fake_ses, GUARD_MIN_SENT="20")
    # Three topics of 8: each too small to judge alone (20), 24 for the account
    for name in ("a", "b", "c"):
        assert (
            tree.post("/v1/messages", campaign([f"{name}{i}@example.com" for i in range(8)], topic_id=name))[0] == 200
        )
    wait_until(lambda: all(len(sent_rows(tree, n)) == 8 for n in "abc"), 15, "24 sent")
    status, account, _ = tree.get("/v1/account")
    assert status == 200 and account["guard"]["state"] == "sending" and account["rates"]["sent"] == 24
    assert account["quota"]["enforcement_status"] == "HEALTHY"
    # When one complaint comes back (1 in 24, over 0.08%)
    report(tree, fake_sns, "Complaint", sent_rows(tree, "b")[:1])
    wait_until(lambda: tree.get("/v1/account")[1]["guard"]["state"] == "holding", 5, "the account guard to hold")
    account = tree.get("/v1/account")[1]
    assert "complaint rate" in account["guard"]["reason"] and account["rates"]["complaints"] == 1
    # Then new mail waits, and its topic shows the account's reason
    assert tree.post("/v1/messages", campaign(["late@example.com"], topic_id="late"))[0] == 200
    assert topic(tree, "late")["paused_reason"] == account["guard"]["reason"]
    # Until the operator resumes: only then does it reach SES
    resumed_at = time.time()
    status, answer, _ = tree.post("/v1/account/resume", None)
    assert status == 200 and answer == {"resumed": True}
    wait_until(lambda: to_ses(fake_ses, "late"), 10, "the held mail after the resume")
    assert all(c.wall >= resumed_at for c in fake_ses.sent() if c.tags.get("topic_id") == "late")
    assert tree.get("/v1/account")[1]["guard"]["state"] == "sending"
