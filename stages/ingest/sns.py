"""The SNS webhook's gatekeeper: parse the envelope, then prove SNS signed it.

Checklist (shared/reference/aws-ses-sns.md section 3.4): the message type header must
match the body; the topic must be allowed before any network I/O; SignatureVersion 1
(SHA1withRSA) or 2 (SHA256withRSA); the certificate URL https on an SNS host, path
ending in .pem, no user info, no odd port; the certificate fetched without redirects,
with a timeout and a size cap, its parsed key cached by URL (failures are not cached);
the signature checked over the canonical string for the message's type.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from config.settings import SnsSettings
from stages.ingest.errors import ApiError

TYPES: Final = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
SIGNED: Final = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
REQUIRED: Final = ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion", "Signature")
HASHES: Final = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES: Final = 64 * 1024
FETCH_TIMEOUT_S: Final = 5.0
CACHED_KEYS: Final = 64


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def parse_envelope(body: bytes, header_type: str | None) -> dict[str, Any]:
    """The SNS envelope (JSON in a text/plain body); 400 for anything malformed."""
    if header_type is None:
        raise ApiError(400, "bad_request", "missing the x-amz-sns-message-type header", "x-amz-sns-message-type")
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not an SNS message (not JSON)") from None
    if not isinstance(envelope, dict):
        raise ApiError(400, "invalid_json", "the body is not an SNS message (not an object)")
    if envelope.get("Type") not in TYPES or envelope.get("Type") != header_type:
        raise ApiError(400, "bad_request", "Type is missing, unknown, or differs from x-amz-sns-message-type", "Type")
    # Lambda spells these with "Url"; HTTP delivery with "URL". Accept both, like AWS's validators.
    for url_key in ("SigningCertURL", "SubscribeURL", "UnsubscribeURL"):
        alias = url_key.replace("URL", "Url")
        if url_key not in envelope and alias in envelope:
            envelope[url_key] = envelope[alias]
    needed = [*REQUIRED, "SigningCertURL", *(("SubscribeURL", "Token") if header_type != "Notification" else ())]
    missing = [key for key in needed if not isinstance(envelope.get(key), str)]
    if missing:
        raise ApiError(400, "bad_request", f"the SNS message lacks {', '.join(missing)}", missing[0])
    return envelope


def string_to_sign(envelope: dict[str, Any]) -> bytes:
    """`key\\nvalue\\n` for each signed key present, in SNS's order."""
    keys = SIGNED[envelope["Type"]]
    return "".join(f"{key}\n{envelope[key]}\n" for key in keys if key in envelope).encode()


def check_topic(envelope: dict[str, Any], policy: SnsSettings) -> None:
    if policy.topic_arns and envelope["TopicArn"] not in policy.topic_arns:
        raise forbidden("this topic is not allowed here (SNS_TOPIC_ARNS)")


def check_sns_url(url: str, policy: SnsSettings, what: str) -> None:
    """https on an SNS host (SNS_CERT_HOST_PATTERN), nothing that could point elsewhere."""
    parts = urlsplit(url)
    scheme_ok = parts.scheme == "https" or (policy.cert_allow_http and parts.scheme == "http")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = -1
    port_ok = port in (None, 443) or (policy.cert_allow_http and port is not None and port > 0)
    if not scheme_ok or parts.username or parts.password or not port_ok:
        raise forbidden(f"the {what} is not an https URL on an SNS host")
    if not re.fullmatch(policy.cert_host_pattern, host):
        raise forbidden(f"the {what} is not on an SNS host")


class SigningKeys:
    """Signing certificates' public keys, fetched once per URL and kept (LRU)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()

    async def key_for(self, url: str) -> rsa.RSAPublicKey:
        key = self.keys.get(url)
        if key is not None:
            self.keys.move_to_end(url)
            return key
        key = await self.fetch(url)
        self.keys[url] = key
        if len(self.keys) > CACHED_KEYS:
            self.keys.popitem(last=False)
        return key

    async def fetch(self, url: str) -> rsa.RSAPublicKey:
        try:
            async with self.session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
            ) as response:
                pem = await response.content.read(MAX_CERT_BYTES + 1)
                if response.status != 200 or len(pem) > MAX_CERT_BYTES:
                    raise forbidden("the signing certificate could not be fetched")
        except (aiohttp.ClientError, TimeoutError):
            raise forbidden("the signing certificate could not be fetched") from None
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise forbidden("the signing certificate is not a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise forbidden("the signing certificate does not hold an RSA key")
        return key


async def verify(envelope: dict[str, Any], policy: SnsSettings, keys: SigningKeys) -> None:
    """403 unless the envelope is from an allowed topic and signed by SNS."""
    check_topic(envelope, policy)
    algorithm = HASHES.get(envelope["SignatureVersion"])
    if algorithm is None:
        raise forbidden("unsupported SignatureVersion (1 and 2 are)")
    check_sns_url(envelope["SigningCertURL"], policy, "signing certificate URL")
    if not urlsplit(envelope["SigningCertURL"]).path.endswith(".pem"):
        raise forbidden("the signing certificate URL is not a .pem file")
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise forbidden("the signature is not base64") from None
    key = await keys.key_for(envelope["SigningCertURL"])
    try:
        key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise forbidden("the signature does not match") from None


def check_subscribe_url(envelope: dict[str, Any], policy: SnsSettings) -> str:
    """The SubscribeURL, only if it confirms this very topic on an SNS host."""
    url = str(envelope["SubscribeURL"])
    check_sns_url(url, policy, "SubscribeURL")
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [envelope["TopicArn"]]:
        raise forbidden("the SubscribeURL does not confirm this topic")
    return url
