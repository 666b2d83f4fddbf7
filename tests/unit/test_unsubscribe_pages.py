"""The unsubscribe pages: self-contained, branded, escaped, and the button posts one-click."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from stages.ingest import unsubscribe_pages as pages

ORG = 'Café <b>"Bold"</b> & Co'
ORG_ESCAPED = "Café &lt;b&gt;&quot;Bold&quot;&lt;/b&gt; &amp; Co"


class Page(HTMLParser):
    """What a browser would load, run or submit from the page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.form_fields: list[tuple[str, str]] = []
        self.in_form = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.tags.append((tag, named))
        if tag == "form":
            self.in_form = True
        elif self.in_form and tag in ("input", "button") and named.get("name"):
            self.form_fields.append((named["name"] or "", named.get("value") or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


ALL_PAGES: list[Callable[[str], str]] = [
    pages.confirm_page,
    pages.done_page,
    pages.not_found_page,
    pages.unavailable_page,
]


@pytest.mark.parametrize("render", ALL_PAGES)
def test_every_page_is_self_contained_and_readable_on_a_phone(render: Callable[[str], str]) -> None:
    text = render(ORG)
    page = Page(text)
    assert text.startswith("<!doctype html>")
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.find("meta")
    assert page.find("style") and not page.find("script") and not page.find("link") and not page.find("img")
    assert not any("src" in attrs or "href" in attrs for _, attrs in page.tags)
    assert "http:" not in text and "https:" not in text and "url(" not in text and "@import" not in text
    assert " on" not in "".join(f" {key}" for _, attrs in page.tags for key in attrs)  # no onclick=...


@pytest.mark.parametrize("render", ALL_PAGES)
def test_the_org_name_brands_the_page_escaped(render: Callable[[str], str]) -> None:
    text = render(ORG)
    assert ORG_ESCAPED in text and "<b>" not in text
    assert "the sender" in render("  ")


def test_the_confirm_button_posts_exactly_the_one_click_body_back_here() -> None:
    page = Page(pages.confirm_page("Acme"))
    (form,) = page.find("form")
    assert form == {"method": "post"}  # no action: the page's own URL
    assert urlencode(page.form_fields) == "List-Unsubscribe=One-Click"
    assert [attrs.get("type") for attrs in page.find("button")] == ["submit"]


def test_the_scope_is_named_and_escaped() -> None:
    assert "&ldquo;newsletter&rdquo; emails from Acme" in pages.confirm_page("Acme", "newsletter")
    assert "any more email from Acme" in pages.confirm_page("Acme")
    assert "&ldquo;newsletter&rdquo;" in pages.done_page("Acme", "newsletter")
    assert "&lt;x&gt;" in pages.done_page("Acme", "<x>")


@pytest.mark.parametrize("render", [pages.done_page, pages.not_found_page, pages.unavailable_page])
def test_only_the_confirm_page_has_a_form(render: Callable[[str], str]) -> None:
    assert not Page(render("Acme")).find("form")


def test_the_policy_allows_only_the_page_itself() -> None:
    assert "default-src 'none'" in pages.CONTENT_SECURITY_POLICY
    assert "script-src" not in pages.CONTENT_SECURITY_POLICY
    assert "form-action 'self'" in pages.CONTENT_SECURITY_POLICY
