"""Every SES failure lands in the right bucket: retry, pause everything, or fail."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError, ReadTimeoutError

from pipeline.ses_errors import Verdict, classify


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail"
    )


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (client_error("TooManyRequestsException", 429, "Maximum sending rate exceeded."), Verdict.THROTTLED),
        (client_error("Throttling", 400, "Maximum sending rate exceeded."), Verdict.THROTTLED),
        (client_error("LimitExceededException", 400), Verdict.THROTTLED),
        (client_error("Throttling", 400, "Daily message quota exceeded."), Verdict.ACCOUNT_PAUSED),
        (client_error("TooManyRequestsException", 429, "Daily message quota exceeded"), Verdict.ACCOUNT_PAUSED),
        (client_error("SendingPausedException", 400), Verdict.ACCOUNT_PAUSED),
        (client_error("AccountSuspendedException", 400), Verdict.ACCOUNT_PAUSED),
        (client_error("MessageRejected", 400, "Email address is not verified."), Verdict.PERMANENT),
        (client_error("MailFromDomainNotVerifiedException", 400), Verdict.PERMANENT),
        (client_error("BadRequestException", 400), Verdict.PERMANENT),
        (client_error("InternalFailure", 500), Verdict.TRANSIENT),
        (client_error("ServiceUnavailable", 503), Verdict.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://x"), Verdict.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://x"), Verdict.TRANSIENT),
        (ConnectionResetError(), Verdict.TRANSIENT),
        (TimeoutError(), Verdict.TRANSIENT),
        (ParamValidationError(report="bad"), Verdict.PERMANENT),
    ],
    ids=lambda v: v.name if isinstance(v, Verdict) else type(v).__name__,
)
def test_classify(error: BaseException, verdict: Verdict) -> None:
    assert classify(error).verdict is verdict


def test_the_reason_is_kept_and_bounded() -> None:
    classified = classify(client_error("MessageRejected", 400, "x" * 5000))
    assert classified.code == "MessageRejected" and len(classified.message) == 1000
