"""Every SES failure lands in the right bucket: retry, pause everything, or fail."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError, ReadTimeoutError

from pipeline.mail import MailNotBuildable
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
        (client_error("SlowDown", 429), Verdict.THROTTLED),  # an unknown code, but HTTP 429 is a throttle
        (client_error("Throttling", 400, "Daily message quota exceeded."), Verdict.ACCOUNT_PAUSED),
        (client_error("TooManyRequestsException", 429, "Daily message quota exceeded"), Verdict.ACCOUNT_PAUSED),
        (client_error("Throttling", 400, "Daily sending limit reached"), Verdict.ACCOUNT_PAUSED),
        (client_error("LimitExceededException", 400, "Sending QUOTA exhausted"), Verdict.ACCOUNT_PAUSED),
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


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("Throttling", 400, "Maximum sending rate exceeded."),
        ("Throttling", 400, "Daily message quota exceeded."),
        ("AccountSuspendedException", 400, "Your account is suspended."),
        ("InternalFailure", 500, "Internal error."),
        ("MessageRejected", 400, "Email address is not verified."),
    ],
)
def test_every_ses_answer_keeps_its_code_and_message(code: str, status: int, message: str) -> None:
    # The code names a pause in the logs and a failure in the API; the message says why.
    classified = classify(client_error(code, status, message))
    assert (classified.code, classified.message) == (code, message)


def test_an_ses_error_without_details_is_an_unknown_transient_one() -> None:
    classified = classify(ClientError({}, "SendEmail"))
    assert (classified.verdict, classified.code, classified.message) == (Verdict.TRANSIENT, "Unknown", "")


def test_a_mail_that_cannot_be_built_fails_that_recipient_with_the_reason() -> None:
    classified = classify(MailNotBuildable("the message cannot be built: bad header"))
    assert classified.verdict is Verdict.PERMANENT
    assert (classified.code, classified.message) == ("InvalidMessage", "the message cannot be built: bad header")


def test_a_local_error_is_named_by_its_class_and_keeps_its_text() -> None:
    classified = classify(ConnectionResetError("connection reset by peer"))
    assert (classified.code, classified.message) == ("ConnectionResetError", "connection reset by peer")
