"""SendBulkEmail through the real tree and the fake SES: up to 50 recipients per call, each
entry's Status sorted like a SendEmail error, and the rate counted in recipients.

What a user relies on: every recipient ends sent or failed exactly as with SendEmail (a
rejected address fails once with SES's reason; a throttled or transient entry is retried
alone and sent once); an error of the whole call sends nobody in it and loses nobody; no
rolling second carries more recipients than MAX_SEND_PER_SECOND; a backlog at 1,000/s goes
out in full calls, and at 14/s a call never carries more than the rate allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tests.fakes.fake_ses import FakeSes, max_in_any_window
from tests.helpers import Tree, campaign, ses_env, wait_until


def all_done(tree: Tree, total: int) -> bool:
    statuses = tree.statuses()
    return sum(statuses.values()) == total and set(statuses) <= {"sent", "failed"}


def test_each_entrys_status_decides_for_its_recipient_alone(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    # Given SES answering a fifth of the entries throttled, a tenth transient, and one address rejected
    fake_ses.entry_throttle_ratio, fake_ses.entry_transient_ratio = 0.2, 0.1
    fake_ses.entry_status = {"u7@example.com": "MESSAGE_REJECTED"}
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="400"))
    emails = [f"u{i}@example.com" for i in range(400)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: all_done(tree, 400), 30, "every recipient to end sent or failed")
    # Then the rejected one failed once with SES's reason, and everyone else was sent exactly once
    assert tree.statuses() == {"sent": 399, "failed": 1}
    with tree.db() as conn:
        failed = conn.execute("SELECT email, error_code, error_message FROM recipients WHERE status = 'failed'")
        assert failed.fetchall() == [("u7@example.com", "MessageRejected", "Email address is not verified.")]
    with fake_ses._lock:
        entries = list(fake_ses.calls)
    assert Counter(c.to for c in entries if c.outcome == "rejected") == {"u7@example.com": 1}
    sent = Counter(c.to for c in entries if c.outcome == "sent")
    assert set(sent) == set(emails) - {"u7@example.com"} and set(sent.values()) == {1}
    # A throttled or transient entry came back alone: its address was tried once more per failure
    retried = Counter(c.to for c in entries if c.outcome in ("throttled", "error"))
    assert retried, "the fake answered some entries throttled or transient"
    tries = Counter(c.to for c in entries)
    assert all(tries[address] == failures + 1 for address, failures in retried.items())
    assert max(fake_ses.bulk_sizes()) <= 20  # 50 ms of 400/s


def test_an_error_of_the_whole_call_sends_nobody_in_it_and_loses_nobody(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.throttle_ratio, fake_ses.error_ratio = 0.15, 0.1
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="400"))
    emails = [f"u{i}@example.com" for i in range(400)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: all_done(tree, 400), 60, "every recipient to end sent")
    assert tree.statuses() == {"sent": 400}
    outcomes = Counter(call.outcome for call in fake_ses.bulk_calls)
    assert outcomes["throttled"] and outcomes["error"], "whole calls were refused"
    assert Counter(c.to for c in fake_ses.sent()) == dict.fromkeys(emails, 1)


def test_at_1000_per_s_a_backlog_goes_out_in_full_calls_and_no_second_carries_more(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.02
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="1000"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(3000)]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 3000}, 30, "all 3,000 sent")
    sizes = fake_ses.bulk_sizes()
    assert max(sizes) == 50
    in_full_calls = sum(size for size in sizes if size == 50)
    assert in_full_calls >= 0.8 * 3000, f"only {in_full_calls} of 3,000 went in calls of 50: {Counter(sizes)}"
    assert max_in_any_window(fake_ses.arrivals("sent")) <= 1000


def test_at_14_per_s_each_call_carries_one_recipient(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="14"))
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(20)]))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 20}, 15, "all 20 sent")
    # 50 ms of 14/s is less than one recipient: each goes out alone, through SendEmail
    assert fake_ses.bulk_sizes() == [] and len(fake_ses.sent()) == 20
    assert max_in_any_window(fake_ses.arrivals("sent")) <= 14


def test_a_policy_without_send_bulk_email_falls_back_to_send_email_and_fails_nobody(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    # Given an IAM policy that allows ses:SendEmail only
    fake_ses.bulk_denied = True
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="400"))
    emails = [f"u{i}@example.com" for i in range(100)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: tree.statuses() == {"sent": 100}, 20, "all 100 sent")
    # Then the first bulk call is the only one; everyone went out by SendEmail, once
    assert [c.outcome for c in fake_ses.bulk_calls] == ["denied"]
    assert Counter(c.to for c in fake_ses.sent()) == dict.fromkeys(emails, 1)
    assert "SendBulkEmail is not available here (HTTP 403 AccessDeniedException)" in tree.log()
