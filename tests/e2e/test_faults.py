"""Break things on purpose and check the reliability contract with exact counts.

Each test reads the final state from the database and the fake SES's record. See
README, "Guarantees": accepted means committed; at least once, with duplicates bounded
by the sender's in-flight limit; SES faults pause, never fail; 2xx to SNS means recorded.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from stages.sender import in_flight_limit
from tests.fakes.fake_ses import FakeSes, max_in_any_window
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, http, ses_env, sqlite_only, wait_until

RATE = 400


def reached(fake: FakeSes) -> Counter[str]:
    """How many times each address reached SES and was accepted."""
    return Counter(c.to for c in fake.sent())


def all_done(tree: Tree, total: int) -> bool:
    statuses = tree.statuses()
    return sum(statuses.values()) == total and set(statuses) <= {"sent", "failed"}


def test_kill_9_of_the_sender_mid_send_loses_nothing_and_bounds_duplicates(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.02
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND=str(RATE)))
    emails = [f"u{i}@example.com" for i in range(5000)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 800, 20, "sending to be under way")
    os.kill(tree.children()["sender"], signal.SIGKILL)
    wait_until(lambda: all_done(tree, 5000), 90, "every recipient to end sent")
    counts = reached(fake_ses)
    assert set(counts) == set(emails), "SES saw every recipient at least once"
    twice = sum(n - 1 for n in counts.values())
    assert twice <= in_flight_limit(RATE, 256), f"{twice} sent twice"
    assert tree.statuses() == {"sent": 5000}


def test_kill_9_of_the_whole_tree_mid_send_then_start_again(
    make_tree: Callable[..., Tree], fake_ses: FakeSes, tmp_path: object
) -> None:
    fake_ses.latency_s = 0.02
    env = ses_env(fake_ses.url, MAX_SEND_PER_SECOND=str(RATE))
    tree = make_tree(env)
    emails = [f"u{i}@example.com" for i in range(3000)]
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 12))
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    assert tree.post("/v1/messages", campaign(["later@example.com"], topic_id="later", scheduled_at=later))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 500, 20, "sending to be under way")
    # Given the supervisor and every stage die at once
    pids = [*tree.children().values()]
    assert tree.process is not None
    tree.process.kill()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    tree.process.wait()
    # When it starts again on the same database
    again = make_tree(env, workdir=tree.workdir)
    wait_until(lambda: all_done(again, 3001), 90, "everything to be sent after the restart")
    counts = reached(fake_ses)
    assert set(counts) == {*emails, "later@example.com"}
    assert sum(n - 1 for n in counts.values()) <= in_flight_limit(RATE, 256)
    # Scheduled work kept its time.
    later_call = next(c for c in fake_ses.sent() if c.to == "later@example.com")
    assert later_call.wall >= time.mktime(time.strptime(later, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def test_kill_9_of_the_recorder_while_posts_arrive(make_tree: Callable[..., Tree], fake_ses: FakeSes) -> None:
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND=str(RATE)))
    answers: list[tuple[int, list[str]]] = []
    stop = threading.Event()

    def keep_posting() -> None:
        batch = 0
        while not stop.is_set():
            emails = [f"b{batch}-{i}@example.com" for i in range(20)]
            try:
                status = http("POST", tree.base + "/v1/messages", campaign(emails, topic_id=f"b{batch}"), timeout_s=20)[
                    0
                ]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = 0  # the connection dropped: not acknowledged
            answers.append((status, emails))
            batch += 1

    poster = threading.Thread(target=keep_posting)
    poster.start()
    try:
        wait_until(lambda: sum(1 for s, _ in answers if s == 200) >= 10, 20, "some accepted posts")
        os.kill(tree.children()["recorder"], signal.SIGKILL)
        wait_until(lambda: sum(1 for s, _ in answers if s == 200) >= 40, 60, "posts accepted after the restart")
    finally:
        stop.set()
        poster.join(30)
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 503, 0}, statuses
    accepted = [email for status, emails in answers if status == 200 for email in emails]
    with tree.db() as conn:
        stored = {row[0] for row in conn.execute("SELECT email FROM recipients")}
    assert set(accepted) <= stored, "every POST that got 200 is fully stored"
    # (POSTs that got no 200 may be stored too, so count the accepted addresses themselves)
    wait_until(lambda: set(accepted) <= set(reached(fake_ses)), 60, "every accepted recipient sent")


def test_kill_9_of_ingest_loses_no_acknowledged_event(make_tree: Callable[..., Tree], fake_sns: FakeSns) -> None:
    tree = make_tree(sns_env())
    acknowledged: list[str] = []
    stop = threading.Event()

    def keep_notifying() -> None:
        number = 0
        while not stop.is_set():
            envelope = fake_sns.notification(ses_event("Delivery", f"m{number}", f"u{number}@example.com"))
            headers = {"x-amz-sns-message-type": "Notification"}
            try:
                status = http(
                    "POST",
                    tree.base + "/v1/events/results",
                    json.dumps(envelope).encode(),
                    headers=headers,
                    timeout_s=20,
                )[0]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = 0
            if 200 <= status < 300:
                acknowledged.append(envelope["MessageId"])
            number += 1

    sender = threading.Thread(target=keep_notifying)
    sender.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20, 20, "some recorded events")
        os.kill(tree.children()["ingest"], signal.SIGKILL)
        count = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= count + 20, 60, "events recorded after the restart")
    finally:
        stop.set()
        sender.join(30)
    with tree.db() as conn:
        recorded = {row[0] for row in conn.execute("SELECT sns_message_id FROM events")}
    assert set(acknowledged) <= recorded, "an event that got 2xx is recorded"


def test_ses_throttling_errors_and_an_outage_end_with_everything_sent(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.throttle_ratio = 0.3
    tree = make_tree(ses_env(fake_ses.url, MAX_SEND_PER_SECOND="100"))
    emails = [f"u{i}@example.com" for i in range(600)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 100, 20, "sending under throttling")
    fake_ses.throttle_ratio, fake_ses.error_ratio = 0.0, 1.0  # then 500s for a while
    # It pauses on 500s rather than hammering, so a few errors are all a while brings.
    wait_until(lambda: fake_ses.count("error") >= 5, 30, "SES to answer 500s")
    fake_ses.error_ratio, fake_ses.down = 0.0, True  # then down
    time.sleep(5)  # the outage itself lasts 5 s: this sleep is the fault, not a wait for a result
    fake_ses.down = False
    recovered = time.time()
    wait_until(lambda: tree.statuses() == {"sent": 600}, 60, "everything sent after recovery")
    assert set(reached(fake_ses)) == set(emails)
    assert max_in_any_window(fake_ses.arrivals()) <= 100
    first_after = min(c.wall for c in fake_ses.sent() if c.wall >= recovered)
    assert first_after - recovered < 5.0, "sending resumed within seconds of recovery"


def test_an_unwritable_database_answers_503_and_recovers(make_tree: Callable[..., Tree], engine: str) -> None:
    sqlite_only(engine, "a second process holds the file's write lock (tests/postgres: a lost server)")
    tree = make_tree()
    # Given another process holds the database's write lock (as a full or failing disk would refuse writes)
    blocker = sqlite3.connect(tree.workdir / "test.db", isolation_level=None, timeout=1)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        status, answer, headers = tree.post("/v1/messages", campaign(["a@example.com"]), timeout_s=30)
        assert status == 503 and "Retry-After" in headers, answer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert tree.statuses() == {}, "nothing was acknowledged, nothing was stored"
    status, answer, _ = tree.post("/v1/messages", campaign(["a@example.com"]))
    assert status == 200 and answer["success"] == 1
    wait_until(lambda: tree.statuses() == {"sent": 1}, 10, "the recovery")


def test_sigterm_mid_run_abandons_no_call_and_a_restart_sends_nothing_twice(
    make_tree: Callable[..., Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.2  # calls are in flight when the TERM lands
    env = ses_env(fake_ses.url, MAX_SEND_PER_SECOND="100")
    tree = make_tree(env)
    emails = [f"u{i}@example.com" for i in range(800)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 150, 20, "sending under way")
    started = time.monotonic()
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(timeout_s=10) == 0
    assert time.monotonic() - started < 5.0
    # Every call SES accepted has its outcome recorded; nothing is left claimed.
    with tree.db() as conn:
        sent = {row[0] for row in conn.execute("SELECT email FROM recipients WHERE status = 'sent'")}
    assert sent == set(reached(fake_ses))
    assert set(tree.statuses()) <= {"sent", "pending"}
    again = make_tree(env, workdir=tree.workdir)
    wait_until(lambda: again.statuses() == {"sent": 800}, 60, "the rest after the restart")
    assert all(n == 1 for n in reached(fake_ses).values()), "nothing was sent twice"


@pytest.fixture
def tiny_disk(tmp_path: object) -> Iterator[str]:
    """A real 3 MB filesystem (tmpfs), so "disk full" is the kernel's ENOSPC, not a mock."""
    import subprocess
    from pathlib import Path

    mount_point = Path(str(tmp_path)) / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield str(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_full_disk_answers_503_stores_nothing_and_recovers(make_tree: Callable[..., Tree], tiny_disk: str) -> None:
    database = f"{tiny_disk}/full.db"
    tree = make_tree({"DATABASE_URL": f"sqlite://{database}"})

    def stored() -> int:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0])

    # Given the disk fills up
    filler = f"{tiny_disk}/filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    emails = [f"u{i}@example.com" for i in range(2000)]
    status, answer, headers = tree.post("/v1/messages", campaign(emails), timeout_s=30)
    assert status == 503 and "Retry-After" in headers, answer
    assert stored() == 0, "nothing acknowledged, nothing stored"
    # When space comes back, the server goes on without a restart
    os.remove(filler)
    status, answer, _ = tree.post("/v1/messages", campaign(emails))
    assert status == 200 and answer["success"] == 2000
    assert stored() == 2000
