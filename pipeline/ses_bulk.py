"""SendBulkEmail for the SES backend: one request for up to 50 recipients, and what each result means.

Pure: no I/O. Each recipient's mail is rendered locally (pipeline/mail.py), exactly as for
SendEmail, and SES gets a pass-through inline template whose Subject, Html and Text are one
variable each, filled from the entry's ReplacementTemplateData. So the subject, HTML and text
a recipient receives are the bytes the single-send path would have sent them.

A mail SES might refuse as a parameter error goes out alone through SendEmail (`SendAlone`):
inside a bulk call such an error could fail the whole call, and with it every other recipient
in it. Each entry's `Status` is sorted into ses_errors' verdicts by ses_errors itself.

Reference: shared/reference/aws-ses-sns.md sections 1.1 (headers, tags), 1.2 (the request,
the per-entry results and statuses), 1.5 (errors); the limits below are the botocore model's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from botocore.exceptions import ClientError

from pipeline.mail import OutgoingMail
from pipeline.ses_errors import MAX_MESSAGE_CHARS, Classified, Verdict, classify

MAX_ENTRIES: Final = 50  # BulkEmailEntries per call (send-personalized-email-api doc)
MAX_TEMPLATE_DATA_BYTES: Final = 262_144  # EmailTemplateData `max` in the model
MAX_HEADERS: Final = 15  # MessageHeaderList `max`
MAX_HEADER_CHARS: Final = 996  # name and value together (MessageHeaderValue's doc)
MAX_TAG_CHARS: Final = 256

# One plain variable per part. Triple braces: should SES ever HTML-escape a substitution, the
# HTML still arrives as it is; and if it does not accept them, every call fails loudly with a
# BadRequestException rather than sending altered mail. The names are single lowercase words:
# inline templates refuse snake_case and nested names ("Template contains unsupported
# operations", aws/aws-sdk-js-v3#6657).
PASS_THROUGH: Final[Mapping[str, str]] = {"Subject": "{{{subject}}}", "Html": "{{{html}}}", "Text": "{{{text}}}"}

HEADER_NAME: Final = re.compile(r"[!-9;-@A-~]{1,126}")
HEADER_VALUE: Final = re.compile(r"[ -~]{1,995}")
TAG: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Custom headers SES refuses with Simple or Template content and with SendBulkEmail (header-fields doc).
REFUSED_HEADERS: Final = frozenset(
    name.lower()
    for name in (
        "BCC",
        "CC",
        "Content-Disposition",
        "Content-Type",
        "Date",
        "From",
        "Message-ID",
        "MIME-Version",
        "Reply-To",
        "Return-Path",
        "Subject",
        "To",
    )
)

# For each per-entry Status, the error SendEmail raises for the same trouble (code, HTTP
# status), so that ses_errors.classify makes the decision in one place for both paths.
STATUS_AS_ERROR: Final[Mapping[str, tuple[str, int]]] = {
    "MESSAGE_REJECTED": ("MessageRejected", 400),
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": ("MailFromDomainNotVerifiedException", 400),
    "CONFIGURATION_SET_NOT_FOUND": ("NotFoundException", 404),
    "TEMPLATE_NOT_FOUND": ("NotFoundException", 404),
    "ACCOUNT_SUSPENDED": ("AccountSuspendedException", 400),
    "ACCOUNT_THROTTLED": ("TooManyRequestsException", 429),
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": ("TooManyRequestsException", 429),
    "INVALID_SENDING_POOL_NAME": ("BadRequestException", 400),
    "ACCOUNT_SENDING_PAUSED": ("SendingPausedException", 400),
    "CONFIGURATION_SET_SENDING_PAUSED": ("ConfigurationSetSendingPausedException", 400),
    "INVALID_PARAMETER": ("BadRequestException", 400),
    "TRANSIENT_FAILURE": ("InternalFailure", 500),
    # "Unable to process your request. See the error message": permanent, like an unknown 4xx.
    # A transient verdict would retry a mail that fails the same way every time, forever.
    "FAILED": ("BadRequestException", 400),
}
# ses_errors tells the daily quota from the rate by the text; this status says it by its name.
DAILY_QUOTA_TEXT: Final = "Daily message quota exceeded."


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One recipient's place in a SendBulkEmail call."""

    mail: OutgoingMail
    template_data: str  # the ReplacementTemplateData: this recipient's subject, html and text as JSON


@dataclass(frozen=True, slots=True)
class SendAlone:
    """A mail that must go out through SendEmail, and why."""

    mail: OutgoingMail
    reason: str


@dataclass(frozen=True, slots=True)
class EntrySent:
    recipient_id: int
    message_id: str  # "" if SES said SUCCESS without one: it still sends, so it is not retried


@dataclass(frozen=True, slots=True)
class EntryFailed:
    recipient_id: int
    error: Classified


EntryOutcome = EntrySent | EntryFailed


# --- the request ---------------------------------------------------------------------------


def template_data(mail: OutgoingMail) -> str:
    """The JSON the pass-through template is filled from (text " " when empty, as SendEmail sends)."""
    data = {"subject": mail.subject, "html": mail.html, "text": mail.text or " "}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def to_entry(mail: OutgoingMail) -> BulkEntry | SendAlone:
    """The mail as a bulk entry, or the reason it must be sent alone."""
    problem = _address_problem(mail.to) or _tags_problem(mail.tags) or _headers_problem(mail.headers)
    if problem:
        return SendAlone(mail, problem)
    data = template_data(mail)
    # Counted in UTF-8 bytes: never fewer than the characters or UTF-16 units SES might count.
    size = len(data) if data.isascii() else len(data.encode())
    if size > MAX_TEMPLATE_DATA_BYTES:
        return SendAlone(mail, f"too large for a bulk entry ({size} of {MAX_TEMPLATE_DATA_BYTES} bytes)")
    return BulkEntry(mail, data)


def partition(mails: Iterable[OutgoingMail]) -> tuple[list[BulkEntry], list[SendAlone]]:
    """Split mails into bulk entries and mails to send alone, keeping their order."""
    entries: list[BulkEntry] = []
    alone: list[SendAlone] = []
    for mail in mails:
        match to_entry(mail):
            case BulkEntry() as entry:
                entries.append(entry)
            case SendAlone() as single:
                alone.append(single)
    return entries, alone


def bulk_request(from_email: str, configuration_set: str | None, entries: Sequence[BulkEntry]) -> dict[str, Any]:
    """The SendBulkEmail arguments for 1 to 50 entries, with the inline pass-through template."""
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise ValueError(f"a bulk call carries 1 to {MAX_ENTRIES} entries, not {len(entries)}")
    request: dict[str, Any] = {
        "FromEmailAddress": from_email,
        # Default data without the variables: an entry that somehow lacks its own fails to
        # render (SES's Rendering Failure) instead of going out blank.
        "DefaultContent": {"Template": {"TemplateContent": dict(PASS_THROUGH), "TemplateData": "{}"}},
        "BulkEmailEntries": [_wire_entry(entry) for entry in entries],
    }
    if configuration_set:
        request["ConfigurationSetName"] = configuration_set
    return request


def _wire_entry(entry: BulkEntry) -> dict[str, Any]:
    # Every header goes per entry, none in the template: an entry gets exactly its own mail's
    # headers (a transactional mail has none), and an entry's header replaces a template one.
    mail = entry.mail
    wire: dict[str, Any] = {
        "Destination": {"ToAddresses": [mail.to]},
        "ReplacementEmailContent": {"ReplacementTemplate": {"ReplacementTemplateData": entry.template_data}},
    }
    if mail.tags:
        wire["ReplacementTags"] = [{"Name": name, "Value": value} for name, value in mail.tags]
    if mail.headers:
        wire["ReplacementHeaders"] = [{"Name": name, "Value": value} for name, value in mail.headers]
    return wire


def _address_problem(to: str) -> str | None:
    # No SMTPUTF8: the local part must be ASCII and the domain Punycode (Destination's doc).
    return None if to.isascii() else "a non-ASCII address"


def _tags_problem(tags: Sequence[tuple[str, str]]) -> str | None:
    for name, value in tags:
        if not (TAG.fullmatch(name) and TAG.fullmatch(value)):
            return f"tag {name[:40]!r}: only [A-Za-z0-9_-], 1 to {MAX_TAG_CHARS} characters"
    return None


def _headers_problem(headers: Sequence[tuple[str, str]]) -> str | None:
    if len(headers) > MAX_HEADERS:
        return f"{len(headers)} headers (at most {MAX_HEADERS})"
    seen: set[str] = set()
    for name, value in headers:
        key = name.lower()
        if key in REFUSED_HEADERS or key in seen:
            # A repeat: how ReplacementHeaders treats two of a name is not documented.
            return f"header {name[:40]!r} is refused or repeated"
        seen.add(key)
        if not (HEADER_NAME.fullmatch(name) and HEADER_VALUE.fullmatch(value)):
            return f"header {name[:40]!r}: not printable ASCII, or too long"
        if len(name) + len(value) > MAX_HEADER_CHARS:
            return f"header {name[:40]!r}: name and value over {MAX_HEADER_CHARS} characters"
    return None


# --- the results ---------------------------------------------------------------------------


def map_results(entries: Sequence[BulkEntry], response: Mapping[str, Any]) -> list[EntryOutcome]:
    """Each entry's outcome, by position; a result count that does not match fails every entry."""
    results = response.get("BulkEmailEntryResults")
    if not isinstance(results, list) or len(results) != len(entries):
        got = len(results) if isinstance(results, list) else "no"
        # Not an answer we can use (never observed): retried like any unknown trouble. Whoever
        # SES did take gets a duplicate, within this one call.
        error = Classified(Verdict.TRANSIENT, "BulkResultMismatch", f"{got} results for {len(entries)} entries")
        return fail_all(entries, error)
    return [_outcome(entry.mail.recipient_id, result) for entry, result in zip(entries, results, strict=True)]


def fail_all(entries: Sequence[BulkEntry], error: Classified) -> list[EntryOutcome]:
    """An error on the whole call (ses_errors.classify of what it raised) applies to every entry."""
    return [EntryFailed(entry.mail.recipient_id, error) for entry in entries]


def _outcome(recipient_id: int, result: Any) -> EntryOutcome:
    if not isinstance(result, Mapping):
        return EntryFailed(recipient_id, classify_status(None, "a result that is not an object"))
    status = result.get("Status")
    if status == "SUCCESS":
        return EntrySent(recipient_id, str(result.get("MessageId") or ""))
    return EntryFailed(recipient_id, classify_status(status, result.get("Error")))


def classify_status(status: object, error: object) -> Classified:
    """Sort one entry's failed Status (and its Error text) into ses_errors' verdicts.

    The status goes through ses_errors.classify as the error SendEmail would have raised for
    it, and keeps that error's code: a recipient's `error_code` reads the same whichever path
    sent it (MESSAGE_REJECTED is `MessageRejected`). A status we do not know keeps its own
    name and arrives with no HTTP status, so it is transient, like any trouble ses_errors does
    not know. The message is SES's Error text, or the Status when SES gave none.
    """
    code = str(status or "MissingStatus")
    text = str(error or "") or code
    as_code, http_status = STATUS_AS_ERROR.get(code, (code, 0))
    probe = DAILY_QUOTA_TEXT if code == "ACCOUNT_DAILY_QUOTA_EXCEEDED" else text
    response: Any = {"Error": {"Code": as_code, "Message": probe}, "ResponseMetadata": {"HTTPStatusCode": http_status}}
    classified = classify(ClientError(response, "SendBulkEmail"))
    return replace(classified, code=as_code, message=text[:MAX_MESSAGE_CHARS])
