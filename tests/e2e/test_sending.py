"""Sending through the real tree: the outbox, moto's SES, and our fake SES."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_ses import FakeSes, max_in_any_window
from tests.helpers import SES_FROM as FROM
from tests.helpers import Tree, campaign, ses_env, wait_until

KOREAN_SUBJECT = "안녕하세요 🎉 <Sale> & \"quotes\" 'too'"
HTML = "<html><body><h1>안녕 😀</h1><p>a &amp; b &lt;tag&gt; \"q\" 'x'</p></body></html>"
PIXEL = re.compile(
    r'<img src="http://127\.0\.0\.1:\d+/v1/events/open\?request_id=(\d+)&amp;sig=[0-9a-f]{32}" '
    r'width="1" height="1" alt="">'
)


@pytest.fixture
def moto_url() -> Iterator[str]:
    """moto's server on 127.0.0.1, with its (process-wide) state reset for this test."""
    import urllib.request

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).read()
    yield url
    server.stop()


def sent_ids(tree: Tree) -> dict[int, str]:
    with tree.db() as conn:
        return dict(conn.execute("SELECT id, email FROM recipients WHERE status = 'sent'").fetchall())


def test_outbox_writes_a_standard_eml_per_recipient(make_tree: Callable[..., Tree]) -> None:
    # With the unsubscribe footer off (test_unsubscribe.py has it on), only the pixel is added.
    tree = make_tree({"UNSUBSCRIBE_FOOTER": "off"})
    body = campaign(["ada@example.com", "alan@example.com"], subject=KOREAN_SUBJECT, content=HTML)
    status, answer, _ = tree.post("/v1/messages", body)
    assert status == 200 and answer["success"] == 2
    wait_until(lambda: tree.statuses() == {"sent": 2}, 10, "both to be sent")
    for recipient_id, address in sent_ids(tree).items():
        raw = (tree.workdir / "outbox" / f"{recipient_id}.eml").read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message["To"] == address
        assert message["Subject"] == KOREAN_SUBJECT
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        # The HTML is untouched apart from exactly one pixel, inserted before </body>.
        assert len(PIXEL.findall(html)) == 1
        # (MIME ends a text part with a line break; the SES path is byte for byte, see moto's test.)
        assert PIXEL.sub("", html).removesuffix("\n") == HTML
        assert html.index("<img") < html.index("</body>")
        assert PIXEL.search(html).group(1) == str(recipient_id)  # type: ignore[union-attr]
        assert "안녕 😀" in text and "a & b <tag>" in text


def test_ses_through_moto_delivers_from_the_verified_sender(make_tree: Callable[..., Tree], moto_url: str) -> None:
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    sesv2 = boto3.client(
        "sesv2",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sesv2.create_email_identity(EmailIdentity="example.org")
    tree = make_tree(ses_env(moto_url, MAX_SEND_PER_SECOND="50", UNSUBSCRIBE_FOOTER="off"))
    emails = ["ada@example.com", "alan@example.com", "grace@example.com"]
    assert tree.post("/v1/messages", campaign(emails, subject=KOREAN_SUBJECT, content=HTML))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 3}, 15, "moto to accept all three")
    # moto has no SendBulkEmail (a 404 page): the sender says so and goes on with SendEmail
    assert "SendBulkEmail is not available here (HTTP 404)" in tree.log()
    backend = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    delivered = {m.destinations["ToAddresses"][0]: m for m in backend.sent_messages}
    assert set(delivered) == set(emails)
    with tree.db() as conn:
        rows = conn.execute("SELECT id, email, message_id FROM recipients").fetchall()
    for recipient_id, address, message_id in rows:
        message = delivered[address]
        assert message.id == message_id
        assert message.source == FROM
        assert message.subject == KOREAN_SUBJECT
        # Byte for byte, apart from the one pixel.
        assert PIXEL.sub("", message.body) == HTML
        assert PIXEL.search(message.body).group(1) == str(recipient_id)  # type: ignore[union-attr]


def test_ses_refusal_from_moto_is_recorded_once_as_failed(make_tree: Callable[..., Tree], moto_url: str) -> None:
    # No identity is verified, so moto refuses the sender with MessageRejected.
    tree = make_tree(ses_env(moto_url, MAX_SEND_PER_SECOND="50"))
    assert tree.post("/v1/messages", campaign(["ada@example.com"]))[0] == 200
    wait_until(lambda: tree.statuses() == {"failed": 1}, 15, "the refusal to be recorded")
    with tree.db() as conn:
        code, message = conn.execute("SELECT error_code, error_message FROM recipients").fetchone()
    assert code == "MessageRejected" and "not verified" in message


def test_rate_is_never_exceeded_and_tags_identify_the_recipient(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.05
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="20", AWS_SES_CONFIGURATION_SET="events"))
    emails = [f"user{i}@example.com" for i in range(80)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="spring sale/2026"))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 80}, 20, "all 80 to be sent")
    arrivals = fake_ses.arrivals()
    assert len(arrivals) == 80
    assert max_in_any_window(arrivals) <= 20
    # Sustained, the rate is close to the limit (80 at 20/s: about 3 s after the first).
    assert arrivals[-1] - arrivals[0] <= 80 / 20 * 1.25
    ids = sent_ids(tree)
    for call in fake_ses.sent():
        assert call.tags["topic_id"] == "spring_sale_2026"
        assert ids[int(call.tags["request_id"])] == call.to
        assert call.request["FromEmailAddress"] == FROM
        assert call.request["ConfigurationSetName"] == "events"


def test_throttled_sends_end_up_sent_and_never_failed(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    fake_ses.throttle_ratio = 0.3
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="100"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(60)]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 60}, 30, "every throttled send to go through")
    assert fake_ses.count("throttled") > 0
    assert len({c.to for c in fake_ses.sent()}) == 60


def test_rejected_addresses_fail_with_the_reason_and_are_not_retried(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.reject = {"bad1@example.com", "bad2@example.com"}
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="100"))
    emails = ["ok1@example.com", "bad1@example.com", "ok2@example.com", "bad2@example.com"]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 2, "failed": 2}, 15, "two sent, two failed")
    with tree.db() as conn:
        failed = conn.execute("SELECT email, error_code, error_message FROM recipients WHERE status = 'failed'")
        assert {row[0]: row[1:] for row in failed} == {
            "bad1@example.com": ("MessageRejected", "Email address is not verified."),
            "bad2@example.com": ("MessageRejected", "Email address is not verified."),
        }
    assert fake_ses.count("rejected") == 2, "a permanent refusal is never retried"


def test_an_outage_pauses_sending_and_loses_nothing(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="40"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(120)]))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 20, 10, "sending to start")
    # When SES goes down for three seconds
    fake_ses.down = True
    time.sleep(3)
    fake_ses.down = False
    recovered = time.monotonic()
    # Then everything is sent, nothing is failed, and sending resumed within seconds
    wait_until(lambda: tree.statuses() == {"sent": 120}, 30, "the backlog to drain after the outage")
    first_after = min(t for t in fake_ses.arrivals("sent") if t >= recovered)
    assert first_after - recovered < 5.0
    assert len({c.to for c in fake_ses.sent()}) == 120


def test_rate_comes_from_ses_when_unset(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    fake_ses.max_send_rate = 7
    tree = make_tree(ses_env(fake_ses.url))
    wait_until(lambda: "at 7.0/s" in tree.log(), 10, "the sender to read MaxSendRate")
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(21)]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 21}, 15, "all to be sent")
    assert max_in_any_window(fake_ses.arrivals()) <= 7


def test_scheduled_work_found_after_restart_keeps_its_time(make_tree: Callable[..., Tree], tmp_path: Path) -> None:
    tree = make_tree()
    due = time.time() + 4
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    status, answer, _ = tree.post("/v1/messages", campaign(["later@example.com"], scheduled_at=when))
    assert status == 200 and answer["scheduled"] is True and answer["scheduled_at"] == when
    tree.stop()
    assert tree.statuses() == {"pending": 1}
    make_tree(workdir=tmp_path)
    eml = tmp_path / "outbox"
    wait_until(lambda: any(eml.glob("*.eml")), 15, "the scheduled mail")
    sent_at = time.time()
    assert int(due) <= sent_at < int(due) + 2.0


def test_a_used_up_daily_quota_holds_the_backlog_instead_of_failing_it(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.max_24_hour_send = 5
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", SES_QUOTA_REFRESH_S="0.5"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(12)]))[0] == 200
    # Given five sends use up the quota, the rest is held: not sent, not failed. (The
    # sender may say so while the fifth outcome is still on its way to the recorder.)
    wait_until(
        lambda: "24-hour quota is used up" in tree.log() and tree.statuses().get("sent", 0) >= 5,
        15,
        "the sender to hold the backlog",
    )
    statuses = tree.statuses()
    assert statuses.get("sent") == 5 and "failed" not in statuses
    assert len(fake_ses.sent()) == 5
    # When the quota frees up, the held recipients go out
    fake_ses.max_24_hour_send = 1000
    wait_until(lambda: tree.statuses() == {"sent": 12}, 15, "the held recipients to be sent")


def test_a_mail_that_cannot_be_built_fails_alone_and_the_rest_is_sent(
    make_tree: Callable[..., Tree], tmp_path: Path
) -> None:
    """An error that repeats for the same recipient fails it once, with the reason; it never
    pauses the queue (as a subject with a line separator, stored before the API refused it)."""
    tree = make_tree()
    assert tree.post("/v1/messages", campaign(["first@example.com"]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 1}, 10, "the first send")
    tree.stop()
    with tree.db(write=True) as conn:
        content = "INSERT INTO contents (subject, html, created_at_ms) VALUES (?, ?, 0) RETURNING id"
        (bad,) = conn.execute(content, ("Hi\vthere", "<p>x</p>")).fetchone()
        (good,) = conn.execute(content, ("Fine", "<p>y</p>")).fetchone()
        rows = [(bad, "broken@example.com"), *((good, f"ok{i}@example.com") for i in range(5))]
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms)"
            " VALUES (?, 'legacy', ?, 'pending', 0, 0)",
            rows,
        )
    tree.start()
    wait_until(lambda: tree.statuses() == {"sent": 6, "failed": 1}, 15, "the good ones sent, the bad one failed")
    with tree.db() as conn:
        code, reason = conn.execute(
            "SELECT error_code, error_message FROM recipients WHERE status = 'failed'"
        ).fetchone()
    assert code == "InvalidMessage" and "cannot be built" in reason
    assert "pausing all sending" not in tree.log()
