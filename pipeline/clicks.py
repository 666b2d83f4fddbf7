"""Click tracking (issue #17): each http(s) link of a message's HTML, made a signed URL per recipient.

The sender prepares a message's HTML once (`rewrite_links` gives `ClickSlots`) and fills
it for each recipient (`ClickSlots.fill`). The recorder stores `ClickSlots.links` with the
message; ingest reads a token back (`parse_click`) on `GET /v1/events/click/TOKEN` and
redirects to the stored link of that index. The target is never in the URL, so this
server is no open redirect, and a forged token names nothing (a 404). The format lives
here alone, as the pixel's does in `tracking.py` and the unsubscribe token's in
`unsubscribe.py`, and it uses the same installation key.

What is rewritten: the `href` of each `<a>` and `<area>` start tag whose value, decoded
as a browser decodes an attribute, is an absolute `http://` or `https://` URL. Only the
characters of that value change (an unquoted value gains double quotes): the rest of
the HTML reaches SES byte for byte. The tags are found by a small tokenizer that
follows the HTML standard's tokenizer states for what matters here (quoted and
unquoted attribute values, comments, `<script>`/`<style>`/`<textarea>`/`<title>` text,
a document that ends inside a tag), so an `href` inside a comment, a script or another
attribute's value is never touched.

Never rewritten:
- `mailto:`, `tel:`, `#anchors`, relative links and every other scheme;
- the unsubscribe link: `{{unsubscribe_url}}` (any spelling `unsubscribe.py` fills) or a
  URL containing `/v1/unsubscribe/`;
- a URL that is itself a template (it holds `{{`): it differs per recipient, so no one
  stored link can stand for it;
- one of our click URLs (`/v1/events/click/`), so preparing twice changes nothing;
- a link whose tag opts out with `data-no-track`, or with the spellings other senders
  use, so imported templates keep their meaning: `ses:no-track` (SES), `data-pm-no-track`
  (Postmark), `mc:disable-tracking` (Mailchimp, Mandrill), `clicktracking="off"`
  (SendGrid). The attribute stays in the HTML;
- links after the first MAX_LINKS of a message.
Outlook's conditional comments (`<!--[if mso]> ... <![endif]-->`) are comments to other
clients but rendered by Outlook, so the links inside them are tracked too.

A token is url-safe base64, without padding, of 27 bytes (36 characters, no spare bits):

    version (1) | masked(recipient id (8, big-endian) | link index (2, big-endian)) | tag (16)

- tag = HMAC-SHA256(key, TAG_DOMAIN | version | id | index), cut to 128 bits, as the
  pixel's and the unsubscribe token's: a forger can test guesses only online.
- masked = XOR with HMAC-SHA256(key, MASK_DOMAIN | tag): the synthetic-IV design of
  `unsubscribe.py`, so a forwarded link does not show the row id.
- The domains keep these MACs apart from the pixel's (bare decimal ids) and the
  unsubscribe token's (`unsubscribe-tag\\0`, `unsubscribe-mask\\0`), all under one key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import html
import html.entities
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from pipeline.unsubscribe import PATH_PREFIX as UNSUBSCRIBE_PATH
from pipeline.unsubscribe import PLACEHOLDERS as UNSUBSCRIBE_PLACEHOLDERS

VERSION: Final = 1
TAG_DOMAIN: Final = b"click-tag\x00"
MASK_DOMAIN: Final = b"click-mask\x00"
TAG_BYTES: Final = 16
ID_BYTES: Final = 8
INDEX_BYTES: Final = 2
MAX_RECIPIENT_ID: Final = 2**63 - 1  # a SQLite rowid
MAX_LINKS: Final = 2 ** (8 * INDEX_BYTES)  # per message; later links are left as they are
TOKEN_CHARS: Final = (1 + ID_BYTES + INDEX_BYTES + TAG_BYTES) * 4 // 3  # 27 bytes: 36, exactly
CLICK_PATH: Final = "/v1/events/click/"

TOKEN: Final = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")
HTTP_URL: Final = re.compile(r"https?://", re.IGNORECASE)
LINK_TAGS: Final = frozenset({"a", "area"})
OPT_OUTS: Final = ("data-no-track", "ses:no-track", "data-pm-no-track", "mc:disable-tracking")

_VERSION_BYTE: Final = bytes([VERSION])
_TAG_PREFIX: Final = TAG_DOMAIN + _VERSION_BYTE
_PLAIN_BYTES: Final = ID_BYTES + INDEX_BYTES

# The HTML standard's tokenizer (WHATWG HTML §13.2.5), reduced to what finds attributes.
_TAG_NAME: Final = re.compile(r"[^\t\n\f\r />]*")
_ATTRIBUTE_GAP: Final = re.compile(r"[\t\n\f\r /]*")  # a lone `/` inside a tag is skipped like space
_ATTRIBUTE_NAME: Final = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*")  # a leading `=` is part of it
_EQUALS: Final = re.compile(r"[\t\n\f\r ]*=[\t\n\f\r ]*")
_UNQUOTED_VALUE: Final = re.compile(r"[^\t\n\f\r >]*")
_CONDITIONAL_COMMENT: Final = re.compile(r"<!--\[if[^\]]*\]>", re.IGNORECASE)
_RAW_TEXT: Final = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
_CHARACTER_REFERENCE: Final = re.compile(r"&(#[xX][0-9A-Fa-f]+;?|#[0-9]+;?|[A-Za-z][A-Za-z0-9]*;?)")
# The URL standard strips C0 controls and space from both ends and drops tab and newlines.
_URL_EDGES: Final = "".join(map(chr, range(0x21)))
_URL_DROPPED: Final = str.maketrans("", "", "\t\n\r")


class ClickTarget(NamedTuple):
    """Whom a valid token names: a recipient row, and the index of a link of its message."""

    recipient_id: int
    link_index: int


@dataclass(frozen=True, slots=True)
class ClickSlots:
    """A message's HTML cut where each tracked link's URL goes: prepared once, filled per recipient.

    `links[i]` is the URL that slot `i` replaced, decoded as the browser would follow it;
    `pieces` has one more entry than `links`, and the slots sit between them.
    """

    pieces: tuple[str, ...]
    links: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.pieces) != len(self.links) + 1 or len(self.links) > MAX_LINKS:
            raise ValueError(f"{len(self.pieces)} pieces cannot hold {len(self.links)} links")

    def fill(self, server_url: str, key: bytes, recipient_id: int) -> str:
        """The HTML with this recipient's click URL in every slot (SERVER_URL carries no trailing /)."""
        if not self.links:
            return self.pieces[0]
        prefix = html.escape(server_url + CLICK_PATH, quote=True)
        parts = [self.pieces[0]]
        for token, piece in zip(click_tokens(key, recipient_id, len(self.links)), self.pieces[1:], strict=True):
            parts += (prefix, token, piece)
        return "".join(parts)


# --- the token ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mac:
    """HMAC-SHA256 (RFC 2104) with the key and a domain absorbed, written out over hashlib.

    `hmac.HMAC.copy()` wraps each copy in a Python object; copying the two hash states
    directly halves the cost, and a fill pays it twice per link (3.6 to 2.1 µs per link
    measured here). test_clicks checks it against the hmac module for keys of any length.
    """

    inner: hashlib._Hash
    outer: hashlib._Hash

    def digest(self, data: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(data)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes, domain: bytes) -> _Mac:
    """The MAC for this key and domain (unsubscribe.py's `_keyed` idea; fold both into one
    shared `pipeline/signing.py` when a third token appears)."""
    block = hashlib.sha256().block_size
    padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\x00")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in padded) + domain)
    return _Mac(inner, hashlib.sha256(bytes(byte ^ 0x5C for byte in padded)))


def _xor(data: bytes, mask: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask[: len(data)], "big")).to_bytes(len(data), "big")


def _check_range(recipient_id: int, link_index: int) -> None:
    if not 0 <= recipient_id <= MAX_RECIPIENT_ID:
        raise ValueError(f"recipient id {recipient_id} is out of range")
    if not 0 <= link_index < MAX_LINKS:
        raise ValueError(f"link index {link_index} is out of range")


def _token(tag_mac: _Mac, mask_mac: _Mac, recipient: bytes, link_index: int) -> str:
    plain = recipient + link_index.to_bytes(INDEX_BYTES, "big")
    tag = tag_mac.digest(plain)[:TAG_BYTES]
    raw = _VERSION_BYTE + _xor(plain, mask_mac.digest(tag)) + tag
    return base64.urlsafe_b64encode(raw).decode("ascii")  # 27 bytes: no padding to strip


def click_tokens(key: bytes, recipient_id: int, count: int) -> list[str]:
    """The tokens of links 0 .. count-1 for one recipient; ValueError for values we never store."""
    _check_range(recipient_id, max(0, count - 1))
    recipient = recipient_id.to_bytes(ID_BYTES, "big")
    tag_mac, mask_mac = _keyed(key, _TAG_PREFIX), _keyed(key, MASK_DOMAIN)
    return [_token(tag_mac, mask_mac, recipient, index) for index in range(count)]


def click_token(key: bytes, recipient_id: int, link_index: int) -> str:
    """The opaque token for this recipient and link; ValueError for an id or index we never store."""
    _check_range(recipient_id, link_index)
    recipient = recipient_id.to_bytes(ID_BYTES, "big")
    return _token(_keyed(key, _TAG_PREFIX), _keyed(key, MASK_DOMAIN), recipient, link_index)


def click_url(server_url: str, key: bytes, recipient_id: int, link_index: int) -> str:
    """The click URL itself, not HTML-escaped (SERVER_URL carries no trailing /)."""
    return f"{server_url}{CLICK_PATH}{click_token(key, recipient_id, link_index)}"


def parse_click(key: bytes, candidate: object) -> ClickTarget | None:
    """Whom and which link `candidate` names when this server made it; None for anything else. Never raises."""
    if not (isinstance(candidate, str) and TOKEN.fullmatch(candidate)):
        return None
    try:
        raw = base64.urlsafe_b64decode(candidate)  # 36 characters are 27 bytes: one spelling per token
    except (binascii.Error, ValueError):
        return None
    if raw[0] != VERSION:
        return None
    tag = raw[-TAG_BYTES:]
    plain = _xor(raw[1 : 1 + _PLAIN_BYTES], _keyed(key, MASK_DOMAIN).digest(tag))
    if not hmac.compare_digest(_keyed(key, _TAG_PREFIX).digest(plain)[:TAG_BYTES], tag):
        return None
    recipient_id = int.from_bytes(plain[:ID_BYTES], "big")
    if recipient_id > MAX_RECIPIENT_ID:
        return None  # made here, so only a changed format or a leaked key gets this far
    return ClickTarget(recipient_id, int.from_bytes(plain[ID_BYTES:], "big"))


# --- finding the links ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Attribute:
    """An attribute's value as the span [start, end) of the document; quote is '' when unquoted."""

    start: int
    end: int
    quote: str


@dataclass(frozen=True, slots=True)
class _Tag:
    name: str
    end: int  # just after its `>`
    attributes: dict[str, _Attribute]  # the first of a repeated name wins, as in a browser


_NO_VALUE: Final = _Attribute(-1, -1, "")


def _run_end(pattern: re.Pattern[str], content: str, at: int) -> int:
    """Where the run of `pattern` (which may be empty) that starts at `at` ends."""
    match = pattern.match(content, at)
    return at if match is None else match.end()


def _ascii_lower(name: str) -> str:
    # The standard lowercases A-Z only; a non-ASCII name can never be one we look for.
    return name.lower() if name.isascii() else name


def _parse_attribute(content: str, at: int) -> tuple[str, _Attribute | None, int]:
    """The attribute at `at`: its name, its value (None: the document ends inside it), where it ends."""
    name_end = _run_end(_ATTRIBUTE_NAME, content, at)
    name = _ascii_lower(content[at:name_end])
    equals = _EQUALS.match(content, name_end)
    if equals is None:
        return name, _NO_VALUE, name_end
    at = equals.end()
    quote = content[at : at + 1]
    if quote in ('"', "'"):
        close = content.find(quote, at + 1)
        return (name, None, at) if close < 0 else (name, _Attribute(at + 1, close, quote), close + 1)
    end = _run_end(_UNQUOTED_VALUE, content, at)
    return name, _Attribute(at, end, ""), end


def _parse_tag(content: str, at: int) -> _Tag | None:
    """The tag whose name starts at `at`; None when the document ends inside it (a browser drops it)."""
    name_end = _run_end(_TAG_NAME, content, at)
    name, at = _ascii_lower(content[at:name_end]), name_end
    attributes: dict[str, _Attribute] = {}
    while True:
        at = _run_end(_ATTRIBUTE_GAP, content, at)
        if at >= len(content):
            return None
        if content[at] == ">":
            return _Tag(name, at + 1, attributes)
        attribute_name, attribute, at = _parse_attribute(content, at)
        if attribute is None:
            return None
        attributes.setdefault(attribute_name, attribute)


def _comment_end(content: str, body: int) -> int:
    """Where a comment whose text starts at `body` ends: `-->`, `--!>`, or the abrupt `<!-->` and `<!--->`."""
    if content.startswith(">", body):
        return body + 1
    if content.startswith("->", body):
        return body + 2
    ends = [end for end in (content.find("-->", body), content.find("--!>", body)) if end >= 0]
    if not ends:
        return len(content)
    end = min(ends)
    return end + (3 if content.startswith("-->", end) else 4)


def _bogus_comment_end(content: str, at: int) -> int:
    """`<!DOCTYPE ...>`, `<?...>`, `</ ...>`, `<![CDATA[...`: text up to the next `>`."""
    end = content.find(">", at + 2)
    return len(content) if end < 0 else end + 1


def _declaration_end(content: str, at: int) -> int:
    """Where `<!` at `at` ends. Outlook renders a conditional comment's inside, so it is scanned."""
    if not content.startswith("<!--", at):
        return _bogus_comment_end(content, at)
    conditional = _CONDITIONAL_COMMENT.match(content, at)
    return conditional.end() if conditional else _comment_end(content, at + 4)


def _end_tag_end(content: str, at: int) -> int:
    """Where `</` at `at` ends: an end tag is read like a start tag, for the `>` in its quotes."""
    following = content[at + 2 : at + 3]
    if following == ">":
        return at + 3  # `</>` is dropped
    if not following:
        return at + 2  # `</` at the very end is text
    if not (following.isascii() and following.isalpha()):
        return _bogus_comment_end(content, at)
    tag = _parse_tag(content, at + 2)
    return len(content) if tag is None else tag.end


@functools.lru_cache(maxsize=16)
def _closing_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE)


def _text_end(content: str, tag: _Tag) -> int:
    """Where markup resumes after `tag`: past the text of <script>, <style>, <textarea>, <title>..."""
    if tag.name == "plaintext":
        return len(content)
    if tag.name not in _RAW_TEXT:
        return tag.end
    closing = _closing_tag(tag.name).search(content, tag.end)
    return closing.start() if closing else len(content)


def _markup(content: str, at: int) -> tuple[int, _Tag | None]:
    """What starts at the `<` at `at`: where scanning resumes, and the start tag found, if any."""
    following = content[at + 1 : at + 2]
    if following == "!":
        return _declaration_end(content, at), None
    if following == "?":
        return _bogus_comment_end(content, at), None
    if following == "/":
        return _end_tag_end(content, at), None
    if not (following.isascii() and following.isalpha()):
        return at + 1, None  # a `<` that starts no tag is text
    tag = _parse_tag(content, at + 1)
    if tag is None:
        return len(content), None
    return _text_end(content, tag), tag


def _link_tags(content: str) -> Iterator[_Tag]:
    """Every <a> and <area> start tag a browser sees, in document order."""
    at = content.find("<")
    while at >= 0:
        at, tag = _markup(content, at)
        if tag is not None and tag.name in LINK_TAGS:
            yield tag
        at = content.find("<", at)


# --- deciding what to track ---------------------------------------------------------------


def _decode_reference(match: re.Match[str]) -> str:
    reference = match.group(1)
    if reference.startswith("#"):
        return html.unescape(match.group(0))  # numeric: the standard's replacements, with or without `;`
    if reference.endswith(";"):
        return html.entities.html5.get(reference, match.group(0))
    # A legacy name without `;` (`&amp`, `&copy`) decodes in an attribute only when no `=` or
    # letter or digit follows it (HTML §13.2.5.73, "for historical reasons"), so the query
    # string `?a=1&copy=2` stays as it is. The match already took every letter and digit.
    if reference in html.entities.html5 and not match.string.startswith("=", match.end()):
        return html.entities.html5[reference]
    return match.group(0)


def attribute_value(raw: str) -> str:
    """An attribute's text as a browser reads it: character references decoded, attribute rules."""
    return _CHARACTER_REFERENCE.sub(_decode_reference, raw) if "&" in raw else raw


def browser_url(raw: str) -> str:
    """The URL a browser follows for an href's raw text: decoded, trimmed, tabs and newlines dropped."""
    return attribute_value(raw).strip(_URL_EDGES).translate(_URL_DROPPED)


def _value(content: str, attribute: _Attribute) -> str:
    return content[attribute.start : attribute.end]


def _opted_out(content: str, tag: _Tag) -> bool:
    if any(name in tag.attributes for name in OPT_OUTS):
        return True
    sendgrid = tag.attributes.get("clicktracking")
    return sendgrid is not None and attribute_value(_value(content, sendgrid)).strip().lower() == "off"


def _tracked_url(content: str, tag: _Tag) -> str | None:
    """The URL to track for this link tag, or None when its href stays as it is."""
    href = tag.attributes.get("href")
    if href is None or href.start < 0 or _opted_out(content, tag):
        return None
    raw = _value(content, href)
    if "{{" in raw or UNSUBSCRIBE_PLACEHOLDERS.search(raw):
        return None
    url = browser_url(raw)
    if not HTTP_URL.match(url) or UNSUBSCRIBE_PATH in url or CLICK_PATH in url:
        return None
    return url


def rewrite_links(content: str) -> ClickSlots:
    """`content` cut at the href value of each link to track, with the links in order (prepared once)."""
    pieces: list[str] = []
    links: list[str] = []
    cut, reopen = 0, ""
    for tag in _link_tags(content):
        url = _tracked_url(content, tag)
        if url is None or len(links) == MAX_LINKS:
            continue
        href = tag.attributes["href"]
        quote = "" if href.quote else '"'  # an unquoted value is quoted: the URL may hold `&`, `=`
        pieces.append(reopen + content[cut : href.start] + quote)
        links.append(url)
        cut, reopen = href.end, quote
    pieces.append(reopen + content[cut:])
    return ClickSlots(tuple(pieces), tuple(links))
