"""Click tracking through the real tree: links rewritten to signed redirects, a 302 only for
our own tokens, the counts per topic and per link; mailto, anchors and the unsubscribe link
left alone."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Callable

from tests.fakes.fake_ses import Call, FakeSes
from tests.helpers import Tree, campaign, ses_env, wait_until

CONTENT = (
    '<html><body><p><a href="https://example.com/spring?utm=1&amp;x=2">Sale</a>'
    ' <a href="https://example.com/blog">Blog</a> <a href="mailto:hi@example.com">Write</a>'
    ' <a href="#top">Top</a></p></body></html>'
)
CLICK = re.compile(r'href="(http://127\.0\.0\.1:\d+/v1/events/click/[A-Za-z0-9_-]+)"')


def get_without_following(url: str) -> tuple[int, str | None]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def sent_to(fake: FakeSes, email: str, topic: str) -> Call:
    wait_until(lambda: [c for c in fake.sent() if c.to == email and c.tags.get("topic_id") == topic], 10, email)
    return next(c for c in fake.sent() if c.to == email and c.tags.get("topic_id") == topic)


def test_tracked_links_redirect_and_count_per_recipient_and_link(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    body = campaign(["ada@example.com", "alan@example.com"], topic_id="sale", content=CONTENT)
    body["messages"][0]["track_clicks"] = True
    assert tree.post("/v1/messages", body)[0] == 200
    ada, alan = sent_to(fake_ses, "ada@example.com", "sale"), sent_to(fake_ses, "alan@example.com", "sale")
    # Only the two http(s) links are rewritten, each recipient with their own tokens
    ada_links, alan_links = CLICK.findall(ada.html), CLICK.findall(alan.html)
    assert len(ada_links) == 2 and set(ada_links).isdisjoint(alan_links)
    assert 'href="mailto:hi@example.com"' in ada.html and 'href="#top"' in ada.html
    assert "/v1/unsubscribe/" in ada.html  # the footer's link is not tracked
    # A click answers 302 to the link's own URL (as the browser would follow it)
    assert get_without_following(ada_links[0]) == (302, "https://example.com/spring?utm=1&x=2")
    assert get_without_following(ada_links[0])[0] == 302
    assert get_without_following(alan_links[1]) == (302, "https://example.com/blog")
    wait_until(lambda: tree.get("/v1/topics/sale")[1]["clicks"] == 3, 5, "the clicks to be recorded")
    topic = tree.get("/v1/topics/sale")[1]
    assert (topic["clicked"], topic["clicks"]) == (2, 3)
    status, links, _ = tree.get("/v1/topics/sale/links")
    assert status == 200 and links["links"] == [
        {"url": "https://example.com/spring?utm=1&x=2", "clicked": 1, "clicks": 2},
        {"url": "https://example.com/blog", "clicked": 1, "clicks": 1},
    ]


def test_a_forged_token_is_a_404_never_a_redirect(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", TRACK_CLICKS="true"))
    assert tree.post("/v1/messages", campaign(["ada@example.com"], topic_id="t", content=CONTENT))[0] == 200
    [link, _] = CLICK.findall(sent_to(fake_ses, "ada@example.com", "t").html)  # TRACK_CLICKS turned it on
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert get_without_following(forged) == (404, None)
    assert get_without_following(tree.base + "/v1/events/click/https%3A%2F%2Fevil.example") == (404, None)
    assert tree.get("/v1/topics/t")[1]["clicks"] == 0


def test_a_personalized_message_tracks_its_links_too(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50"))
    message = {
        "topic_id": "p",
        "subject": "Hi {{name}}",
        "content": '<p>Hi {{name}}, <a href="https://example.com/offer">see</a></p>',
        "recipients": [{"email": "ada@example.com", "data": {"name": "Ada"}}],
        "track_clicks": True,
    }
    assert tree.post("/v1/messages", {"messages": [message]})[0] == 200
    mail = sent_to(fake_ses, "ada@example.com", "p")
    [link] = CLICK.findall(mail.html)
    assert "Hi Ada" in mail.html and get_without_following(link) == (302, "https://example.com/offer")


BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
PIXEL = re.compile(r'src="(http://[^"]+/v1/events/open\?[^"]+)"')


def load(url: str, user_agent: str) -> int:
    parts = urllib.parse.urlsplit(url.replace("&amp;", "&"))
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}", headers={"User-Agent": user_agent})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_opens_and_clicks_by_machines_are_told_from_people(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="50", TRACK_CLICKS="true"))
    assert tree.post("/v1/messages", campaign(["ada@example.com"], topic_id="h", content=CONTENT))[0] == 200
    mail = sent_to(fake_ses, "ada@example.com", "h")
    wait_until(lambda: tree.get("/v1/topics/h")[1]["sent"] == 1, 5, "the send recorded")
    [pixel] = PIXEL.findall(mail.html)
    # Apple's Mail Privacy Protection proxy (its bare User-Agent), a person, and Gmail's image proxy (a person)
    for agent in (
        "Mozilla/5.0",
        BROWSER,
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    ):
        assert load(pixel, agent) == 200
    # A scanner following a link, then a person
    link = CLICK.findall(mail.html)[0]
    assert load(link, "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))") == 302
    assert load(link, BROWSER) == 302
    wait_until(lambda: tree.get("/v1/topics/h")[1]["clicks"] == 2, 5, "the clicks recorded")
    topic = tree.get("/v1/topics/h")[1]
    assert (topic["opened"], topic["opens"], topic["opened_human"], topic["opens_machine"]) == (1, 3, 1, 1)
    assert (topic["clicked"], topic["clicks"], topic["clicked_human"], topic["clicks_machine"]) == (1, 2, 1, 1)
