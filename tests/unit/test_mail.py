"""The pixel, the text part, SES tags and the MIME of the outbox."""

from __future__ import annotations

import email
import email.policy

from pipeline import tracking
from pipeline.mail import build, prepare, tag_value, to_mime

KEY = b"k" * 32


def test_pixel_goes_before_the_last_body_close_and_nowhere_else() -> None:
    html = "<html><body><p>a</p></BODY ><!-- </body> --></body></html>"
    content = prepare("S", html)
    mail = build(content, 7, "a@x.io", "", "<PIXEL>")
    assert mail.html == "<html><body><p>a</p></BODY ><!-- </body> --><PIXEL></body></html>"


def test_pixel_is_appended_when_there_is_no_body_close() -> None:
    mail = build(prepare("S", "<p>fragment</p>"), 7, "a@x.io", "", "<PIXEL>")
    assert mail.html == "<p>fragment</p><PIXEL>"


def test_the_pixel_url_is_signed_per_recipient() -> None:
    tag = tracking.pixel_tag("https://mail.example.com", KEY, 42)
    assert tag.startswith('<img src="https://mail.example.com/v1/events/open?request_id=42&amp;sig=')
    assert tag.endswith('" width="1" height="1" alt="">')
    signature = tag.split("sig=")[1].split('"')[0]
    assert tracking.verify(KEY, 42, signature)
    assert not tracking.verify(KEY, 43, signature)
    assert not tracking.verify(b"other" * 8, 42, signature)


def test_only_a_query_this_server_signed_names_a_recipient() -> None:
    query = tracking.pixel_query(KEY, 42)
    assert tracking.signed_recipient(KEY, query) == 42
    assert tracking.signed_recipient(KEY, query + "&utm=x") == 42
    signature = query.split("sig=")[1]
    for forged in (
        query.replace("42", "43"),
        query[:-1] + ("0" if query[-1] != "0" else "1"),
        query.replace("request_id=42", "request_id=%342"),
        query.replace("request_id=42", "request_id=\uff14\uff12"),
        f"sig={signature}",
        "request_id=42",
        "request_id=42&sig=",
        "",
        "&&==&",
        f"request_id={'9' * 5000}&sig={signature}",
    ):
        assert tracking.signed_recipient(KEY, forged) is None, forged
    assert tracking.signed_recipient(b"other" * 8, query) is None


def test_text_part_is_readable() -> None:
    text = prepare("S", "<h1>Title</h1><p>One &amp; two</p><ul><li>x</li></ul>").text.fill("")
    assert "Title" in text and "One & two" in text and "x" in text
    assert "<" not in text


def test_tags_are_made_safe_for_ses() -> None:
    assert tag_value("spring sale/2026 ✓") == "spring_sale_2026__"
    assert len(tag_value("x" * 300)) == 256
    mail = build(prepare("S", "<p>x</p>"), 9, "a@x.io", "t 1", "")
    assert mail.tags == (("request_id", "9"), ("topic_id", "t_1"))
    assert build(prepare("S", "<p>x</p>"), 9, "a@x.io", "", "").tags == (("request_id", "9"),)


def test_mime_round_trips_through_the_email_package() -> None:
    mail = build(prepare("안녕 🎉", "<p>héllo</p>"), 3, "a@x.io", "t", "<img>")
    parsed = email.message_from_bytes(to_mime(mail, "News <news@x.io>").as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "안녕 🎉"
    assert parsed["From"] == "News <news@x.io>"
    assert parsed.get_body(("html",)).get_content().rstrip("\n") == "<p>héllo</p><img>"
    assert parsed["Message-ID"].endswith("@x.io>")
