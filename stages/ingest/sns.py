"""The SNS webhook's gatekeeper: parse the envelope, then prove SNS signed it.

Checklist (shared/reference/aws-ses-sns.md section 3.4): the message type header must
match the body; the topic must be on the allow-list (SNS_TOPIC_ARNS) before any network
I/O; SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA); the certificate URL https on
`sns.<the topic's region>.amazonaws.com`, path `/SimpleNotificationService-<hex>.pem`, no
user info, no odd port; the certificate fetched once at a time per URL, without redirects,
with a timeout and a size cap, its parsed key cached by URL; the signature checked over
the canonical string for the message's type.

Whatever SNS could retry answers 503 (a certificate fetch that timed out, failed or got
no 200), because SNS retries a 5xx and treats a 4xx as delivered. What no retry can fix
(a forged or malformed message) answers 403 or 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from config.settings import SnsSettings
from pipeline.jsondepth import MAX_DEPTH, too_deep
from stages.ingest.errors import ApiError

TYPES: Final = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
SIGNED: Final = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
REQUIRED: Final = ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion")
# Without these the message cannot be proven to come from SNS: 403, as for a bad signature.
PROOF: Final = ("Signature", "SigningCertURL")
HASHES: Final = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES: Final = 64 * 1024
FETCH_TIMEOUT_S: Final = 5.0
CACHED_KEYS: Final = 64
# A failed fetch is remembered this long: a burst of events during an outage costs one fetch.
FAILURE_MEMORY_S: Final = 5.0
CERT_PATH: Final = re.compile(r"/SimpleNotificationService-[0-9a-fA-F]+\.pem")
TOPIC_REGION: Final = re.compile(r"arn:aws(?:-cn)?:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def cert_unavailable() -> ApiError:
    """SNS retries a 5xx: an outage at the certificate's host must not lose the event."""
    return ApiError(
        503, "unavailable", "the signing certificate could not be fetched; retry", headers={"Retry-After": "5"}
    )


def parse_envelope(body: bytes, header_type: str | None) -> dict[str, Any]:
    """The SNS envelope (JSON in a text/plain body); 400 for anything malformed."""
    if header_type is None:
        raise ApiError(400, "bad_request", "missing the x-amz-sns-message-type header", "x-amz-sns-message-type")
    if too_deep(body):
        raise ApiError(400, "invalid_json", f"the body is nested too deeply (at most {MAX_DEPTH} levels)")
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
    check_fields(envelope, header_type)
    return envelope


def check_fields(envelope: dict[str, Any], header_type: str) -> None:
    """Every field the type needs (400), the proof of origin (403), storable text (400)."""
    needed = [*REQUIRED, *(("SubscribeURL", "Token") if header_type != "Notification" else ())]
    missing = [key for key in needed if not isinstance(envelope.get(key), str)]
    if missing:
        raise ApiError(400, "bad_request", f"the SNS message lacks {', '.join(missing)}", missing[0])
    unproven = [key for key in PROOF if not isinstance(envelope.get(key), str)]
    if unproven:
        raise forbidden(f"the SNS message lacks {', '.join(unproven)}, so it cannot be proven to come from SNS")
    if not all(is_text(value) for value in envelope.values() if isinstance(value, str)):
        raise ApiError(400, "bad_request", "the SNS message is not valid UTF-8 (a lone surrogate)")


def is_text(value: str) -> bool:
    """False for strings that no UTF-8 store can hold (JSON escapes can make lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def string_to_sign(envelope: dict[str, Any]) -> bytes:
    """`key\\nvalue\\n` for each signed key present, in SNS's order."""
    keys = SIGNED[envelope["Type"]]
    return "".join(f"{key}\n{envelope[key]}\n" for key in keys if key in envelope).encode()


def check_topic(envelope: dict[str, Any], policy: SnsSettings) -> None:
    """Only allow-listed topics: anyone can make a topic in their own account and sign with it."""
    if policy.allow_any_topic:
        return
    if not policy.topic_arns:
        raise forbidden("SES events are off: set SNS_TOPIC_ARNS to the topics that may post here")
    if envelope["TopicArn"] not in policy.topic_arns:
        raise forbidden("this topic is not allowed here (SNS_TOPIC_ARNS)")


def sns_host_pattern(policy: SnsSettings, topic_arn: str) -> str:
    """SNS_CERT_HOST_PATTERN when set; else SNS's own host in the topic's region."""
    if policy.cert_host_pattern is not None:
        return policy.cert_host_pattern
    match = TOPIC_REGION.fullmatch(topic_arn)
    if match is None:
        raise forbidden("TopicArn is not an SNS topic ARN")
    return rf"sns\.{re.escape(match.group(1))}\.amazonaws\.com(\.cn)?"


def check_sns_url(url: str, policy: SnsSettings, what: str, topic_arn: str) -> None:
    """https on the topic's SNS host, nothing that could point elsewhere."""
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
    if not re.fullmatch(sns_host_pattern(policy, topic_arn), host):
        raise forbidden(f"the {what} is not on the SNS host of the topic's region")


def check_cert_url(url: str, policy: SnsSettings, topic_arn: str) -> None:
    check_sns_url(url, policy, "signing certificate URL", topic_arn)
    if not CERT_PATH.fullmatch(urlsplit(url).path):
        raise forbidden("the signing certificate URL is not /SimpleNotificationService-<hex>.pem")


class SigningKeys:
    """Signing certificates' public keys, fetched once per URL and kept (LRU).

    One fetch at a time per URL (single flight): the events that arrive while it runs
    wait for it. A failed fetch is remembered for FAILURE_MEMORY_S and answered 503 at
    once, so an outage at the certificate host costs one request, not one per event.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.session = session
        self.clock = clock
        self.timeout_s = timeout_s
        self.keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self.fetching: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
        self.failed: dict[str, tuple[float, ApiError]] = {}

    async def key_for(self, url: str) -> rsa.RSAPublicKey:
        key = self.keys.get(url)
        if key is not None:
            self.keys.move_to_end(url)
            return key
        failure = self.failed.get(url)
        if failure is not None and self.clock() < failure[0]:
            known = failure[1]
            raise ApiError(known.status, known.code, known.message, headers=known.headers)
        flight = self.fetching.get(url)
        if flight is None:
            flight = self.fetching[url] = asyncio.ensure_future(self._fetch_and_keep(url))
            flight.add_done_callback(lambda done: None if done.cancelled() else done.exception())
        return await asyncio.shield(flight)

    async def _fetch_and_keep(self, url: str) -> rsa.RSAPublicKey:
        try:
            key = await self.fetch(url)
        except ApiError as problem:
            self.failed[url] = (self.clock() + FAILURE_MEMORY_S, problem)
            if len(self.failed) > CACHED_KEYS:
                self.failed.pop(next(iter(self.failed)))
            raise
        finally:
            self.fetching.pop(url, None)
        self.failed.pop(url, None)
        self.keys[url] = key
        if len(self.keys) > CACHED_KEYS:
            self.keys.popitem(last=False)
        return key

    async def fetch(self, url: str) -> rsa.RSAPublicKey:
        """The certificate's RSA key: 503 when it could not be had, 403 when it is not one."""
        try:
            async with self.session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                if response.status != 200:
                    raise cert_unavailable()
                pem = await read_to_end(response, MAX_CERT_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            raise cert_unavailable() from None
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise forbidden("the signing certificate is not a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise forbidden("the signing certificate does not hold an RSA key")
        return key


async def read_to_end(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body (a single read may return part of it); 403 past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise forbidden("the signing certificate is larger than any certificate")
        chunks.append(chunk)
    return b"".join(chunks)


async def verify(envelope: dict[str, Any], policy: SnsSettings, keys: SigningKeys) -> None:
    """403 unless the envelope is from an allowed topic and signed by SNS."""
    check_topic(envelope, policy)
    algorithm = HASHES.get(envelope["SignatureVersion"])
    if algorithm is None:
        raise forbidden("unsupported SignatureVersion (1 and 2 are)")
    check_cert_url(envelope["SigningCertURL"], policy, envelope["TopicArn"])
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
    check_sns_url(url, policy, "SubscribeURL", envelope["TopicArn"])
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [envelope["TopicArn"]]:
        raise forbidden("the SubscribeURL does not confirm this topic")
    return url
