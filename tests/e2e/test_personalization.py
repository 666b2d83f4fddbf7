"""Personalized campaigns through the real tree: each recipient's own subject, HTML and text,
escaped where it must be, with the pixel, the link and the footer as for any mail; the same
bytes through SES as in the outbox."""

from __future__ import annotations

import email
import email.policy
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.fake_ses import Call, FakeSes
from tests.helpers import Tree, ses_env, wait_until

CONTENT = (
    "<html><body><p>Hello {{first_name}}, your plan is {{plan}}.</p>"
    "{{#orders}}<li>{{item}}</li>{{/orders}}{{^orders}}<p>No orders yet.</p>{{/orders}}"
    '<p>Sent to {{email}}. <a href="{{unsubscribe_url}}">Leave</a></p></body></html>'
)
PEOPLE = [
    {"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro", "orders": [{"item": "<b>tea</b>"}]}},
    {"email": "alan@example.com", "data": {"first_name": "Alan"}},
]


def campaign(topic: str, **extra: Any) -> dict[str, Any]:
    message = {"topic_id": topic, "subject": "Hi {{first_name}}", "content": CONTENT, "recipients": PEOPLE, **extra}
    return {"messages": [message]}


def by_address(calls: list[Call], topic: str) -> dict[str, Call]:
    return {c.to: c for c in calls if c.tags.get("topic_id") == topic}


def eml_parts(outbox: Path) -> dict[str, tuple[str, str, str]]:
    """address -> (subject, html, text) of each .eml in the outbox."""
    found = {}
    for path in outbox.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
        assert html_part is not None and text_part is not None
        found[str(message["To"])] = (str(message["Subject"]), html_part.get_content(), text_part.get_content())
    return found


def test_each_recipient_gets_their_own_mail_escaped_and_linked(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    status, answer, _ = tree.post("/v1/messages", campaign("hello"))
    assert status == 200 and answer["success"] == 2
    wait_until(lambda: len(by_address(fake_ses.sent(), "hello")) == 2, 10, "both at SES")
    mails = by_address(fake_ses.sent(), "hello")
    ada, alan = mails["ada@example.com"], mails["alan@example.com"]
    assert (ada.subject, alan.subject) == ("Hi Ada", "Hi Alan")
    assert "Hello Ada, your plan is pro." in ada.html and "<li>&lt;b&gt;tea&lt;/b&gt;</li>" in ada.html
    assert "Hello Alan, your plan is ." in alan.html and "<p>No orders yet.</p>" in alan.html  # missing: empty
    for address, call in mails.items():
        link = dict(call.headers)["List-Unsubscribe"][1:-1]
        assert f"Sent to {address}." in call.html
        assert f'<a href="{html.escape(link)}">Leave</a>' in call.html and "unsubscribe</a>" not in call.html
        assert call.html.count("/v1/events/open?") == 1
        assert call.text.startswith(f"Hello {address.split('@')[0].capitalize()}") and link in call.text


def test_bulk_single_sends_and_the_outbox_give_each_recipient_the_same_mail(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, tmp_path: Path
) -> None:
    # The same personalized message through SendBulkEmail, through SendEmail, and to the outbox
    bulk = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"), workdir=tmp_path / "bulk")
    single = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", SES_BULK="false"), workdir=tmp_path / "one")
    outbox = make_tree({}, workdir=tmp_path / "outbox")
    for tree, topic in ((bulk, "bulk"), (single, "single"), (outbox, "outbox")):
        message = campaign(topic, text="Hi {{first_name}}: {{plan}}", list_id="news", track_clicks=True)
        message["messages"][0]["content"] += '<a href="https://example.org/offer">Offer</a>'
        assert tree.post("/v1/messages", message)[0] == 200
    wait_until(lambda: len(by_address(fake_ses.sent(), "bulk")) == 2, 10, "both at SES in bulk")
    wait_until(lambda: len(by_address(fake_ses.sent(), "single")) == 2, 10, "both at SES one by one")
    wait_until(lambda: len(eml_parts(outbox.workdir / "outbox")) == 2, 10, "both in the outbox")
    bulked, one_by_one = by_address(fake_ses.sent(), "bulk"), by_address(fake_ses.sent(), "single")
    assert all(c.bulk_call is not None for c in bulked.values()) and fake_ses.bulk_sizes() == [2]
    assert all(c.bulk_call is None for c in one_by_one.values())
    files = eml_parts(outbox.workdir / "outbox")
    for address, call in bulked.items():
        alone = one_by_one[address]
        subject, html_part, text_part = files[address]
        # Each tree has its own key and port: compare with the links and the pixel taken out.
        assert call.subject == alone.subject == subject
        assert normal(call.html) == normal(alone.html) == normal(html_part).removesuffix("\n")  # MIME's line break
        assert normal(call.text) == normal(alone.text)
        assert normal(text_part).strip() == normal(call.text).strip() and normal(text_part).startswith("Hi ")
        assert [(n, normal(v)) for n, v in call.headers] == [(n, normal(v)) for n, v in alone.headers]
        assert {**call.tags, "topic_id": ""} == {**alone.tags, "topic_id": ""}
        assert "/v1/events/click/" in call.html and "List-Unsubscribe" in dict(call.headers)


def normal(text: str) -> str:
    import re

    link = r"https?://127\.0\.0\.1:\d+/v1/(events/open\?[^\"]+|events/click/[A-Za-z0-9_.-]+|unsubscribe/[A-Za-z0-9_-]+)"
    return re.sub(link, "LINK", text)


def test_a_bad_template_is_refused_at_post_and_nothing_is_stored(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    status, answer, _ = tree.post("/v1/messages", campaign("bad", content="<p>{{#orders}}never closed</p>"))
    assert status == 400 and answer["code"] == "invalid_template" and answer["field"] == "messages[0].content"
    assert "line 1" in answer["error"]
    assert tree.statuses() == {}
