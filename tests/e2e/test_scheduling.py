"""Scheduling to the second, fairness between campaigns, cancel, pause and resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from tests.fakes.fake_ses import FakeSes
from tests.helpers import Tree, campaign, http, ses_env, wait_until


def iso_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def seen(fake: FakeSes, topic: str) -> list[float]:
    """Wall-clock arrival times of one topic's recipients at the fake."""
    return sorted(c.wall for c in fake.sent() if c.tags.get("topic_id") == topic)


def ids_by_status(tree: Tree, topic: str, status: str) -> set[int]:
    with tree.db() as conn:
        rows = conn.execute("SELECT id FROM recipients WHERE topic_id = ? AND status = ?", (topic, status))
        return {r[0] for r in rows}


def test_scheduled_message_arrives_within_a_second_of_its_time(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    # A whole second, so the due time is exact: "now + 3 s" rounded up to the next second.
    due = int(time.time()) + 4
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    status, answer, _ = tree.post("/v1/messages", campaign(["later@example.com"], topic_id="later", scheduled_at=when))
    assert status == 200 and answer["scheduled"] is True
    wait_until(lambda: seen(fake_ses, "later"), 10, "the scheduled send")
    arrived = seen(fake_ses, "later")[0]
    assert due <= arrived < due + 1.0


def test_a_time_in_the_past_means_now(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    status, answer, _ = tree.post("/v1/messages", campaign(["a@example.com"], scheduled_at="2020-01-01 00:00:00"))
    assert status == 200 and answer["scheduled"] is False and answer["scheduled_at"] is None
    wait_until(lambda: tree.statuses() == {"sent": 1}, 10, "the send")


def test_two_campaigns_due_together_share_the_rate(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="40"))
    when = iso_in(2)
    big = campaign([f"big{i}@example.com" for i in range(200)], topic_id="big", scheduled_at=when)
    small = campaign([f"small{i}@example.com" for i in range(20)], topic_id="small", scheduled_at=when)
    assert tree.post("/v1/messages", big)[0] == 200
    assert tree.post("/v1/messages", small)[0] == 200
    wait_until(lambda: len(seen(fake_ses, "small")) == 20, 30, "the small campaign")
    # Sharing the rate, the small one is done while the big one is still early on.
    last_small = seen(fake_ses, "small")[-1]
    big_before = sum(1 for t in seen(fake_ses, "big") if t <= last_small)
    assert big_before <= 40, f"the big campaign sent {big_before} before the small one finished"


def test_cancelling_a_scheduled_topic_sends_nothing(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    emails = [f"u{i}@example.com" for i in range(30)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="spring/sale", scheduled_at=iso_in(2)))[0] == 200
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/{quote('spring/sale', safe='')}")
    assert (status, answer) == (200, {"status": "ok", "topic_id": "spring/sale", "cancelled": 30})
    # A marker due after the cancelled campaign's time: once it is sent, that time has passed.
    assert (
        tree.post("/v1/messages", campaign(["marker@example.com"], topic_id="marker", scheduled_at=iso_in(3)))[0] == 200
    )
    wait_until(lambda: seen(fake_ses, "marker"), 15, "the marker")
    assert seen(fake_ses, "spring_sale") == []
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/{quote('spring/sale', safe='')}")
    assert (status, answer) == (200, {"status": "ok", "topic_id": "spring/sale", "cancelled": 0})
    # An unknown topic is not an error, as with the original server: a typo shows as zero.
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/never-posted")
    assert (status, answer) == (200, {"status": "ok", "topic_id": "never-posted", "cancelled": 0})


def test_a_cancel_wins_over_work_claimed_ahead_of_its_time(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    """Work is claimed a moment before it is due and waits in the sender: a cancel then still
    takes all of it, and nothing reaches SES."""
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    due = int(time.time()) + 4
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    emails = [f"u{i}@example.com" for i in range(30)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="ahead", scheduled_at=when))[0] == 200
    wait_until(lambda: len(ids_by_status(tree, "ahead", "sending")) == 30, 10, "the claim ahead of the due time")
    assert time.time() < due, "claimed ahead, not at its time"
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/ahead")
    assert (status, answer) == (200, {"status": "ok", "topic_id": "ahead", "cancelled": 30})
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due + 1))
    marker = campaign(["marker@example.com"], topic_id="marker", scheduled_at=after)
    assert tree.post("/v1/messages", marker)[0] == 200
    wait_until(lambda: seen(fake_ses, "marker"), 15, "the marker, due after the cancelled time")
    assert seen(fake_ses, "ahead") == []
    assert len(ids_by_status(tree, "ahead", "cancelled")) == 30


def test_cancelling_mid_send_stops_everything_not_yet_at_ses_and_counts_exactly(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.02
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    emails = [f"u{i}@example.com" for i in range(2000)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="big"))[0] == 200
    wait_until(lambda: len(seen(fake_ses, "big")) >= 50, 10, "a second of sending")
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/big")
    answered = time.time()
    assert status == 200
    cancelled = answer["cancelled"]
    # Then: every recipient ends in exactly one of sent, failed, cancelled
    wait_until(lambda: set(tree.statuses()) <= {"sent", "failed", "cancelled"}, 10, "in-flight calls to finish")
    statuses = tree.statuses()
    assert statuses.get("cancelled", 0) == cancelled
    assert sum(statuses.values()) == 2000
    # nothing counted as cancelled ever reached SES, and nothing reached it after the answer
    reached = {int(c.tags["request_id"]) for c in fake_ses.sent()}
    assert not reached & ids_by_status(tree, "big", "cancelled")
    assert len(reached) == statuses["sent"]
    assert max(seen(fake_ses, "big")) <= answered


def test_pause_keeps_the_recipients_and_resume_sends_each_once(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(150)], topic_id="news"))[0] == 200
    wait_until(lambda: len(seen(fake_ses, "news")) >= 20, 10, "sending to start")
    status, answer, _ = tree.post("/v1/topics/news/pause", None)
    paused_at = time.time()
    assert status == 200 and answer["paused"] > 0
    assert tree.post("/v1/messages", campaign(["marker@example.com"], topic_id="marker"))[0] == 200
    wait_until(lambda: seen(fake_ses, "marker"), 10, "the marker")
    assert max(seen(fake_ses, "news")) <= paused_at
    topic = tree.get("/v1/topics/news")[1]
    assert topic["paused"] == answer["paused"] and topic["total"] == 150
    status, resumed, _ = tree.post("/v1/topics/news/resume", None)
    assert (status, resumed) == (200, {"topic_id": "news", "resumed": answer["paused"]})
    wait_until(lambda: tree.get("/v1/topics/news")[1]["sent"] == 150, 20, "the rest after resume")
    assert len(seen(fake_ses, "news")) == 150, "each recipient went out once"
    assert tree.post("/v1/topics/unknown/pause", None)[0] == 404
    assert tree.post("/v1/topics/unknown/resume", None)[0] == 404


def test_topic_statistics_count_every_status(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    assert tree.post("/v1/messages", campaign(["a@example.com", "b@example.com"], topic_id="stats"))[0] == 200
    wait_until(lambda: tree.get("/v1/topics/stats")[1].get("sent") == 2, 10, "both sent")
    status, body, _ = tree.get("/v1/topics/stats")
    assert status == 200
    assert body["topic_id"] == "stats" and body["total"] == 2 and body["pending"] == 0
    assert body["first_sent_at"].endswith("Z") and body["last_sent_at"] >= body["first_sent_at"]
    status, unknown, _ = tree.get("/v1/topics/nope")
    assert status == 200 and unknown["total"] == 0 and unknown["request_counts"]["Sent"] == 0
    assert "nope" not in [t["topic_id"] for t in tree.get("/v1/topics")[1]["topics"]]
