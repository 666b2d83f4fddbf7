"""What comes back after a send, through the real tree: SNS events, opens, suppression, stats."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes.fake_ses import FakeSes
from tests.fakes.fake_sns import TOPIC_ARN, FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, http, post_sns, sent_recipients, ses_env, wait_until

PIXEL_URL = re.compile(r'src="(http://[^"]+/v1/events/open\?[^"]+)"')


def event_rows(tree: Tree) -> int:
    with tree.db() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


@pytest.fixture
def tree(make_tree: Callable[..., Tree]) -> Tree:
    return make_tree(sns_env())


def test_both_formats_are_recorded_and_matched_by_tag_and_by_message_id(tree: Tree, fake_sns: FakeSns) -> None:
    assert tree.post("/v1/messages", campaign(["a@example.com", "b@example.com", "c@example.com"]))[0] == 200
    (a, a_mail, _a_mid), (_b, b_mail, b_mid), (c, c_mail, c_mid) = sent_recipients(tree, 3)
    # Configuration-set event publishing, matched by our request_id tag (even with a wrong message id).
    delivered = ses_event("Delivery", "not-the-real-id", a_mail, request_id=a)
    assert post_sns(tree, fake_sns.notification(delivered))[0] == 200
    # Identity notifications carry no tags: matched by SES's message id.
    bounced = ses_event("Bounce", b_mid, b_mail, identity_format=True)
    status, answer = post_sns(tree, fake_sns.notification(bounced, version="1"))
    assert status == 200 and answer == {"status": "recorded", "recorded": 1, "matched": 1}
    complained = ses_event("Complaint", c_mid, c_mail, request_id=c)
    assert post_sns(tree, fake_sns.notification(complained, subject="Amazon SES Email Event Notification"))[0] == 200
    topic = tree.get("/v1/topics/t1")[1]
    assert (topic["delivered"], topic["bounced"], topic["complained"]) == (1, 1, 1)
    # The original server's result_counts: SES's event names, each recipient counted once.
    assert topic["result_counts"] == {"Delivery": 1, "Bounce": 1, "Complaint": 1, "Open": 0}
    with tree.db() as conn:
        kinds = dict(conn.execute("SELECT kind, subtype FROM events WHERE recipient_id IS NOT NULL").fetchall())
    assert kinds == {"delivery": "", "bounce": "Permanent/General", "complaint": "abuse"}


def test_the_same_sns_message_twice_is_recorded_once(tree: Tree, fake_sns: FakeSns) -> None:
    assert tree.post("/v1/messages", campaign(["a@example.com"]))[0] == 200
    [(rid, mail, _)] = sent_recipients(tree, 1)
    envelope = fake_sns.notification(ses_event("Delivery", "m", mail, request_id=rid))
    assert post_sns(tree, envelope)[1]["recorded"] == 1
    assert post_sns(tree, envelope)[1]["recorded"] == 0
    assert event_rows(tree) == 1


def test_a_delivery_after_a_bounce_does_not_undo_the_bounce(tree: Tree, fake_sns: FakeSns) -> None:
    assert tree.post("/v1/messages", campaign(["a@example.com"]))[0] == 200
    [(rid, mail, _)] = sent_recipients(tree, 1)
    bounce = ses_event("Bounce", "m", mail, request_id=rid, bounce_type="Transient", bounce_subtype="MailboxFull")
    post_sns(tree, fake_sns.notification(bounce))
    post_sns(tree, fake_sns.notification(ses_event("Delivery", "m", mail, request_id=rid)))
    topic = tree.get("/v1/topics/t1")[1]
    assert (topic["bounced"], topic["delivered"]) == (1, 0)
    # A transient bounce does not suppress the address.
    assert tree.get(f"/v1/suppressions/{mail}")[0] == 404


def test_unknown_recipients_and_non_ses_messages_get_200(tree: Tree, fake_sns: FakeSns) -> None:
    status, answer = post_sns(tree, fake_sns.notification(ses_event("Delivery", "nobody-knows", "x@example.com")))
    assert status == 200 and answer == {"status": "recorded", "recorded": 1, "matched": 0}
    with tree.db() as conn:
        assert conn.execute("SELECT recipient_id FROM events").fetchone() == (None,)
    plain = fake_sns.notification("Successfully validated SNS topic for Amazon SES event publishing.")
    assert post_sns(tree, plain) == (200, {"status": "ignored"})
    assert post_sns(tree, fake_sns.notification("Hello world", subject="Test"))[1] == {"status": "ignored"}


def test_subscription_is_confirmed_only_on_the_sns_host(tree: Tree, fake_sns: FakeSns) -> None:
    assert post_sns(tree, fake_sns.confirmation()) == (200, {"status": "confirmed"})
    assert any("Action=ConfirmSubscription" in r for r in fake_sns.requests)
    fake_sns.requests.clear()
    foreign = f"http://localhost:{fake_sns.port}/?Action=ConfirmSubscription&TopicArn={TOPIC_ARN}&Token=t"
    status, _answer = post_sns(tree, fake_sns.confirmation(subscribe_url=foreign))
    assert status == 403
    assert fake_sns.requests == [], "a SubscribeURL on a foreign host is never fetched"
    assert post_sns(tree, fake_sns.confirmation(kind="UnsubscribeConfirmation"))[0] == 200


def forgeries(fake_sns: FakeSns) -> dict[str, dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    event = ses_event("Delivery", "m", "a@example.com")
    tampered = fake_sns.notification(event)
    tampered["Message"] = tampered["Message"].replace("Delivery", "Bounce")
    return {
        "tampered": tampered,
        "wrong key": fake_sns.notification(event)
        | fake_sns.sign(
            {k: v for k, v in fake_sns.notification(event).items() if k not in ("Signature",)},
            key=rsa.generate_private_key(65537, 2048),
        ),
        "certificate elsewhere": fake_sns.notification(
            event, SigningCertURL=f"http://localhost:{fake_sns.port}/SimpleNotificationService-test.pem"
        ),
        "unknown topic": fake_sns.notification(event, topic_arn="arn:aws:sns:us-east-1:123456789012:other"),
        "no signature": {k: v for k, v in fake_sns.notification(event).items() if k != "Signature"},
        "no certificate": {k: v for k, v in fake_sns.notification(event).items() if k != "SigningCertURL"},
    }


@pytest.mark.parametrize(
    "forgery", ["tampered", "wrong key", "certificate elsewhere", "unknown topic", "no signature", "no certificate"]
)
def test_forged_messages_get_403_and_record_nothing(tree: Tree, fake_sns: FakeSns, forgery: str) -> None:
    fake_sns.requests.clear()
    status, answer = post_sns(tree, forgeries(fake_sns)[forgery])
    assert status == 403 and answer["code"] == "forbidden"
    assert event_rows(tree) == 0
    assert not any("localhost" in r for r in fake_sns.requests)


def test_malformed_bodies_get_400_or_413(tree: Tree, fake_sns: FakeSns) -> None:
    envelope = fake_sns.notification(ses_event("Delivery", "m", "a@example.com"))
    assert post_sns(tree, envelope, kind=None)[0] == 400  # no message-type header
    assert post_sns(tree, b"{not json", kind="Notification")[0] == 400
    assert post_sns(tree, b"x" * (256 * 1024 + 1), kind="Notification")[0] == 413
    assert event_rows(tree) == 0


def test_http_certificates_are_refused_without_the_test_setting(
    make_tree: Callable[..., Tree], fake_sns: FakeSns, tmp_path: Any
) -> None:
    strict = make_tree(sns_env(SNS_CERT_ALLOW_HTTP="false"), workdir=tmp_path / "strict")
    status, _ = post_sns(strict, fake_sns.notification(ses_event("Delivery", "m", "a@example.com")))
    assert status == 403
    assert fake_sns.requests == [], "the http certificate was never fetched"


def png_is_valid(data: bytes) -> bool:
    """Walk the chunks, check every CRC, and inflate the image data."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    position, kinds = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        if zlib.crc32(kind + body) != crc:
            return False
        if kind == b"IDAT":
            zlib.decompress(body)
        kinds.append(kind)
        position += 12 + length
    return kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_pixel_records_signed_opens_and_always_answers_the_image(tree: Tree) -> None:
    assert tree.post("/v1/messages", campaign(["a@example.com", "b@example.com"]))[0] == 200
    [(a, _, _), (b, _, _)] = sent_recipients(tree, 2)
    html = (tree.workdir / "outbox" / f"{a}.eml").read_text()
    url = PIXEL_URL.search(html.replace("=\n", "").replace("=3D", "=")).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    for _ in range(2):
        status, body, headers = http("GET", url)
        assert status == 200 and headers["Content-Type"] == "image/png" and png_is_valid(body)
        assert "no-store" in headers["Cache-Control"]
    forged_other = url.replace(f"request_id={a}", f"request_id={b}")
    for garbage in (
        forged_other,
        url[:-4] + "0000",
        tree.base + "/v1/events/open",
        tree.base + "/v1/events/open?request_id=x",
        url.replace("request_id=", "request_id=%3"),
        url + "&" + "x" * 300,
    ):
        status, body, _ = http("GET", garbage)
        assert status == 200 and png_is_valid(body)
    assert http("HEAD", url)[0] == 200
    assert http("GET", url)[0] == 200
    # Opens are committed in order, in batches, a few ms after the image went out: once the
    # last valid one counts, every forged one before it was checked and refused.
    wait_until(lambda: tree.get("/v1/topics/t1")[1]["opens"] >= 3, 5, "the valid opens to be committed")
    topic = tree.get("/v1/topics/t1")[1]
    assert (topic["opened"], topic["opens"]) == (1, 3)


def test_a_permanent_bounce_suppresses_the_next_send(tree: Tree, fake_sns: FakeSns) -> None:
    assert tree.post("/v1/messages", campaign(["gone@example.com", "ok@example.com"]))[0] == 200
    [(gone, mail, _), _ok] = sent_recipients(tree, 2)
    post_sns(tree, fake_sns.notification(ses_event("Bounce", "m", mail, request_id=gone)))
    status, entry, _ = tree.get(f"/v1/suppressions/{mail}")
    assert status == 200 and entry["reason"] == "bounce"
    status, answer, _ = tree.post("/v1/messages", campaign(["Gone@Example.com", "new@example.com"], topic_id="t2"))
    assert status == 200 and (answer["success"], answer["suppressed"], answer["errors"]) == (1, 1, 1)
    sent_recipients(tree, 1, topic="t2")
    assert not (tree.workdir / "outbox").joinpath("gone-again").exists()
    with tree.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM recipients WHERE email LIKE 'gone%'").fetchone()[0] == 1


def test_suppression_api(tree: Tree) -> None:
    status, body, _ = tree.post("/v1/suppressions", {"email": "Someone@Example.com", "reason": "asked us"})
    assert status == 201 and body == {"email": "someone@example.com", "suppressed": True}
    assert tree.post("/v1/suppressions", {"email": "someone@example.com"})[0] == 200
    assert tree.post("/v1/suppressions", {"email": "not an address"})[0] == 400
    listed = tree.get("/v1/suppressions?limit=10")[1]
    assert [s["email"] for s in listed["suppressions"]] == ["someone@example.com"]
    assert tree.get("/v1/suppressions?limit=0")[0] == 400
    # A suppressed address is not stored by a later POST.
    answer = tree.post("/v1/messages", campaign(["someone@example.com"]))[1]
    assert answer["suppressed"] == 1 and answer["success"] == 0
    assert http("DELETE", tree.base + "/v1/suppressions/someone@example.com")[0] == 200
    assert http("DELETE", tree.base + "/v1/suppressions/someone@example.com")[0] == 404
    assert tree.get("/v1/suppressions/someone@example.com")[0] == 404


def test_statistics_add_up_after_a_full_run(tree: Tree, fake_sns: FakeSns) -> None:
    emails = [f"u{i}@example.com" for i in range(10)]
    assert tree.post("/v1/messages", campaign(emails, topic_id="run"))[0] == 200
    rows = sent_recipients(tree, 10, topic="run")
    for rid, mail, _ in rows[:6]:
        post_sns(tree, fake_sns.notification(ses_event("Delivery", "m", mail, request_id=rid)))
    for rid, mail, _ in rows[6:8]:
        post_sns(tree, fake_sns.notification(ses_event("Bounce", "m", mail, request_id=rid)))
    topic = tree.get("/v1/topics/run")[1]
    unknown = topic["sent"] - topic["delivered"] - topic["bounced"]
    assert (topic["total"], topic["sent"], topic["delivered"], topic["bounced"], unknown) == (10, 10, 6, 2, 2)
    listed = tree.get("/v1/topics")[1]["topics"]
    assert listed[0]["topic_id"] == "run" and listed[0]["total"] == 10


def test_sent_counts_and_the_quota(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    fake_ses.max_24_hour_send = 5000
    fake_ses.max_send_rate = 20
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    assert tree.post("/v1/messages", campaign(["a@example.com", "b@example.com"]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 2}, 10, "both sent")
    status, body, _ = tree.get("/v1/events/counts/sent?hours=24")
    assert status == 200 and body["count"] == 2 and body["hours"] == 24
    assert body["quota"]["max_24_hour_send"] == 5000 and body["quota"]["max_send_rate"] == 20
    assert body["quota"]["remaining"] == 5000 - body["quota"]["sent_last_24_hours"]
    for bad in ("0", "721", "x", "-1"):
        assert tree.get(f"/v1/events/counts/sent?hours={bad}")[0] == 400


def test_the_outbox_has_no_quota_and_says_so(tree: Tree) -> None:
    status, body, _ = tree.get("/v1/events/counts/sent")
    assert status == 200 and body["count"] == 0 and body["quota"] is None
    assert "outbox" in body["quota_error"]
