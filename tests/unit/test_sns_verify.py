"""SNS signature checks against genuine AWS-signed messages, and the URL rules."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from config.settings import SnsSettings
from stages.ingest.errors import ApiError
from stages.ingest.sns import SigningKeys, check_sns_url, check_subscribe_url, parse_envelope, verify

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures" / "aws_sns_signed.json").read_text())
POLICY = SnsSettings()


def keys_with_aws_cert() -> SigningKeys:
    """A key cache already holding the genuine certificate: no network in unit tests."""
    keys = SigningKeys(session=None)  # type: ignore[arg-type]
    key = x509.load_pem_x509_certificate(FIXTURES["certificate"].encode()).public_key()
    keys.keys[FIXTURES["messages"][0]["SigningCertURL"]] = key  # type: ignore[assignment]
    return keys


def check(envelope: dict[str, Any], policy: SnsSettings = POLICY) -> None:
    asyncio.run(verify(envelope, policy, keys_with_aws_cert()))


@pytest.mark.parametrize(
    "message",
    FIXTURES["messages"],
    ids=lambda m: f"v{m['SignatureVersion']}-{'subject' if 'Subject' in m else 'plain'}",
)
def test_genuine_aws_signatures_verify(message: dict[str, Any]) -> None:
    check(message)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", "Hello world!"),
        ("Subject", "Other"),
        ("TopicArn", "arn:aws:sns:us-east-2:1:other"),
        ("Timestamp", "2022-07-28T21:23:59.317Z"),
        ("SignatureVersion", "2"),
    ],
)
def test_tampered_messages_are_refused(field: str, value: str) -> None:
    tampered = copy.deepcopy(FIXTURES["messages"][2])  # v1 with a Subject
    tampered[field] = value
    with pytest.raises(ApiError) as refused:
        check(tampered)
    assert refused.value.status == 403


def test_a_wrong_signature_and_unknown_versions_are_refused() -> None:
    message = copy.deepcopy(FIXTURES["messages"][0])
    message["Signature"] = base64.b64encode(b"x" * 256).decode()
    with pytest.raises(ApiError):
        check(message)
    message["SignatureVersion"] = "3"
    with pytest.raises(ApiError):
        check(message)


def test_topic_allow_list() -> None:
    message = FIXTURES["messages"][1]
    check(message, SnsSettings(topic_arns=(message["TopicArn"],)))
    with pytest.raises(ApiError) as refused:
        check(message, SnsSettings(topic_arns=("arn:aws:sns:us-east-2:295079676684:other",)))
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",  # not https
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://user@sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        "https://s3.amazonaws.com/bucket/x.pem",
    ],
)
def test_certificate_urls_off_sns_hosts_are_refused(url: str) -> None:
    with pytest.raises(ApiError):
        check_sns_url(url, POLICY, "signing certificate URL")


def test_china_region_hosts_are_sns_hosts() -> None:
    check_sns_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", POLICY, "url")


def test_subscribe_url_must_confirm_this_topic_on_an_sns_host() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:ses"
    good = f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=abc"
    assert check_subscribe_url({"SubscribeURL": good, "TopicArn": topic}, POLICY) == good
    for bad in (
        f"https://169.254.169.254/?Action=ConfirmSubscription&TopicArn={topic}",
        f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&TopicArn={topic}",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:other",
    ):
        with pytest.raises(ApiError):
            check_subscribe_url({"SubscribeURL": bad, "TopicArn": topic}, POLICY)


def test_envelopes_are_parsed_strictly() -> None:
    body = json.dumps(FIXTURES["messages"][0]).encode()
    assert parse_envelope(body, "Notification")["MessageId"] == FIXTURES["messages"][0]["MessageId"]
    for raw, header in (
        (body, None),
        (body, "SubscriptionConfirmation"),
        (b"not json", "Notification"),
        (b"[]", "Notification"),
    ):
        with pytest.raises(ApiError) as refused:
            parse_envelope(raw, header)
        assert refused.value.status == 400
    lambda_style = dict(FIXTURES["messages"][0])
    lambda_style["SigningCertUrl"] = lambda_style.pop("SigningCertURL")
    assert "SigningCertURL" in parse_envelope(json.dumps(lambda_style).encode(), "Notification")
