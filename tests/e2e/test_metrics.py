"""GET /metrics through the real tree: a campaign, its SES events and an open, then a scrape
parsed with prometheus_client's own parser, whose counters must equal the database's counts.

What an operator relies on: the stages are separate processes and the figures are theirs
together (multiprocess mode); the counters match what was committed; a stage's restart
is counted and its counters survive it; and /metrics needs the API's credentials unless
METRICS_PUBLIC=true.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.fake_ses import FakeSes
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, http, post_sns, ses_env, wait_until

API_KEY = "metrics-test-key-" + "k" * 32
AUTH = {"X-API-KEY": API_KEY}
PIXEL_URL = re.compile(r'src="(http://[^"]+/v1/events/open\?[^"]+)"')
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(tree: Tree) -> Samples:
    status, body, headers = tree.get("/metrics", headers=AUTH)
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), (status, body)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def one(tree: Tree, sql: str, *args: Any) -> Any:
    with tree.db() as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_a_scrape_counts_what_the_database_holds(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, fake_sns: FakeSns
) -> None:
    fake_ses.reject = {"rejected@example.com"}
    tree = make_tree({**ses_env(fake_ses.url, MAX_SEND_PER_SECOND="200"), **sns_env(), "API_KEY": API_KEY})
    # Given one suppressed address, then a campaign with a bad address, a repeat and an SES refusal
    assert tree.post("/v1/suppressions", {"email": "gone@example.com"}, headers=AUTH)[0] in (200, 201)
    emails = [f"u{i}@example.com" for i in range(60)]
    emails += ["not-an-address", "u1@example.com", "gone@example.com", "rejected@example.com"]
    status, answer, _ = tree.post("/v1/messages", campaign(emails), headers=AUTH)
    assert status == 200 and answer["duplicates"] == 1 and answer["suppressed"] == 1 and len(answer["rejected"]) == 1
    wait_until(lambda: tree.statuses() == {"sent": 60, "failed": 1}, 20, "60 sent and one refused")
    # SES reports two deliveries and a bounce; one recipient opens the mail
    for kind, address in (("Delivery", "u1@example.com"), ("Delivery", "u2@example.com"), ("Bounce", "u3@example.com")):
        rid, mid = tree_recipient(tree, address)
        assert post_sns(tree, fake_sns.notification(ses_event(kind, mid, address, request_id=rid)))[0] == 200
    pixel = next(PIXEL_URL.search(c.html).group(1) for c in fake_ses.sent() if c.to == "u5@example.com")  # type: ignore[union-attr]
    assert http("GET", pixel.replace("&amp;", "&"))[0] == 200
    wait_until(lambda: one(tree, "SELECT SUM(open_count) FROM recipients") == 1, 10, "the open recorded")

    samples = scrape(tree)
    # Then each counter is what the database holds
    assert value(samples, "ses_sender_recipients_total", outcome="accepted") == one(
        tree, "SELECT COUNT(*) FROM recipients"
    )
    assert value(samples, "ses_sender_recipients_total", outcome="rejected") == 1
    assert value(samples, "ses_sender_recipients_total", outcome="duplicate") == 1
    assert value(samples, "ses_sender_recipients_total", outcome="suppressed") == 1
    sent = one(tree, "SELECT COUNT(*) FROM recipients WHERE status = 'sent'")
    assert value(samples, "ses_sender_sent_recipients_total") == sent == 60
    assert value(samples, "ses_sender_failed_recipients_total", reason="MessageRejected") == 1
    assert value(samples, "ses_sender_backlog_recipients", status="sent") == sent
    assert value(samples, "ses_sender_backlog_recipients", status="failed") == 1
    assert value(samples, "ses_sender_backlog_recipients", status="pending") == 0
    for kind in ("delivery", "bounce"):
        in_db = one(tree, "SELECT COUNT(*) FROM events WHERE kind = ?", kind)
        assert value(samples, "ses_sender_ses_events_total", kind=kind) == in_db > 0
    assert value(samples, "ses_sender_opens_total") == 1
    # Calls and their latencies agree; at 200/s a call carries 10 recipients, so fewer calls than sends
    calls = sum(v for (name, _), v in samples.items() if name == "ses_sender_ses_calls_total")
    timed = sum(v for (name, _), v in samples.items() if name == "ses_sender_ses_call_seconds_count")
    assert calls == timed and 0 < calls < 61
    assert value(samples, "ses_sender_post_messages_seconds_count") == 1
    assert value(samples, "ses_sender_recorder_commit_seconds_count") > 0
    assert value(samples, "ses_sender_scheduler_lateness_seconds_count") > 0
    assert value(samples, "ses_sender_ses_in_flight_recipients") == 0
    assert value(samples, "ses_sender_ses_in_flight_calls") == 0
    assert value(samples, "ses_sender_send_rate_limit_per_second") == 200
    account = tree.get("/v1/account", headers=AUTH)[1]
    assert account["sending"] == {"rate_limit_per_second": 200, "max_per_second": 200}  # and the dashboard shows it
    assert value(samples, "ses_sender_ses_quota_left") > 0

    # When the sender is killed, its restart is counted and what it sent is still counted
    old = tree.children()["sender"]
    os.kill(old, signal.SIGKILL)
    wait_until(
        lambda: tree.children().get("sender") not in (None, old) and tree.get("/ready")[0] == 200, 20, "a new sender"
    )
    samples = scrape(tree)
    assert value(samples, "ses_sender_stage_restarts_total", stage="sender") == 1
    assert value(samples, "ses_sender_sent_recipients_total") == 60


def tree_recipient(tree: Tree, address: str) -> tuple[int, str]:
    with tree.db() as conn:
        row = conn.execute("SELECT id, message_id FROM recipients WHERE email = ?", (address,)).fetchone()
    return int(row[0]), str(row[1])


def test_metrics_need_credentials_unless_public(make_tree: Callable[..., Tree]) -> None:
    protected = make_tree({"API_KEY": API_KEY})
    assert protected.get("/metrics")[0] == 401
    assert protected.get("/metrics", headers=AUTH)[0] == 200
    public = make_tree({"API_KEY": API_KEY, "METRICS_PUBLIC": "true"})
    status, body, _ = public.get("/metrics")
    assert status == 200 and b"ses_sender_backlog_recipients" in body


def test_log_format_json_writes_one_object_per_line(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree({"LOG_FORMAT": "json"})
    assert tree.post("/v1/messages", campaign(["a@example.com"]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 1}, 10, "the mail sent")
    tree.stop()
    lines = [line for line in tree.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {r["process"] for r in records} >= {"MainProcess", "ingest", "sender", "recorder", "scheduler"}
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    assert any(r["logger"] == "supervisor" and "listening on" in r["message"] for r in records)
