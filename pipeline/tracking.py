"""The open pixel's URL, signed so nobody can forge opens for other recipients.

The URL carries the recipient's id and an HMAC-SHA256 of it (128 bits, hex) keyed by
a per-installation secret that the recorder creates in the database. The sender writes
the query (`pixel_query`) and the recorder reads it back (`signed_recipient`), so the
format lives here alone.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from urllib.parse import urlencode

SIGNATURE_HEX_CHARS = 32
MAX_ID_DIGITS = 19  # a SQLite rowid; longer ids are not ours (and int() refuses > 4,300 digits)


@functools.lru_cache(maxsize=4)
def _keyed(key: bytes) -> hmac.HMAC:
    """The HMAC with the key already absorbed: copying it is cheaper than starting over."""
    return hmac.new(key, digestmod=hashlib.sha256)


def sign(key: bytes, recipient_id: int) -> str:
    mac = _keyed(key).copy()
    mac.update(str(recipient_id).encode())
    return mac.hexdigest()[:SIGNATURE_HEX_CHARS]


def verify(key: bytes, recipient_id: int, signature: str) -> bool:
    """Constant-time check that `signature` was made here for `recipient_id`."""
    return hmac.compare_digest(sign(key, recipient_id), signature)


def pixel_query(key: bytes, recipient_id: int) -> str:
    return urlencode({"request_id": recipient_id, "sig": sign(key, recipient_id)})


def pixel_url(server_url: str, key: bytes, recipient_id: int) -> str:
    return f"{server_url}/v1/events/open?{pixel_query(key, recipient_id)}"


def signed_recipient(key: bytes, query: str) -> int | None:
    """The recipient a pixel's raw query string names, when this server signed it; else None.

    Our links carry digits and hex only, so nothing is percent-decoded: an encoded copy
    just fails the signature.
    """
    raw_id = signature = ""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "request_id":
            raw_id = value
        elif name == "sig":
            signature = value
    if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= MAX_ID_DIGITS and signature):
        return None
    recipient_id = int(raw_id)
    return recipient_id if verify(key, recipient_id, signature) else None


def pixel_tag(server_url: str, key: bytes, recipient_id: int) -> str:
    url = pixel_url(server_url, key, recipient_id).replace("&", "&amp;")
    return f'<img src="{url}" width="1" height="1" alt="">'
