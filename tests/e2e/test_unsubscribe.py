"""One-click unsubscribe (RFC 8058) against the real tree and the fake SES: the headers at
SES, the visible link, the one-click POST, the page a GET shows, and the scope."""

from __future__ import annotations

import html
import re
import time
import urllib.parse
from collections.abc import Callable

from tests.fakes.fake_ses import Call, FakeSes
from tests.helpers import Tree, campaign, http, ses_env, wait_until

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


def iso_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def calls_to(fake: FakeSes, email: str, topic: str) -> list[Call]:
    return [c for c in fake.sent() if c.to == email and c.tags.get("topic_id") == topic]


def sent_once(fake: FakeSes, email: str, topic: str) -> Call:
    wait_until(lambda: calls_to(fake, email, topic), 10, f"{email} of {topic} at SES")
    [call] = calls_to(fake, email, topic)
    return call


def link_of(call: Call) -> str:
    """The https link in List-Unsubscribe (the first URI, as RFC 8058 puts it)."""
    value = dict(call.headers)["List-Unsubscribe"]
    match = re.match(r"<([^>]+)>", value)
    assert match, value
    return match.group(1)


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def status_of(tree: Tree, email: str, topic: str) -> str:
    with tree.db() as conn:
        row = conn.execute("SELECT status FROM recipients WHERE email = ? AND topic_id = ?", (email, topic)).fetchone()
    return str(row[0])


def test_each_mail_carries_the_headers_once_and_a_visible_link(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", UNSUBSCRIBE_MAILTO="leave@example.org"))
    body = campaign(["a@example.com", "b@example.com"], topic_id="news")
    body["messages"][0]["list_id"] = "newsletter"
    assert tree.post("/v1/messages", body)[0] == 200
    a, b = sent_once(fake_ses, "a@example.com", "news"), sent_once(fake_ses, "b@example.com", "news")
    for call in (a, b):
        names = [name for name, _ in call.headers]
        assert sorted(names) == ["List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"]
        headers = dict(call.headers)
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["List-Unsubscribe"].startswith(f"<{tree.base}/v1/unsubscribe/")
        assert ", <mailto:leave@example.org?subject=unsubscribe%20" in headers["List-Unsubscribe"]
        assert headers["List-Id"] == "newsletter <newsletter.localhost>"  # SERVER_URL is an IP here
        assert len(headers["List-Unsubscribe"]) <= 995
        # The body has no link of its own: the footer carries the same URL, in HTML and in text
        url = link_of(call)
        assert call.html.count(html.escape(url)) == 1 and "unsubscribe</a>" in call.html
        assert url in call.text
    assert link_of(a) != link_of(b)  # each recipient's own


def test_the_content_places_the_link_itself_and_a_transactional_mail_has_none(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    own = '<html><body><p>Hi</p><a href="{{unsubscribe_url}}">Leave us</a></body></html>'
    assert tree.post("/v1/messages", campaign(["a@example.com"], topic_id="own", content=own))[0] == 200
    body = campaign(["a@example.com"], topic_id="receipts")
    body["messages"][0]["transactional"] = True
    assert tree.post("/v1/messages", body)[0] == 200
    placed = sent_once(fake_ses, "a@example.com", "own")
    assert html.escape(link_of(placed)) in placed.html and "Leave us" in placed.html
    assert "{{unsubscribe_url}}" not in placed.html and "unsubscribe</a>" not in placed.html  # no footer
    assert "List-Id" not in dict(placed.headers)  # no list named
    receipt = sent_once(fake_ses, "a@example.com", "receipts")
    assert receipt.headers == [] and "/v1/unsubscribe/" not in receipt.html + receipt.text


def test_one_click_unsubscribes_from_that_list_only_and_pending_mail_of_it_never_reaches_ses(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    first = campaign(["a@example.com"], topic_id="issue-1")
    first["messages"][0]["list_id"] = "newsletter"
    assert tree.post("/v1/messages", first)[0] == 200
    link = link_of(sent_once(fake_ses, "a@example.com", "issue-1"))
    # Given more mail to the same address, scheduled: the same list, and another list
    when = iso_in(3)
    for topic, list_id in (("issue-2", "newsletter"), ("offers", "offers")):
        later = campaign(["a@example.com", "c@example.com"], topic_id=topic, scheduled_at=when)
        later["messages"][0]["list_id"] = list_id
        assert tree.post("/v1/messages", later)[0] == 200
    # When the mail client POSTs the one-click body
    status, page, headers = http("POST", tree.base + path_of(link), ONE_CLICK, headers=FORM)
    assert status == 200 and "Location" not in headers and headers["Content-Type"].startswith("text/html")
    assert b"unsubscribed" in page.lower()
    # Then the newsletter's scheduled mail to that address is withdrawn, and the rest goes out
    assert status_of(tree, "a@example.com", "issue-2") == "suppressed"
    sent_once(fake_ses, "c@example.com", "issue-2")
    sent_once(fake_ses, "a@example.com", "offers")
    assert calls_to(fake_ses, "a@example.com", "issue-2") == []
    # The topic whose mail carried the link counts it, and the suppression list shows its scope
    assert tree.get("/v1/topics/issue-1")[1]["unsubscribed"] == 1
    status, entry, _ = tree.get("/v1/suppressions/a@example.com")
    assert status == 200 and (entry["reason"], entry["scope"], entry["scopes"]) == (
        "unsubscribe",
        "newsletter",
        ["newsletter"],
    )
    # A second POST (multipart, as some clients send it) changes nothing and still answers 200
    multipart = b'--x\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--x--\r\n'
    status, _, _ = http(
        "POST", tree.base + path_of(link), multipart, headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert status == 200 and tree.get("/v1/topics/issue-1")[1]["unsubscribed"] == 1
    # And a later POST to that list skips the address and counts it as suppressed
    again = campaign(["a@example.com", "d@example.com"], topic_id="issue-3")
    again["messages"][0]["list_id"] = "newsletter"
    status, answer, _ = tree.post("/v1/messages", again)
    assert status == 200 and (answer["success"], answer["suppressed"]) == (1, 1)


def test_a_get_shows_a_page_and_changes_nothing_and_a_forged_link_is_refused(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", ORG_NAME="Acme & Co"))
    assert tree.post("/v1/messages", campaign(["a@example.com"], topic_id="t1"))[0] == 200
    link = link_of(sent_once(fake_ses, "a@example.com", "t1"))
    status, page, headers = http("GET", tree.base + path_of(link))
    assert status == 200 and b'method="post"' in page and b"Acme &amp; Co" in page and b"<script" not in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    token = path_of(link).rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    status, page, _ = http("POST", f"{tree.base}/v1/unsubscribe/{forged}", ONE_CLICK, headers=FORM)
    assert status == 404 and b"<html" in page.lower()
    assert tree.get("/v1/suppressions/a@example.com")[0] == 404
    assert tree.get("/v1/topics/t1")[1]["unsubscribed"] == 0
