"""What an SES failure means for the recipient: retry, pause everything, or fail for good.

Reference: shared/reference/aws-ses-sns.md section 1.5. Throttling and transient
errors are retried and never recorded as failures; account-level stops pause all
sending; only permanent rejections fail the recipient, with SES's code and message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from botocore.exceptions import ClientError, ParamValidationError

from pipeline.mail import MailNotBuildable


class Verdict(Enum):
    THROTTLED = "throttled"  # retry this one later; slow the whole sender down
    TRANSIENT = "transient"  # SES or the network is unwell: pause, then retry
    ACCOUNT_PAUSED = "account_paused"  # nothing can be sent for a while: pause all
    PERMANENT = "permanent"  # SES refused this message for good: record `failed`


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    code: str
    message: str


THROTTLE_CODES: Final = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
)
ACCOUNT_CODES: Final = frozenset(
    {
        "SendingPausedException",
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
        "AccountSuspendedException",
    }
)
MAX_MESSAGE_CHARS: Final = 1000


def classify(error: BaseException) -> Classified:
    """Sort one failed send into a Verdict.

    Anything that is not SES's own answer (connection refused, reset, timeouts, and any
    error we do not know) is transient: retried, never recorded as a failure. The local
    exceptions are a mail that cannot be built and a request botocore refuses to build:
    no retry can fix either, so they fail that recipient alone.
    """
    if isinstance(error, ClientError):
        return _classify_client_error(error)
    if isinstance(error, MailNotBuildable):
        return Classified(Verdict.PERMANENT, "InvalidMessage", _short(str(error)))
    verdict = Verdict.PERMANENT if isinstance(error, ParamValidationError) else Verdict.TRANSIENT
    return Classified(verdict, type(error).__name__, _short(str(error)))


def _classify_client_error(error: ClientError) -> Classified:
    info = error.response.get("Error", {})
    code = str(info.get("Code") or "Unknown")
    message = _short(str(info.get("Message") or ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLE_CODES or status == 429:
        # The daily quota arrives in the same class as the rate; only the text tells them apart.
        if "daily" in message.lower() or "quota" in message.lower():
            return Classified(Verdict.ACCOUNT_PAUSED, code, message)
        return Classified(Verdict.THROTTLED, code, message)
    if code in ACCOUNT_CODES:
        return Classified(Verdict.ACCOUNT_PAUSED, code, message)
    if status >= 500 or status == 0:
        return Classified(Verdict.TRANSIENT, code, message)
    return Classified(Verdict.PERMANENT, code, message)


def _short(text: str) -> str:
    return text[:MAX_MESSAGE_CHARS]
