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
from stages.ingest.sns import SigningKeys, check_cert_url, check_subscribe_url, parse_envelope, verify

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures" / "aws_sns_signed.json").read_text())
# The fixtures come from several topics; the allow-list has its own tests below.
POLICY = SnsSettings(allow_any_topic=True)
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses"


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


def test_without_an_allow_list_a_genuinely_signed_notification_is_refused() -> None:
    """Any AWS account can sign with a topic of its own: by default no topic is trusted."""
    with pytest.raises(ApiError) as refused:
        check(FIXTURES["messages"][1], SnsSettings())
    assert refused.value.status == 403 and "SNS_TOPIC_ARNS" in refused.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1a.pem",  # not https
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1a.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1a.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1a.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1a.pem",
        "https://s3.amazonaws.com/bucket/SimpleNotificationService-1a.pem",
        # An S3 bucket named "sns" matched the old host pattern.
        "https://sns.s3.amazonaws.com/SimpleNotificationService-1a.pem",
        # Another region than the topic's.
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1a.pem",
        # The path must be SNS's own certificate name.
        "https://sns.us-east-1.amazonaws.com/bucket/key.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-not-hex.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1a.pem.txt",
    ],
)
def test_certificate_urls_off_the_topics_sns_host_are_refused(url: str) -> None:
    with pytest.raises(ApiError) as refused:
        check_cert_url(url, POLICY, TOPIC)
    assert refused.value.status == 403


def test_the_genuine_certificate_url_form_is_accepted() -> None:
    check_cert_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7ff5318490ec.pem", POLICY, TOPIC)


def test_china_region_hosts_are_sns_hosts() -> None:
    topic = "arn:aws-cn:sns:cn-north-1:123456789012:ses"
    check_cert_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1a.pem", POLICY, topic)


def test_a_host_pattern_replaces_the_host_rule_but_not_the_path_rule() -> None:
    policy = SnsSettings(allow_any_topic=True, cert_host_pattern=r"sns\.example\.test")
    check_cert_url("https://sns.example.test/SimpleNotificationService-1a.pem", policy, TOPIC)
    for url in (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1a.pem",
        "https://sns.example.test/other.pem",
    ):
        with pytest.raises(ApiError):
            check_cert_url(url, policy, TOPIC)


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
        (json.dumps({**FIXTURES["messages"][0], "Message": "\ud800"}).encode(), "Notification"),
    ):
        with pytest.raises(ApiError) as refused:
            parse_envelope(raw, header)
        assert refused.value.status == 400
    lambda_style = dict(FIXTURES["messages"][0])
    lambda_style["SigningCertUrl"] = lambda_style.pop("SigningCertURL")
    assert "SigningCertURL" in parse_envelope(json.dumps(lambda_style).encode(), "Notification")


@pytest.mark.parametrize("missing", ["Signature", "SigningCertURL"])
def test_a_message_without_its_proof_is_forbidden(missing: str) -> None:
    envelope = dict(FIXTURES["messages"][0])
    del envelope[missing]
    with pytest.raises(ApiError) as refused:
        parse_envelope(json.dumps(envelope).encode(), "Notification")
    assert refused.value.status == 403
