"""A stand-in for SNS's side of the webhook: a test signing key and certificate served
over HTTP on 127.0.0.1, envelopes signed the way SNS signs them (v1 or v2), and a
ConfirmSubscription endpoint that records being called. Every request it serves is
recorded, so tests can prove what was (and was not) fetched.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from stages.ingest.sns import string_to_sign

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"


def sns_env(**extra: str) -> dict[str, str]:
    """Settings that make a tree trust this fake: its http certificate on 127.0.0.1, its topic."""
    return {
        "SNS_CERT_ALLOW_HTTP": "true",
        "SNS_CERT_HOST_PATTERN": r"127\.0\.0\.1",
        "SNS_TOPIC_ARNS": TOPIC_ARN,
        **extra,
    }


def make_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeSns:
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    requests: list[str] = field(default_factory=list)  # path + query of every request served
    port: int = 0

    def __post_init__(self) -> None:
        self.pem = make_certificate(self.key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def cert_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/SimpleNotificationService-0123456789abcdef.pem"

    def start(self) -> FakeSns:
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True, name="fake-sns").start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        started.set()
        loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if request.path.endswith(".pem"):
            return web.Response(body=self.pem, content_type="application/x-pem-file")
        if request.query.get("Action") == "ConfirmSubscription":
            return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")
        return web.Response(status=404)

    # --- envelopes -----------------------------------------------------------------------

    def sign(
        self, envelope: dict[str, Any], version: str = "2", key: rsa.RSAPrivateKey | None = None
    ) -> dict[str, Any]:
        envelope = {"SignatureVersion": version, "SigningCertURL": self.cert_url, **envelope}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
        envelope["Signature"] = base64.b64encode(signature).decode()
        return envelope

    def notification(
        self,
        message: str | dict[str, Any],
        *,
        subject: str | None = None,
        topic_arn: str = TOPIC_ARN,
        version: str = "2",
        message_id: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        envelope = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "UnsubscribeURL": f"http://127.0.0.1:{self.port}/?Action=Unsubscribe",
        }
        if subject is not None:
            envelope["Subject"] = subject
        envelope.update(overrides)
        return self.sign(envelope, version)

    def confirmation(
        self, *, topic_arn: str = TOPIC_ARN, subscribe_url: str | None = None, kind: str = "SubscriptionConfirmation"
    ) -> dict[str, Any]:
        url = subscribe_url or (
            f"http://127.0.0.1:{self.port}/?Action=ConfirmSubscription&TopicArn={topic_arn}&Token=tok"
        )
        return self.sign(
            {
                "Type": kind,
                "MessageId": str(uuid.uuid4()),
                "Token": "tok",
                "TopicArn": topic_arn,
                "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": url,
                "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            }
        )


def ses_event(
    kind: str,
    ses_message_id: str,
    email: str,
    request_id: int | None = None,
    identity_format: bool = False,
    **detail: Any,
) -> dict[str, Any]:
    """An SES event as SES publishes it (configuration-set format, or identity notifications)."""
    mail: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "messageId": ses_message_id,
        "source": "news@example.org",
        "destination": [email],
    }
    if request_id is not None and not identity_format:
        mail["tags"] = {"request_id": [str(request_id)], "ses:configuration-set": ["events"]}
    body: dict[str, Any] = {("notificationType" if identity_format else "eventType"): kind, "mail": mail}
    if kind == "Bounce":
        body["bounce"] = {
            "bounceType": detail.get("bounce_type", "Permanent"),
            "bounceSubType": detail.get("bounce_subtype", "General"),
            "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1"}],
            "timestamp": mail["timestamp"],
        }
    elif kind == "Complaint":
        body["complaint"] = {
            "complainedRecipients": [{"emailAddress": email}],
            "complaintFeedbackType": "abuse",
            "timestamp": mail["timestamp"],
        }
    elif kind == "Delivery":
        body["delivery"] = {"recipients": [email], "timestamp": mail["timestamp"], "smtpResponse": "250 ok"}
    return body
