"""One-click unsubscribe (RFC 8058): the signed token, the list headers, the body link.

The sender writes, per recipient, the token (`token`), the headers (`recipient_headers`)
and the body link (`prepare_html` / `prepare_text`, then `fill`); ingest reads the token
back (`parse`) when the link is opened or POSTed. The format lives here alone, as the
pixel's does in `tracking.py`, and uses the same installation key.

A token is url-safe base64, without padding, of

    version (1 byte) | masked(recipient id (8 bytes, big-endian) | list_id (ASCII, 0-200)) | tag (16 bytes)

- tag = HMAC-SHA256(key, TAG_DOMAIN | version | id | list_id), cut to 128 bits. That is
  the pixel's length: a forger can test guesses only online, one request each, so 2**128
  is far out of reach, and the longest token stays at 300 characters.
- masked = XOR with HMAC-SHA256(key, MASK_DOMAIN | tag | counter) blocks: a synthetic-IV
  (SIV) encryption, so a forwarded link shows neither the row id (which tells how much
  this server sends) nor the list name. It is deterministic, as SIV allows.
- The domains keep these MACs apart from the pixel's, which sign bare decimal ids with
  the same key.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import functools
import hashlib
import hmac
import html
import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

import inscriptis

VERSION: Final = 1
TAG_DOMAIN: Final = b"unsubscribe-tag\x00"
MASK_DOMAIN: Final = b"unsubscribe-mask\x00"
TAG_BYTES: Final = 16
ID_BYTES: Final = 8
MAX_RECIPIENT_ID: Final = 2**63 - 1  # a SQLite rowid
LIST_ID_MAX_CHARS: Final = 200
_FIXED_BYTES: Final = 1 + ID_BYTES  # version and id
MIN_TOKEN_CHARS: Final = -(-(_FIXED_BYTES + TAG_BYTES) * 4 // 3)
MAX_TOKEN_CHARS: Final = -(-(_FIXED_BYTES + LIST_ID_MAX_CHARS + TAG_BYTES) * 4 // 3)
PATH_PREFIX: Final = "/v1/unsubscribe/"
# SES: a header value is at most 995 printable ASCII characters (reference §1.1).
MAX_HEADER_CHARS: Final = 995
# RFC 2919 §3: a list-id is at most 255 octets.
MAX_LIST_ID_OCTETS: Final = 255
ONE_CLICK: Final = "List-Unsubscribe=One-Click"
UNMANAGED_NAMESPACE: Final = "localhost"

# A list_id is an RFC 2919 list-label (dot-atom-text), narrowed to letters, digits, _ and -,
# so it can be the List-Id's label and phrase as it is, and the token stays ASCII.
LIST_ID: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9_-]+")
DOT_ATOM: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")
MAILTO_ADDRESS: Final = re.compile(r"[^\s@<>,?\"]+@[^\s@<>,?\"]+")
MAILTO_SAFE: Final = "@!$'*+"  # RFC 6068 leaves these unencoded in an addr-spec

PLACEHOLDER: Final = "{{unsubscribe_url}}"
# Also `{{ unsubscribe_url }}` (Jinja/Handlebars habit) and the percent-encoded form some
# HTML editors write inside href attributes.
PLACEHOLDERS: Final = re.compile(r"\{\{\s*unsubscribe_url\s*\}\}|%7B%7Bunsubscribe_url%7D%7D", re.IGNORECASE)
BODY_CLOSE: Final = re.compile(r"</body\s*>", re.IGNORECASE)
# Plain words, no styling: nothing for SpamAssassin's HTML rules (tiny or low-contrast text) to score.
DEFAULT_HTML_FOOTER: Final = f'<p>To stop receiving these emails, <a href="{PLACEHOLDER}">unsubscribe</a>.</p>'
DEFAULT_TEXT_FOOTER: Final = f"To stop receiving these emails, unsubscribe: {PLACEHOLDER}"
FOOTER_OFF: Final = "off"

# Python's email package folds at 78 columns and RFC 2047-encodes any longer word, which
# turns `<https://...>` into `=?utf-8?q?...?=` that no receiver reads as a URL. Serialise
# messages carrying these headers with this policy (RFC 5322's 998 limit) instead.
MIME_POLICY: Final = email.policy.default.clone(max_line_length=998)


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    """Whom a valid token names: a recipient row, and a list (None: all mail)."""

    recipient_id: int
    list_id: str | None


def valid_list_id(list_id: str) -> bool:
    """True when `list_id` can name a list: dot-atom of [A-Za-z0-9_-], at most 200 characters."""
    return len(list_id) <= LIST_ID_MAX_CHARS and LIST_ID.fullmatch(list_id) is not None


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes, domain: bytes) -> hmac.HMAC:
    """The HMAC with the key and the domain already absorbed: copying it is cheaper."""
    return hmac.new(key, domain, digestmod=hashlib.sha256)


def _tag(key: bytes, plain: bytes) -> bytes:
    mac = _keyed(key, TAG_DOMAIN).copy()
    mac.update(plain)
    return mac.digest()[:TAG_BYTES]


def _masked(key: bytes, tag: bytes, data: bytes) -> bytes:
    """`data` XOR a key stream drawn from the tag; applying it twice gives `data` back."""
    stream = bytearray()
    for counter in range(-(-len(data) // hashlib.sha256().digest_size)):
        mac = _keyed(key, MASK_DOMAIN).copy()
        mac.update(tag + bytes([counter]))
        stream += mac.digest()
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def token(key: bytes, recipient_id: int, list_id: str | None) -> str:
    """The opaque token for this recipient and list; ValueError for an id or list_id we never store."""
    if not 0 <= recipient_id <= MAX_RECIPIENT_ID:
        raise ValueError(f"recipient id {recipient_id} is out of range")
    if list_id is not None and not valid_list_id(list_id):
        raise ValueError(f"{list_id!r} is not a valid list_id")
    secret = recipient_id.to_bytes(ID_BYTES, "big") + (list_id or "").encode("ascii")
    tag = _tag(key, bytes([VERSION]) + secret)
    return _encode(bytes([VERSION]) + _masked(key, tag, secret) + tag)


def parse(key: bytes, candidate: object) -> UnsubscribeTarget | None:
    """Whom `candidate` names when this server made it; None for anything else. Never raises."""
    if not (
        isinstance(candidate, str)
        and MIN_TOKEN_CHARS <= len(candidate) <= MAX_TOKEN_CHARS
        and TOKEN_CHARS.fullmatch(candidate)
    ):
        return None
    try:
        raw = base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4))
    except (binascii.Error, ValueError):
        return None
    # The decoder ignores a last character's spare bits: without this, a changed last
    # character could still name the same recipient. One spelling per token.
    if _encode(raw) != candidate or raw[0] != VERSION:
        return None
    tag = raw[-TAG_BYTES:]
    secret = _masked(key, tag, raw[1:-TAG_BYTES])
    if not hmac.compare_digest(_tag(key, raw[:1] + secret), tag):
        return None
    recipient_id = int.from_bytes(secret[:ID_BYTES], "big")
    list_id = secret[ID_BYTES:].decode("ascii", errors="replace") or None
    if recipient_id > MAX_RECIPIENT_ID or (list_id is not None and not valid_list_id(list_id)):
        return None  # made here, so only a changed format or a leaked key gets this far
    return UnsubscribeTarget(recipient_id, list_id)


def unsubscribe_url(server_url: str, key: bytes, recipient_id: int, list_id: str | None) -> str:
    """The https link of List-Unsubscribe and of the body (SERVER_URL carries no trailing /)."""
    return signed_url(server_url, token(key, recipient_id, list_id))


def signed_url(server_url: str, signed: str) -> str:
    """The link for a token already made."""
    return f"{server_url}{PATH_PREFIX}{signed}"


def mailto_uri(address: str, signed: str) -> str:
    """The mailto: alternative, with the token as the subject so a reply names the recipient."""
    return f"mailto:{quote(address, safe=MAILTO_SAFE)}?subject=unsubscribe%20{signed}"


@functools.lru_cache(maxsize=8)
def list_namespace(server_url: str) -> str:
    """The domain half of List-Id: SERVER_URL's host, or `localhost` when that is not a domain name.

    SERVER_URL's host is always set, is a name the operator controls (it serves the
    unsubscribe link), and differs between installations sharing one From domain, so
    two of them never merge lists at the receiver. RFC 2919 reserves `localhost` for
    ids in no managed namespace: what an IP address or a local host name gives.
    """
    try:
        host = (urlsplit(server_url).hostname or "").rstrip(".")
    except ValueError:
        return UNMANAGED_NAMESPACE
    if _is_ip_address(host):
        return UNMANAGED_NAMESPACE
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return UNMANAGED_NAMESPACE
    return host if DOT_ATOM.fullmatch(host) else UNMANAGED_NAMESPACE


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def list_id_header(list_id: str, namespace: str) -> str:
    """RFC 2919's `List-Id` value, e.g. `newsletter <newsletter.mail.example.com>`."""
    if not valid_list_id(list_id):
        raise ValueError(f"{list_id!r} is not a valid list_id")
    if len(f"{list_id}.{namespace}") > MAX_LIST_ID_OCTETS:
        namespace = UNMANAGED_NAMESPACE  # a long list_id on a long host name: stay valid
    # `.` is not atext: a dotted list_id is a quoted phrase (it holds nothing to escape).
    phrase = f'"{list_id}"' if "." in list_id else list_id
    return f"{phrase} <{list_id}.{namespace}>"


def recipient_headers(
    server_url: str, key: bytes, recipient_id: int, list_id: str | None, mailto: str | None = None
) -> list[tuple[str, str]]:
    """One recipient's List-Unsubscribe, List-Unsubscribe-Post and, for a named list, List-Id."""
    return signed_headers(server_url, token(key, recipient_id, list_id), list_id, mailto)


def signed_headers(
    server_url: str, signed: str, list_id: str | None, mailto: str | None = None
) -> list[tuple[str, str]]:
    """The same headers from a token already made (the sender makes one per recipient, for these and the body)."""
    value = f"<{signed_url(server_url, signed)}>"
    if mailto:
        value += f", <{mailto_uri(mailto, signed)}>"
    if len(value) > MAX_HEADER_CHARS or not PRINTABLE_ASCII.fullmatch(value):
        raise ValueError(f"List-Unsubscribe would be {len(value)} characters or not printable ASCII")
    headers = [("List-Unsubscribe", value), ("List-Unsubscribe-Post", ONE_CLICK)]
    if list_id is not None:
        headers.append(("List-Id", list_id_header(list_id, list_namespace(server_url))))
    return headers


def settings_problems(server_url: str, mailto: str | None) -> list[str]:
    """What makes SERVER_URL or UNSUBSCRIBE_MAILTO unusable in the headers (for config's load)."""
    problems = []
    if mailto is not None and not (mailto.isascii() and MAILTO_ADDRESS.fullmatch(mailto)):
        problems.append(f"UNSUBSCRIBE_MAILTO: {mailto!r} is not an email address")
    longest = f"<{server_url}{PATH_PREFIX}{'A' * MAX_TOKEN_CHARS}>"
    if mailto:
        longest += f", <{mailto_uri(mailto, 'A' * MAX_TOKEN_CHARS)}>"
    if not PRINTABLE_ASCII.fullmatch(server_url):
        problems.append("SERVER_URL: must be printable ASCII to go in List-Unsubscribe (use the IDNA form)")
    elif len(longest) > MAX_HEADER_CHARS:
        problems.append(f"SERVER_URL: too long for List-Unsubscribe ({len(longest)} of {MAX_HEADER_CHARS} chars)")
    return problems


def footer_setting(raw: str | None) -> str | None:
    """UNSUBSCRIBE_FOOTER to the HTML footer: unset is the default, `off` is None (no footer)."""
    if raw is None or not raw.strip():
        return DEFAULT_HTML_FOOTER
    if raw.strip().lower() == FOOTER_OFF:
        return None
    if not PLACEHOLDERS.search(raw):
        raise ValueError(f"must contain {PLACEHOLDER}, or be {FOOTER_OFF}")
    return raw


def text_footer(html_footer: str | None) -> str | None:
    """The text part's footer line that goes with an HTML footer (None: off).

    A custom footer keeps its own words (inscriptis' text of it); the URL, which an
    href hides from that text, is added after them in <>, as plain text writes links.
    """
    if html_footer is None:
        return None
    if html_footer == DEFAULT_HTML_FOOTER:
        return DEFAULT_TEXT_FOOTER
    words = " ".join(inscriptis.get_text(html_footer).split())
    if PLACEHOLDERS.search(words):
        return words
    return f"{words} <{PLACEHOLDER}>" if words else PLACEHOLDER


def has_link(content: str) -> bool:
    """True when `content` places the unsubscribe link itself."""
    return PLACEHOLDERS.search(content) is not None


@dataclass(frozen=True, slots=True)
class LinkSlots:
    """A body cut where each recipient's URL goes: prepared once per message, filled per recipient."""

    pieces: tuple[str, ...]
    escape: bool

    def fill(self, url: str) -> str:
        """The body with `url` in every slot (HTML-escaped for an HTML body)."""
        return (html.escape(url, quote=True) if self.escape else url).join(self.pieces)


def link_slots(content: str, escape: bool) -> LinkSlots:
    """`content` cut at each placeholder (`escape`: it is HTML)."""
    return LinkSlots(tuple(PLACEHOLDERS.split(content)), escape=escape)


def prepare_html(content: str, footer: str | None = DEFAULT_HTML_FOOTER) -> LinkSlots:
    """Slots at each placeholder; without one, the footer before the last </body> (or at the end)."""
    if footer is not None and not has_link(content):
        closings = [match.start() for match in BODY_CLOSE.finditer(content)]
        cut = closings[-1] if closings else len(content)
        content = content[:cut] + footer + content[cut:]
    return LinkSlots(tuple(PLACEHOLDERS.split(content)), escape=True)


def prepare_text(content: str, footer: str | None = DEFAULT_TEXT_FOOTER) -> LinkSlots:
    """Slots at each placeholder; without one, the footer as the last line after a blank one."""
    if footer is not None and not has_link(content):
        content = f"{content.rstrip()}\n\n{footer}" if content.strip() else footer
    return LinkSlots(tuple(PLACEHOLDERS.split(content)), escape=False)


def link_html(content: str, url: str, footer: str | None = DEFAULT_HTML_FOOTER) -> str:
    """`prepare_html(content, footer).fill(url)` in one call."""
    return prepare_html(content, footer).fill(url)


def link_text(content: str, url: str, footer: str | None = DEFAULT_TEXT_FOOTER) -> str:
    """`prepare_text(content, footer).fill(url)` in one call."""
    return prepare_text(content, footer).fill(url)
