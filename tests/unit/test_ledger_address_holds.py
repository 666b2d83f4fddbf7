"""An unsubscribe is a hold of one address (in one list, or in all mail) that takes the
cancel's path through the ledger, so it wins the same races."""

from __future__ import annotations

from pipeline.db.status import Status
from pipeline.messages import AddressHeld, HoldAddress, HoldAddressRows, HoldTopic, Recipient, TopicHeld
from stages.sender.ledger import Ledger


def recipient(rid: int, email: str, list_id: str | None = None, topic: str = "t") -> Recipient:
    return Recipient(rid, email, topic, 1, list_id)


def unsubscribe(email: str, list_id: str | None, corr_id: int = 1) -> HoldAddress:
    return HoldAddress(corr_id, "ingest", 99, email, list_id)


def answered(email: str, list_id: str | None, claim_seq: int) -> AddressHeld:
    return AddressHeld(1, email, list_id, 0, True, claim_seq)


def queued_ids(ledger: Ledger) -> list[int]:
    return [r.recipient_id for r in ledger.queued]


def test_an_unsubscribe_from_a_list_withdraws_that_list_only_and_any_case_of_the_address() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver(
        [recipient(1, "A@x.io", "news"), recipient(2, "a@x.io", "offers"), recipient(3, "b@x.io", "news")], 1
    )
    effects = ledger.hold(unsubscribe("a@x.io", "news"))
    assert isinstance(effects.hold_rows, HoldAddressRows) and effects.hold_rows.keep == ()
    assert queued_ids(ledger) == [2, 3] and ledger.taken == 2


def test_an_unsubscribe_from_all_mail_withdraws_every_list_and_calls_not_yet_admitted() -> None:
    ledger = Ledger(4, debug=True)
    ledger.deliver([recipient(1, "a@x.io", "news"), recipient(2, "a@x.io"), recipient(3, "a@x.io", "x")], 1)
    ledger.start_call(0.0)
    ledger.start_call(0.0)
    assert ledger.admit(1)  # on the wire: it may be at SES, so its row keeps its status
    effects = ledger.hold(unsubscribe("a@x.io", None))
    assert effects.hold_rows is not None and effects.hold_rows.keep == (1,)
    assert not ledger.admit(2) and not ledger.queued


def test_work_claimed_before_the_unsubscribe_is_dropped_and_later_work_waits_for_the_answer() -> None:
    ledger = Ledger(4, debug=True)
    ledger.hold(unsubscribe("a@x.io", "news"))
    ledger.deliver([recipient(1, "a@x.io", "news"), recipient(2, "b@x.io", "news")], 5)
    assert queued_ids(ledger) == [2] and ledger.parked_count == 1
    ledger.hold_answered(answered("a@x.io", "news", 7))
    assert queued_ids(ledger) == [2]  # claimed (5) before the recorder's point (7): it suppressed that row
    ledger.deliver([recipient(3, "a@x.io", "news")], 6)
    assert queued_ids(ledger) == [2]
    ledger.deliver([recipient(4, "a@x.io", "news")], 8)  # claimed after: the claim itself skips it
    assert queued_ids(ledger) == [2, 4] and not ledger.cut_seq  # the cut is forgotten once passed


def test_a_recipient_covered_by_two_holds_waits_for_both_answers() -> None:
    ledger = Ledger(4, debug=True)
    ledger.hold(HoldTopic(1, "ingest", "t", Status.PAUSED))
    ledger.hold(unsubscribe("a@x.io", None))
    ledger.deliver([recipient(1, "a@x.io")], 9)
    ledger.hold_answered(TopicHeld(1, "t", Status.PAUSED, 0, True, 8))
    assert not ledger.queued and ledger.parked_count == 1
    ledger.hold_answered(answered("a@x.io", None, 8))
    assert queued_ids(ledger) == [1]
