"""The unsubscribe token, the list headers and the body link (issue #16)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import unsubscribe as u
from pipeline.mail import build, prepare, to_mime
from pipeline.unsubscribe import UnsubscribeTarget

KEY = b"k" * 32
SERVER = "https://mail.example.com"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

ids = st.integers(0, u.MAX_RECIPIENT_ID)
list_ids = st.none() | st.from_regex(u.LIST_ID, fullmatch=True).filter(lambda s: len(s) <= u.LIST_ID_MAX_CHARS)
keys = st.binary(min_size=1, max_size=64)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


# --- the token ---------------------------------------------------------------------------


@given(key=keys, recipient_id=ids, list_id=list_ids)
def test_a_token_names_its_recipient_and_list(key: bytes, recipient_id: int, list_id: str | None) -> None:
    made = u.token(key, recipient_id, list_id)
    assert u.parse(key, made) == UnsubscribeTarget(recipient_id, list_id)
    assert u.MIN_TOKEN_CHARS <= len(made) <= u.MAX_TOKEN_CHARS
    assert u.TOKEN_CHARS.fullmatch(made)


@given(recipient_id=ids, list_id=list_ids, data=st.data())
def test_any_changed_character_is_refused(recipient_id: int, list_id: str | None, data: st.DataObject) -> None:
    made = u.token(KEY, recipient_id, list_id)
    at = data.draw(st.integers(0, len(made) - 1))
    other = data.draw(st.sampled_from(B64URL + "=+/.~ %é").filter(lambda c: c != made[at]))
    assert u.parse(KEY, made[:at] + other + made[at + 1 :]) is None


@given(recipient_id=ids, list_id=list_ids, data=st.data())
def test_any_truncation_or_extension_is_refused(recipient_id: int, list_id: str | None, data: st.DataObject) -> None:
    made = u.token(KEY, recipient_id, list_id)
    cut = data.draw(st.integers(0, len(made) - 1))
    assert u.parse(KEY, made[:cut]) is None
    assert u.parse(KEY, made + data.draw(st.sampled_from(B64URL))) is None


def test_the_last_characters_spare_bits_are_not_a_second_spelling() -> None:
    # 34 characters carry 204 bits for 200: base64 decoders ignore the 4 spare ones.
    made = u.token(KEY, 42, None)
    spare = B64URL.index(made[-1]) ^ 0b0001
    assert _raw(made[:-1] + B64URL[spare]) == _raw(made)
    assert u.parse(KEY, made[:-1] + B64URL[spare]) is None


@given(candidate=st.text(max_size=400) | st.from_regex(u.TOKEN_CHARS, fullmatch=True))
def test_parse_never_raises_and_refuses_what_it_did_not_make(candidate: str) -> None:
    assert u.parse(KEY, candidate) is None


@pytest.mark.parametrize("candidate", [None, b"AQAA", 42, ["x"], "", "=" * 40, "A" * 5000, "A" * 301])
def test_parse_refuses_anything_that_is_not_a_token(candidate: object) -> None:
    assert u.parse(KEY, candidate) is None


def test_a_token_from_another_installation_is_refused() -> None:
    assert u.parse(b"other" * 8, u.token(KEY, 42, "newsletter")) is None


def test_the_token_hides_the_row_id_and_the_list() -> None:
    raw = _raw(u.token(KEY, 42, "newsletter"))
    assert b"newsletter" not in raw
    assert (42).to_bytes(8, "big") not in raw
    assert u.token(KEY, 42, None) != u.token(KEY, 43, None) != u.token(KEY, 42, "a")
    assert u.token(KEY, 42, None) == u.token(KEY, 42, None)  # deterministic: one link per recipient


def test_scope_is_part_of_what_is_signed() -> None:
    assert u.parse(KEY, u.token(KEY, 7, "news")) == UnsubscribeTarget(7, "news")
    assert u.parse(KEY, u.token(KEY, 7, None)) == UnsubscribeTarget(7, None)


@pytest.mark.parametrize(
    ("recipient_id", "list_id"),
    [(-1, None), (2**63, None), (1, ""), (1, "a" * 201), (1, "news letter"), (1, "naïve"), (1, ".a"), (1, "a..b")],
)
def test_a_token_is_never_made_for_what_we_never_store(recipient_id: int, list_id: str | None) -> None:
    with pytest.raises(ValueError):
        u.token(KEY, recipient_id, list_id)


def test_the_longest_token_fits_well_inside_the_header_limit() -> None:
    longest = u.token(KEY, u.MAX_RECIPIENT_ID, "x" * u.LIST_ID_MAX_CHARS)
    assert len(longest) == u.MAX_TOKEN_CHARS == 300
    assert len(u.token(KEY, 123_456, None)) == u.MIN_TOKEN_CHARS == 34
    (_, alone), *_ = u.recipient_headers(SERVER, KEY, u.MAX_RECIPIENT_ID, "x" * 200)
    (_, both), *_ = u.recipient_headers(SERVER, KEY, u.MAX_RECIPIENT_ID, "x" * 200, "unsubscribe@example.com")
    assert len(alone) == 342 and len(both) == 699  # the mailto carries the token too
    assert u.settings_problems(SERVER, "unsubscribe@example.com") == []


# --- the headers -------------------------------------------------------------------------


def test_headers_are_as_rfc_8058_and_2919_say() -> None:
    signed = u.token(KEY, 42, "newsletter")
    assert u.recipient_headers(SERVER, KEY, 42, "newsletter", "unsub+news@example.com") == [
        (
            "List-Unsubscribe",
            f"<{SERVER}/v1/unsubscribe/{signed}>, <mailto:unsub+news@example.com?subject=unsubscribe%20{signed}>",
        ),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("List-Id", "newsletter <newsletter.mail.example.com>"),
    ]


def test_without_a_list_or_a_mailto_there_are_two_headers() -> None:
    signed = u.token(KEY, 42, None)
    assert u.recipient_headers(SERVER, KEY, 42, None) == [
        ("List-Unsubscribe", f"<{SERVER}/v1/unsubscribe/{signed}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    assert u.unsubscribe_url(SERVER, KEY, 42, None) == f"{SERVER}/v1/unsubscribe/{signed}"


@pytest.mark.parametrize(
    ("server_url", "namespace"),
    [
        ("https://mail.example.com", "mail.example.com"),
        ("https://Mail.Example.COM:8443/prefix", "mail.example.com"),
        ("https://mail.example.com./", "mail.example.com"),
        ("https://bücher.example", "xn--bcher-kva.example"),
        ("http://localhost:3000", "localhost"),
        ("http://127.0.0.1:3000", "localhost"),
        ("http://[::1]:3000", "localhost"),
        ("http://[::1", "localhost"),
        ("https://" + "a" * 64 + ".example", "localhost"),
    ],
)
def test_the_list_id_namespace_is_server_urls_host(server_url: str, namespace: str) -> None:
    assert u.list_namespace(server_url) == namespace


def test_list_id_forms() -> None:
    assert u.list_id_header("newsletter", "mail.example.com") == "newsletter <newsletter.mail.example.com>"
    assert u.list_id_header("news.2026", "example.com") == '"news.2026" <news.2026.example.com>'
    # RFC 2919: a list-id of at most 255 octets; a long list on a long host falls back to localhost.
    long_host = "h" * 60 + ".example.com"
    assert u.list_id_header("x" * 200, long_host) == f"{'x' * 200} <{'x' * 200}.localhost>"
    with pytest.raises(ValueError):
        u.list_id_header("news letter", "example.com")


def test_settings_problems_name_the_setting() -> None:
    assert u.settings_problems(SERVER, "unsubscribe@example.com") == []
    assert u.settings_problems(SERVER, None) == []
    assert u.settings_problems(SERVER, "not an address")[0].startswith("UNSUBSCRIBE_MAILTO:")
    assert u.settings_problems(SERVER, "a@b.c>, <https://evil")[0].startswith("UNSUBSCRIBE_MAILTO:")
    assert u.settings_problems("https://" + "a" * 700 + ".com", None)[0].startswith("SERVER_URL: too long")
    assert u.settings_problems("https://bücher.example", None)[0].startswith("SERVER_URL: must be printable")


# --- the body link -----------------------------------------------------------------------

URL = "https://mail.example.com/v1/unsubscribe/T0K&N"  # & shows the escaping
ESCAPED = "https://mail.example.com/v1/unsubscribe/T0K&amp;N"


def test_the_placeholder_is_replaced_escaped_and_no_footer_is_added() -> None:
    html = '<body><a href="{{unsubscribe_url}}">stop</a> or {{ unsubscribe_url }}</body>'
    assert u.link_html(html, URL) == f'<body><a href="{ESCAPED}">stop</a> or {ESCAPED}</body>'


def test_a_percent_encoded_placeholder_counts_too() -> None:
    assert u.link_html('<a href="%7B%7Bunsubscribe_url%7D%7D">x</a>', URL) == f'<a href="{ESCAPED}">x</a>'


def test_the_footer_goes_before_the_last_body_close() -> None:
    html = "<html><body><p>a</p></BODY ><!-- </body> --></body></html>"
    footer = u.DEFAULT_HTML_FOOTER.replace(u.PLACEHOLDER, ESCAPED)
    assert u.link_html(html, URL) == f"<html><body><p>a</p></BODY ><!-- </body> -->{footer}</body></html>"


def test_the_footer_is_appended_when_there_is_no_body_close() -> None:
    assert u.link_html("<p>fragment</p>", URL) == "<p>fragment</p>" + u.DEFAULT_HTML_FOOTER.replace(
        u.PLACEHOLDER, ESCAPED
    )


def test_a_custom_footer_and_off() -> None:
    custom = '<div><a href="{{unsubscribe_url}}">Se désabonner</a></div>'
    assert u.link_html("<p>x</p>", URL, custom) == f'<p>x</p><div><a href="{ESCAPED}">Se désabonner</a></div>'
    assert u.link_html("<p>x</p>", URL, None) == "<p>x</p>"
    assert u.link_text("x", URL, None) == "x"


def test_the_text_part_gets_a_line_with_the_url() -> None:
    assert u.link_text("Hello\n\n", URL) == f"Hello\n\nTo stop receiving these emails, unsubscribe: {URL}"
    assert u.link_text("", URL) == f"To stop receiving these emails, unsubscribe: {URL}"
    assert u.link_text("Bye: {{unsubscribe_url}}", URL) == f"Bye: {URL}"  # not escaped in text


def test_the_footer_setting() -> None:
    assert u.footer_setting(None) == u.footer_setting("  ") == u.DEFAULT_HTML_FOOTER
    assert u.footer_setting("off") is None and u.footer_setting(" OFF ") is None
    assert u.footer_setting('<a href="{{unsubscribe_url}}">x</a>') == '<a href="{{unsubscribe_url}}">x</a>'
    with pytest.raises(ValueError, match="unsubscribe_url"):
        u.footer_setting("<p>Unsubscribe by replying</p>")


def test_a_custom_footer_keeps_its_words_in_the_text_part() -> None:
    assert u.text_footer(u.DEFAULT_HTML_FOOTER) == u.DEFAULT_TEXT_FOOTER
    assert u.text_footer(None) is None
    french = '<p>Désinscription : <a href="{{unsubscribe_url}}">cliquez ici</a></p>'
    assert u.text_footer(french) == "Désinscription : cliquez ici <{{unsubscribe_url}}>"
    assert u.text_footer("<p>Leave: {{unsubscribe_url}}</p>") == "Leave: {{unsubscribe_url}}"


def test_prepared_once_filled_per_recipient() -> None:
    slots = u.prepare_html("<body><p>hi</p></body>")
    first, second = slots.fill(URL + "1"), slots.fill(URL + "2")
    assert first.count(ESCAPED + "1") == 1 and second.count(ESCAPED + "2") == 1
    assert first.replace(ESCAPED + "1", "") == second.replace(ESCAPED + "2", "")


# --- a whole message ---------------------------------------------------------------------


def _message(transactional: bool = False) -> email.message.EmailMessage:
    """One recipient's mail as the sender will build it: pixel, link, headers."""
    content = prepare("Spring news", "<html><body><h1>Spring</h1><p>Our news.</p></body></html>")
    mail = build(content, 42, "reader@example.org", "spring", "<img src='pixel'>")
    headers: list[tuple[str, str]] = []
    if not transactional:
        url = u.unsubscribe_url(SERVER, KEY, 42, "newsletter")
        mail = dataclasses.replace(
            mail,
            html=u.link_html(mail.html, url),
            text=u.link_text(mail.text, url, u.text_footer(u.DEFAULT_HTML_FOOTER)),
        )
        headers = u.recipient_headers(SERVER, KEY, 42, "newsletter", "unsubscribe@example.com")
    message = to_mime(mail, "News <news@example.com>")
    for name, value in headers:
        message[name] = value
    return message


def test_a_built_message_carries_each_header_exactly_once() -> None:
    message = _message()
    parsed = email.message_from_bytes(message.as_bytes(policy=u.MIME_POLICY), policy=email.policy.default)
    expected = dict(u.recipient_headers(SERVER, KEY, 42, "newsletter", "unsubscribe@example.com"))
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert parsed.get_all(name) == [expected[name]], name
    url = u.unsubscribe_url(SERVER, KEY, 42, "newsletter")
    html_part, text_part = parsed.get_body(("html",)), parsed.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    assert html.count(url) == 1 and html.index("pixel") < html.index(url) < html.lower().rindex("</body>")
    assert text_part.get_content().rstrip("\n").endswith(f"unsubscribe: {url}")
    token = url.rsplit("/", 1)[1]
    assert u.parse(KEY, token) == UnsubscribeTarget(42, "newsletter")


def test_the_default_mime_policy_would_encode_the_url_away() -> None:
    # Why MIME_POLICY exists: at 78 columns the email package RFC 2047-encodes the long <url> word.
    raw = _message().as_bytes().decode("ascii")
    assert "List-Unsubscribe: =?utf-8?q?" in raw
    assert "List-Unsubscribe: <https://" in _message().as_bytes(policy=u.MIME_POLICY).decode("ascii")


def test_a_transactional_message_has_no_list_headers() -> None:
    message = _message(transactional=True)
    assert message.get_all("List-Unsubscribe") is None and message.get_all("List-Unsubscribe-Post") is None
