"""SendBulkEmail: the request we build, what does not fit a bulk entry, and what each result means.

The last tests drive the fake SES over real HTTP with aiobotocore, as the sender will.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import botocore.session
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters

from config.settings import SesSettings
from pipeline.mail import OutgoingMail, Unsubscribe, build, prepare
from pipeline.ses import SesBackend
from pipeline.ses_bulk import (
    MAX_ENTRIES,
    MAX_TEMPLATE_DATA_BYTES,
    PASS_THROUGH,
    STATUS_AS_ERROR,
    BulkEntry,
    EntryFailed,
    EntrySent,
    SendAlone,
    bulk_request,
    classify_status,
    fail_all,
    map_results,
    partition,
    template_data,
    to_entry,
)
from pipeline.ses_errors import Verdict, classify
from tests.fakes.fake_ses import FakeSes

SENDER = "news@example.org"
HTML = "<html><body><p>Hello {{unsubscribe_url}}</p><p>Caf\u00e9 \u2603 &amp; {{ not a variable }}</p></body></html>"


def mail(i: int, **fields: Any) -> OutgoingMail:
    """A recipient's mail as pipeline.mail builds it: own subject, pixel, link and list headers."""
    content = prepare(f"Hello r{i} \u00e9", HTML, list_id="news", footer="<p>Unsubscribe</p>")
    link = f"https://mail.example.com/u/tok{i}"
    unsubscribe = Unsubscribe(
        link, (("List-Unsubscribe", f"<{link}>"), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    )
    built = build(content, i, f"user{i}@example.com", "spring_sale", f'<img src="/p/{i}">', unsubscribe)
    return replace(built, **fields)


def entry(i: int, **fields: Any) -> BulkEntry:
    made = to_entry(mail(i, **fields))
    assert isinstance(made, BulkEntry), made
    return made


# --- the request ---------------------------------------------------------------------------


def test_the_request_carries_each_recipients_own_mail_through_a_pass_through_template() -> None:
    entries = [entry(1), entry(2, headers=(), tags=(("request_id", "2"),), text="")]
    request = bulk_request(SENDER, "events", entries)

    assert request["FromEmailAddress"] == SENDER
    assert request["ConfigurationSetName"] == "events"
    assert request["DefaultContent"] == {"Template": {"TemplateContent": dict(PASS_THROUGH), "TemplateData": "{}"}}
    first, second = request["BulkEmailEntries"]
    one = mail(1)
    assert first["Destination"] == {"ToAddresses": ["user1@example.com"]}
    data = json.loads(first["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
    assert data == {"subject": one.subject, "html": one.html, "text": one.text}
    assert first["ReplacementTags"] == [
        {"Name": "request_id", "Value": "1"},
        {"Name": "topic_id", "Value": "spring_sale"},
    ]
    assert first["ReplacementHeaders"] == [{"Name": n, "Value": v} for n, v in one.headers]
    # A transactional mail has no headers, so its entry carries none; an empty text goes as " ", as SendEmail sends it.
    assert "ReplacementHeaders" not in second
    assert (
        json.loads(second["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])["text"] == " "
    )


def test_the_request_is_valid_for_botocores_model() -> None:
    model = botocore.session.get_session().get_service_model("sesv2").operation_model("SendBulkEmail")
    validate_parameters(bulk_request(SENDER, None, [entry(i) for i in range(MAX_ENTRIES)]), model.input_shape)


def test_no_configuration_set_means_none_in_the_request() -> None:
    assert "ConfigurationSetName" not in bulk_request(SENDER, None, [entry(1)])


@pytest.mark.parametrize("count", [0, MAX_ENTRIES + 1])
def test_a_call_carries_1_to_50_entries(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 50"):
        bulk_request(SENDER, None, [entry(i) for i in range(count)])


def test_the_data_keeps_non_ascii_as_it_is() -> None:
    data = template_data(mail(1))
    assert "\u2603" in data and "\\u2603" not in data


# --- what goes out alone -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"to": "jos\u00e9@example.com"}, "non-ASCII address"),
        ({"to": "user@b\u00fccher.example"}, "non-ASCII address"),
        ({"tags": (("request_id", "1"), ("topic", "spring sale"))}, "tag 'topic'"),
        ({"tags": (("request_id", "x" * 257),)}, "tag 'request_id'"),
        ({"headers": tuple((f"X-H{i}", "v") for i in range(16))}, "16 headers"),
        ({"headers": (("Reply-To", "a@example.com"),)}, "refused or repeated"),
        ({"headers": (("X-A", "1"), ("x-a", "2"))}, "refused or repeated"),
        ({"headers": (("X-A", "caf\u00e9"),)}, "not printable ASCII"),
        ({"headers": (("Bad:Name", "v"),)}, "not printable ASCII"),
        ({"headers": (("X-A", ""),)}, "not printable ASCII"),
        ({"headers": (("X-A", "v" * 996),)}, "not printable ASCII, or too long"),
        ({"headers": (("X-AB", "v" * 993),)}, "over 996 characters"),
    ],
)
def test_what_ses_might_refuse_goes_out_alone(fields: dict[str, Any], reason: str) -> None:
    made = to_entry(mail(1, **fields))
    assert isinstance(made, SendAlone) and reason in made.reason
    assert made.mail == mail(1, **fields)


def test_headers_at_the_limits_still_fit() -> None:
    fifteen = tuple((f"X-H{i}", "v") for i in range(15))
    assert isinstance(to_entry(mail(1, headers=fifteen)), BulkEntry)
    assert isinstance(to_entry(mail(1, headers=(("X-A", "v" * 993),))), BulkEntry)  # 3 + 993 = 996


def test_data_up_to_the_limit_fits_and_a_byte_more_goes_alone() -> None:
    overhead = len(template_data(mail(1, html="")).encode())
    at_limit = mail(1, html="x" * (MAX_TEMPLATE_DATA_BYTES - overhead))
    assert isinstance(to_entry(at_limit), BulkEntry)
    made = to_entry(mail(1, html="x" * (MAX_TEMPLATE_DATA_BYTES - overhead + 1)))
    assert isinstance(made, SendAlone) and "too large" in made.reason


def test_the_size_is_counted_in_utf8_bytes() -> None:
    overhead = len(template_data(mail(1, html="")).encode())
    # Fewer characters than the limit, more bytes (each "é" is two).
    made = to_entry(mail(1, html="\u00e9" * ((MAX_TEMPLATE_DATA_BYTES - overhead) // 2 + 1)))
    assert isinstance(made, SendAlone) and "too large" in made.reason


def test_partition_keeps_the_order() -> None:
    mails = [mail(1), mail(2, to="\u00e9@example.com"), mail(3), mail(4, headers=(("To", "x@example.com"),))]
    entries, alone = partition(mails)
    assert [e.mail.recipient_id for e in entries] == [1, 3]
    assert [a.mail.recipient_id for a in alone] == [2, 4]


# --- the results ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        ("MESSAGE_REJECTED", "Email address is not verified.", Verdict.PERMANENT),
        ("MAIL_FROM_DOMAIN_NOT_VERIFIED", "", Verdict.PERMANENT),
        ("CONFIGURATION_SET_NOT_FOUND", "", Verdict.PERMANENT),
        ("TEMPLATE_NOT_FOUND", "", Verdict.PERMANENT),
        ("ACCOUNT_SUSPENDED", "", Verdict.ACCOUNT_PAUSED),
        ("ACCOUNT_THROTTLED", "Maximum sending rate exceeded.", Verdict.THROTTLED),
        ("ACCOUNT_THROTTLED", "Daily message quota exceeded.", Verdict.ACCOUNT_PAUSED),
        ("ACCOUNT_DAILY_QUOTA_EXCEEDED", "", Verdict.ACCOUNT_PAUSED),
        ("INVALID_SENDING_POOL_NAME", "", Verdict.PERMANENT),
        ("ACCOUNT_SENDING_PAUSED", "", Verdict.ACCOUNT_PAUSED),
        ("CONFIGURATION_SET_SENDING_PAUSED", "", Verdict.ACCOUNT_PAUSED),
        ("INVALID_PARAMETER", "Bad tag.", Verdict.PERMANENT),
        ("TRANSIENT_FAILURE", "", Verdict.TRANSIENT),
        ("FAILED", "Something went wrong.", Verdict.PERMANENT),
        ("A_STATUS_FROM_THE_FUTURE", "", Verdict.TRANSIENT),
        (None, None, Verdict.TRANSIENT),
    ],
)
def test_each_status_gets_the_verdict_sendemail_gets(status: str | None, error: str | None, verdict: Verdict) -> None:
    result: dict[str, Any] = {"Status": status} if status else {}
    if error is not None:
        result["Error"] = error
    (outcome,) = map_results([entry(7)], {"BulkEmailEntryResults": [result]})
    assert isinstance(outcome, EntryFailed) and outcome.recipient_id == 7
    assert outcome.error.verdict is verdict
    # The code SendEmail would have given (one vocabulary in the database), SES's own text.
    code, _ = STATUS_AS_ERROR.get(status or "MissingStatus", (status or "MissingStatus", 0))
    assert outcome.error.code == code and outcome.error.message == (error or status or "MissingStatus")


def test_every_failed_status_in_the_model_is_mapped() -> None:
    model = botocore.session.get_session().get_service_model("sesv2")
    statuses = set(model.shape_for("BulkEmailStatus").enum)
    assert statuses - {"SUCCESS"} == set(STATUS_AS_ERROR)


def test_the_reason_is_bounded() -> None:
    assert len(classify_status("MESSAGE_REJECTED", "x" * 5000).message) == 1000


def test_results_are_mapped_by_position() -> None:
    entries = [entry(1), entry(2), entry(3)]
    results = [
        {"Status": "SUCCESS", "MessageId": "m1"},
        {"Status": "MESSAGE_REJECTED", "Error": "no"},
        {"Status": "SUCCESS"},  # no MessageId: SES still sends it, so it is sent, not retried
    ]
    one, two, three = map_results(entries, {"BulkEmailEntryResults": results})
    assert one == EntrySent(1, "m1")
    assert isinstance(two, EntryFailed) and two.recipient_id == 2 and two.error.verdict is Verdict.PERMANENT
    assert three == EntrySent(3, "")


@pytest.mark.parametrize(
    "response",
    [
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": "m1"}]},
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": f"m{i}"} for i in range(3)]},
        {"BulkEmailEntryResults": None},
        {},
    ],
    ids=["fewer", "more", "null", "missing"],
)
def test_a_count_mismatch_fails_every_entry_for_a_retry(response: dict[str, Any]) -> None:
    outcomes = map_results([entry(1), entry(2)], response)
    assert [o.recipient_id for o in outcomes] == [1, 2]
    for outcome in outcomes:
        assert isinstance(outcome, EntryFailed)
        assert outcome.error.verdict is Verdict.TRANSIENT and outcome.error.code == "BulkResultMismatch"


def test_a_result_that_is_not_an_object_is_transient() -> None:
    (outcome,) = map_results([entry(1)], {"BulkEmailEntryResults": ["SUCCESS"]})
    assert isinstance(outcome, EntryFailed) and outcome.error.verdict is Verdict.TRANSIENT


def test_an_error_on_the_whole_call_applies_to_every_entry() -> None:
    error = ClientError(
        {"Error": {"Code": "TooManyRequestsException", "Message": "Maximum sending rate exceeded."},
         "ResponseMetadata": {"HTTPStatusCode": 429}},
        "SendBulkEmail",
    )  # fmt: skip
    outcomes = fail_all([entry(1), entry(2)], classify(error))
    assert [(o.recipient_id, o.error.verdict) for o in outcomes if isinstance(o, EntryFailed)] == [
        (1, Verdict.THROTTLED),
        (2, Verdict.THROTTLED),
    ]


# --- over real HTTP, against the fake ------------------------------------------------------


@pytest.fixture
async def client(fake_ses: FakeSes) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "sesv2",
        region_name="us-east-1",
        endpoint_url=fake_ses.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as made:
        yield made


async def test_each_entry_gets_its_own_status_over_http(fake_ses: FakeSes, client: Any) -> None:
    fake_ses.reject = {"user2@example.com"}
    fake_ses.entry_status = {"user3@example.com": "ACCOUNT_SENDING_PAUSED", "user4@example.com": "ACCOUNT_THROTTLED"}
    entries = [entry(i) for i in range(1, 6)]

    response = await client.send_bulk_email(**bulk_request(SENDER, "events", entries))
    outcomes = map_results(entries, response)

    assert isinstance(outcomes[0], EntrySent) and outcomes[0].message_id.startswith("fake-")
    assert isinstance(outcomes[4], EntrySent)
    verdicts = [o.error.verdict if isinstance(o, EntryFailed) else None for o in outcomes[1:4]]
    assert verdicts == [Verdict.PERMANENT, Verdict.ACCOUNT_PAUSED, Verdict.THROTTLED]
    assert fake_ses.bulk_sizes() == [5]
    assert [c.outcome for c in fake_ses.calls] == ["sent", "rejected", "account_sending_paused", "throttled", "sent"]
    assert {c.to for c in fake_ses.sent()} == {"user1@example.com", "user5@example.com"}


async def test_each_recipient_gets_what_the_single_send_path_sends(fake_ses: FakeSes, client: Any) -> None:
    # Given the same personalized mails, once through SendEmail and once through SendBulkEmail
    mails = [mail(1), mail(2, text=""), mail(3, headers=(), subject="Transactional \u2603")]
    settings = SesSettings(backend="ses", region="us-east-1", from_email=SENDER, configuration_set="events")
    single = SesBackend(settings, client, get_session(), {})
    for one in mails:
        await single.send(one)
    entries, alone = partition(mails)
    assert alone == []
    await client.send_bulk_email(**bulk_request(SENDER, "events", entries))

    # Then what the fake recorded per recipient is the same both ways, and is the OutgoingMail
    sent = fake_ses.sent()
    singles, bulks = sent[: len(mails)], sent[len(mails) :]
    assert [c.bulk_call for c in singles] == [None] * 3 and [c.bulk_call for c in bulks] == [0] * 3
    for one, by_one, by_bulk in zip(mails, singles, bulks, strict=True):
        for call in (by_one, by_bulk):
            assert call.to == one.to
            assert (call.subject, call.html, call.text) == (one.subject, one.html, one.text or " ")
            assert call.headers == list(one.headers)
            assert call.tags == dict(one.tags)
            assert call.request["ConfigurationSetName"] == "events"
        for part in ("Subject", "Body"):
            assert by_bulk.request["Content"]["Simple"][part] == by_one.request["Content"]["Simple"][part]


async def test_a_throttled_call_fails_every_entry(fake_ses: FakeSes, client: Any) -> None:
    fake_ses.throttle_ratio = 1.0
    entries = [entry(1), entry(2)]
    with pytest.raises(ClientError) as raised:
        await client.send_bulk_email(**bulk_request(SENDER, None, entries))
    outcomes = fail_all(entries, classify(raised.value))
    assert {o.error.verdict for o in outcomes if isinstance(o, EntryFailed)} == {Verdict.THROTTLED}
    assert fake_ses.count("throttled") == 2 and fake_ses.bulk_calls[0].outcome == "throttled"


async def test_a_short_answer_is_a_mismatch(fake_ses: FakeSes, client: Any) -> None:
    fake_ses.drop_results = 1
    entries = [entry(1), entry(2)]
    outcomes = map_results(entries, await client.send_bulk_email(**bulk_request(SENDER, None, entries)))
    assert all(isinstance(o, EntryFailed) and o.error.code == "BulkResultMismatch" for o in outcomes)


async def test_per_entry_ratios_answer_throttled_and_transient(fake_ses: FakeSes, client: Any) -> None:
    fake_ses.entry_throttle_ratio, fake_ses.entry_transient_ratio = 0.3, 0.3
    entries = [entry(i) for i in range(50)]
    outcomes = map_results(entries, await client.send_bulk_email(**bulk_request(SENDER, None, entries)))
    verdicts = {o.error.verdict for o in outcomes if isinstance(o, EntryFailed)}
    assert verdicts == {Verdict.THROTTLED, Verdict.TRANSIENT}
    assert 0 < sum(isinstance(o, EntrySent) for o in outcomes) < 50


async def test_the_fake_refuses_what_inline_templates_cannot_do(fake_ses: FakeSes, client: Any) -> None:
    request = bulk_request(SENDER, None, [entry(1)])
    request["DefaultContent"]["Template"]["TemplateContent"]["Html"] = "{{#if html}}{{{html}}}{{/if}}"
    with pytest.raises(ClientError) as raised:
        await client.send_bulk_email(**request)
    assert classify(raised.value).verdict is Verdict.PERMANENT
    assert raised.value.response["Error"]["Code"] == "BadRequestException"
    assert fake_ses.count("bad_request") == 1


async def test_a_variable_the_data_lacks_is_accepted_but_never_sent(fake_ses: FakeSes, client: Any) -> None:
    request = bulk_request(SENDER, None, [entry(1)])
    request["BulkEmailEntries"][0]["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"] = "{}"
    response = await client.send_bulk_email(**request)
    assert response["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
    assert fake_ses.sent() == [] and fake_ses.count("render_failed") == 1
