"""Where mail goes: SES v2 through one reused aiobotocore client, or the local outbox.

One session and one client per process for its whole life (a new client costs about
100 ms and a new session 0.8 MB), created inside the running loop. The SDK's own
retries are off (`total_max_attempts=1`): the sender owns retries, so a 429 is not
retried five times behind the rate limiter's back. The connection pool is sized to
the sender's in-flight limit (botocore's default of 10 caps a 20 ms SES at ~400/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from config.settings import SesSettings
from pipeline.mail import OutgoingMail, to_mime
from pipeline.ses_bulk import MAX_ENTRIES, BulkEntry, EntryOutcome, bulk_request, map_results
from pipeline.unsubscribe import MIME_POLICY
from pipeline.wire_stamp import StampedHttpSession

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class Quota:
    """SES's sending limits as GetAccount reports them (-1: unlimited)."""

    max_24_hour_send: float
    max_send_rate: float
    sent_last_24_hours: float
    # GetAccount's EnforcementStatus, SendingEnabled and ProductionAccessEnabled (None: not said).
    enforcement_status: str | None = None
    sending_enabled: bool | None = None
    production_access: bool | None = None

    @property
    def remaining(self) -> float:
        if self.max_24_hour_send < 0:
            return float("inf")
        return max(0.0, self.max_24_hour_send - self.sent_last_24_hours)


Admission = Callable[[], Awaitable[None]]
# The recipients whose call is being made (one for SendEmail, up to 50 for SendBulkEmail), for
# the admission check at the wire.
CURRENT_CALL: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("current_call")


class SendWithdrawn(Exception):
    """Raised by the admission check: recipients of the call were held (cancelled or paused)
    before its request left, so none of it may leave."""

    def __init__(self, recipient_ids: list[int]) -> None:
        super().__init__(f"{len(recipient_ids)} recipient(s) held before the call left")
        self.recipient_ids = recipient_ids


class BulkUnsupported(Exception):
    """The endpoint has no SendBulkEmail (moto, some SES look-alikes): a 404 that is not SES's
    own NotFoundException. Nothing was sent; the sender goes on with SendEmail."""


async def admit_at_once() -> None:
    """The default admission: no wire-level limit."""


class MailBackend(Protocol):
    name: str
    # Awaited right before each request leaves (the rate limiter's hard window).
    admission: Admission
    # Recipients per call: 50 where SendBulkEmail is used, else 1 (`send` only).
    bulk_max: int

    async def send(self, mail: OutgoingMail) -> str:
        """Hand one mail over; return its message id or raise (see ses_errors.classify)."""

    async def send_bulk(self, entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        """Hand up to `bulk_max` mails over in one call; each entry's outcome, by position.
        An error of the whole call is raised (it applies to every entry)."""

    async def quota(self) -> Quota | None:
        """The account's limits, or None where there are none (the outbox)."""


class SesBackend:
    name = "ses"

    def __init__(self, settings: SesSettings, client: Any, session: Any, client_args: dict[str, Any]) -> None:
        self.settings = settings
        self.client = client
        self._session = session
        self._client_args = client_args
        self.admission: Admission = admit_at_once
        self.bulk_max = MAX_ENTRIES if settings.bulk else 1
        # After serialising and signing, just before the HTTP request is written.
        client.meta.events.register("before-send.sesv2.SendEmail", self._before_send)
        client.meta.events.register("before-send.sesv2.SendBulkEmail", self._before_send)

    async def _before_send(self, **_: Any) -> None:
        await self.admission()

    async def send(self, mail: OutgoingMail) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": self.settings.from_email,
            "Destination": {"ToAddresses": [mail.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": mail.subject, "Charset": "UTF-8"},
                    "Body": {
                        "Html": {"Data": mail.html, "Charset": "UTF-8"},
                        "Text": {"Data": mail.text or " ", "Charset": "UTF-8"},
                    },
                }
            },
            "EmailTags": [{"Name": name, "Value": value} for name, value in mail.tags],
        }
        if mail.headers:
            request["Content"]["Simple"]["Headers"] = [{"Name": name, "Value": value} for name, value in mail.headers]
        if self.settings.configuration_set:
            request["ConfigurationSetName"] = self.settings.configuration_set
        response = await self.client.send_email(**request)
        return str(response["MessageId"])

    async def send_bulk(self, entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        from botocore.exceptions import ClientError

        request = bulk_request(self.settings.from_email or "", self.settings.configuration_set, entries)
        try:
            response = await self.client.send_bulk_email(**request)
        except ClientError as problem:
            meta = problem.response.get("ResponseMetadata", {})
            code = str(problem.response.get("Error", {}).get("Code"))
            status = meta.get("HTTPStatusCode")
            # No such operation here (moto), or a policy that allows only ses:SendEmail.
            if (status == 404 and code != "NotFoundException") or (status == 403 and code.startswith("AccessDenied")):
                self.bulk_max = 1
                raise BulkUnsupported(f"HTTP {status}" if code == str(status) else f"HTTP {status} {code}") from None
            raise
        return map_results(entries, response)

    async def quota(self) -> Quota:
        """GetAccount (v2); falls back to v1 GetSendQuota where v2's is missing (moto)."""
        from botocore.exceptions import ClientError

        account: dict[str, Any] = {}
        try:
            account = await self.client.get_account()
            q = account["SendQuota"]
        except ClientError as problem:
            status = problem.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status not in (404, 501):
                raise
            async with self._session.create_client("ses", **self._client_args) as v1:
                q = await v1.get_send_quota()
        return Quota(
            float(q["Max24HourSend"]),
            float(q["MaxSendRate"]),
            float(q["SentLast24Hours"]),
            account.get("EnforcementStatus"),
            account.get("SendingEnabled"),
            account.get("ProductionAccessEnabled"),
        )


class OutboxBackend:
    """The embedded default: each mail becomes `<request_id>.eml` in OUTBOX_DIR."""

    name = "outbox"
    # One .eml per recipient: a bulk call would only group the files' writes.
    bulk_max = 1

    def __init__(self, settings: SesSettings) -> None:
        self.admission: Admission = admit_at_once
        self.folder = settings.outbox_dir
        self.sender = settings.from_email or "ses-sender@localhost"
        self.folder.mkdir(parents=True, exist_ok=True)

    async def send(self, mail: OutgoingMail) -> str:
        # MailNotBuildable fails this recipient alone. MIME_POLICY keeps List-Unsubscribe as
        # written: the default policy would RFC 2047-encode its one long word (the URL).
        data = to_mime(mail, self.sender).as_bytes(policy=MIME_POLICY)
        await self.admission()
        await asyncio.to_thread(_write_atomically, self.folder / f"{mail.recipient_id}.eml", data)
        return f"outbox-{uuid.uuid4()}"

    async def send_bulk(self, entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        raise NotImplementedError("the outbox writes one mail at a time (bulk_max is 1)")

    async def quota(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(".eml.partial")
    partial.write_bytes(data)
    partial.replace(path)


@contextlib.asynccontextmanager
async def open_backend(settings: SesSettings, max_in_flight: int) -> AsyncIterator[MailBackend]:
    """The backend the settings chose, open for the life of the sender."""
    if settings.backend == "outbox":
        yield OutboxBackend(settings)
        return
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    session = get_session()
    client_args: dict[str, Any] = {
        "region_name": settings.region,
        "config": AioConfig(
            max_pool_connections=max(max_in_flight, 10),
            retries={"total_max_attempts": 1},
            # The request is checked before it is made (pipeline/ses_bulk.py checks each bulk
            # entry against the model's limits), and SES checks it again: botocore's own pass
            # over a 250 KB bulk body costs a quarter of the call's CPU (bench/bulk_probe.py).
            parameter_validation=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            # The rate limiter's window starts when a request is written (pipeline/wire_stamp.py).
            http_session_cls=StampedHttpSession,
        ),
    }
    async with session.create_client("sesv2", **client_args) as client:
        yield SesBackend(settings, client, session, client_args)
