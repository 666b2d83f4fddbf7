"""Every cross-process message survives pickling unchanged."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from pipeline import messages
from pipeline.messages import Message

RECIPIENT = messages.Recipient(1, "a@x.io", "t", 2)
SAMPLES: list[Message] = [
    messages.EndOfStream("sender"),
    messages.WakeUp(),
    messages.Ping(1, "ingest"),
    messages.Pong(1),
    messages.RequeueClaimed(1, "sender"),
    messages.Requeued(1, 3),
    messages.StoreMessages(
        1, "ingest", (messages.NewMessage("t", "S", "<p>", ("a@x.io",)),), 5, messages.CampaignFacts(1), "k", "d"
    ),
    messages.Stored(1, "{}", True),
    messages.Refused(1, messages.Refusal.STORAGE_ERROR, "y"),
    messages.WorkAdded(5),
    messages.Demand(3),
    messages.ClaimDue(1, "scheduler", 5, 6),
    messages.Claimed(1, (RECIPIENT,), None),
    messages.Deliver((RECIPIENT,)),
    messages.RecordOutcomes(
        1,
        "sender",
        (
            messages.Sent(1, "m", 2),
            messages.SendFailed(1, "c", "r", 2),
            messages.Released(1),
            messages.Withheld(2, "paused"),
        ),
    ),
    messages.OutcomesRecorded(1),
    messages.HoldTopic(1, "ingest", "t", "cancelled"),
    messages.HoldTopicRows(1, "ingest", "t", "paused", (1, 2)),
    messages.TopicHeld(1, "t", "cancelled", 3, True, 7),
    messages.HoldAddress(1, "ingest", 4, "a@x.io", "news"),
    messages.HoldAddressRows(1, "ingest", 4, "a@x.io", None, (1,)),
    messages.AddressHeld(1, "a@x.io", "news", 2, True, 7),
    messages.ResumeTopic(1, "ingest", "t"),
    messages.GuardState("hard bounce rate 5% is above the 4% limit"),
    messages.GetGuard(1, "ingest"),
    messages.GuardReport(1, 300, 2, 0, None, None),
    messages.ResumeAccount(1, "ingest"),
    messages.AccountResumed(1, True),
    messages.TopicResumed(1, "t", 3, True, None),
    messages.RecordEvents(
        1, "ingest", "sns-1", "{}", (messages.SesEvent("sns-1", "bounce", "Permanent/General", "a@x.io", "m", 4, 5),)
    ),
    messages.EventsRecorded(1, 1, 1),
    messages.RecordEventsTogether(
        1,
        "ingest",
        (messages.RecordEvents(1, "ingest", "sns-1", "{}", ()), messages.RecordEvents(2, "ingest", "s", "", ())),
    ),
    messages.EventsRecordedTogether(
        1, (messages.EventsRecorded(1, 1, 1), messages.Refused(2, messages.Refusal.UNPROCESSABLE, "no"))
    ),
    messages.RecordOpens(1, "ingest", (("request_id=4&sig=ab", 5), ("x", 7))),
    messages.OpensRecorded(1, 2),
    messages.ChangeSuppression(1, "ingest", "a@x.io", "manual"),
    messages.SuppressionChanged(1, True),
    messages.GetQuota(1, "ingest"),
    messages.QuotaReport(1, (200.0, 1.0, 5.0), None),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_pickle_round_trip(message: Message) -> None:
    assert pickle.loads(pickle.dumps(message)) == message


def test_every_message_type_is_covered_and_frozen() -> None:
    types = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
    }
    assert types == {type(m) for m in SAMPLES} | {
        messages.NewMessage,
        messages.Recipient,
        messages.Sent,
        messages.SendFailed,
        messages.Released,
        messages.Withheld,
        messages.SesEvent,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPIENT.email = "b@x.io"  # type: ignore[misc]
