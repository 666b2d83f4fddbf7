"""Two trees on one machine, on different ports, sharing one PostgreSQL and one fake SES.

Posts go to both nodes, SNS events and pixel hits are split between them; the sending
node is killed with -9 mid-campaign and the other takes over; a rolling restart of both
loses nothing. Across both nodes, no rolling second at the fake SES exceeds the rate.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.db.blocking_pg import BlockingPostgres
from stages.sender import in_flight_limit
from tests.fakes.fake_ses import FakeSes, max_in_any_window
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, http, post_sns, ses_env, wait_until

RATE = 100
PIXEL = re.compile(r'src="http://[^"]+(/v1/events/open\?[^"]+)"')


@pytest.fixture
def node(pg_url: str, fake_ses: FakeSes, tmp_path: Path) -> Iterator[Callable[[str], Tree]]:
    """node(name) -> a started tree of that name on the shared database and fake SES."""
    trees: list[Tree] = []

    def start(name: str) -> Tree:
        env = {**ses_env(fake_ses.url, MAX_SEND_PER_SECOND=str(RATE)), **sns_env()}
        tree = Tree(tmp_path / name, {**env, "DATABASE_URL": pg_url, "NODE_NAME": name})
        trees.append(tree)
        return tree.start()

    yield start
    for tree in trees:
        tree.stop()


def sender_of(tree: Tree) -> dict[str, object]:
    status, body, _ = tree.get("/ready")
    assert status == 200, body
    return dict(body["sender"])


def kill_9(tree: Tree) -> None:
    """The whole node at once: supervisor and every stage."""
    pids = [*tree.children().values()]
    assert tree.process is not None
    tree.process.kill()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    tree.process.wait()


def statuses(tree: Tree) -> dict[str, int]:
    return tree.statuses()


def every_one_sent(tree: Tree, total: int) -> bool:
    return statuses(tree) == {"sent": total}


def split_events_and_opens(nodes: list[Tree], fake_ses: FakeSes, fake_sns: FakeSns) -> tuple[int, int]:
    """A delivery for every address sent so far and a pixel hit for each, alternating between the nodes."""
    calls = {c.to: c for c in fake_ses.sent()}
    with nodes[0].db() as conn:
        rows = conn.execute("SELECT id, email, message_id FROM recipients WHERE status = 'sent' ORDER BY id").fetchall()
    delivered = opened = 0
    for index, (rid, email, message_id) in enumerate(rows[:60]):
        target = nodes[index % 2]
        status, _ = post_sns(target, fake_sns.notification(ses_event("Delivery", message_id, email, request_id=rid)))
        assert status == 200
        delivered += 1
        found = PIXEL.search(calls[email].html.replace("&amp;", "&"))
        assert found is not None
        status, _, _ = http("GET", nodes[(index + 1) % 2].base + urllib.parse.unquote(found.group(1)))
        assert status == 200
        opened += 1
    return delivered, opened


def test_a_standby_takes_over_when_the_sending_node_is_killed(
    node: Callable[[str], Tree], fake_ses: FakeSes, fake_sns: FakeSns
) -> None:
    fake_ses.latency_s = 0.02
    a = node("node-a")
    b = node("node-b")
    assert sender_of(a) == {"node": "node-a", "this_node": True}
    assert sender_of(b) == {"node": "node-a", "this_node": False}
    # Given campaigns posted to both nodes
    from_a = [f"a{i}@example.com" for i in range(600)]
    from_b = [f"b{i}@example.com" for i in range(600)]
    assert a.post("/v1/messages", campaign(from_a, topic_id="from-a"))[0] == 200
    assert b.post("/v1/messages", campaign(from_b, topic_id="from-b"))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 150, 30, "sending to be under way")
    delivered, opened = split_events_and_opens([a, b], fake_ses, fake_sns)
    # (the pixel answers before its open is committed, in batches: wait for them, as for a 2xx to SNS)
    wait_until(lambda: sum(a.get(f"/v1/topics/{t}")[1]["opened"] for t in ("from-a", "from-b")) == opened, 10, "opens")
    # When the sending node dies at once
    kill_9(a)
    # Then the standby sends the rest, and what both nodes recorded is there
    wait_until(lambda: every_one_sent(b, 1200), 90, "every recipient sent by the standby")
    assert sender_of(b) == {"node": "node-b", "this_node": True}
    counts = Counter(c.to for c in fake_ses.sent())
    assert set(counts) == {*from_a, *from_b}, "nothing accepted is lost"
    assert sum(n - 1 for n in counts.values()) <= in_flight_limit(RATE, 256)
    assert max_in_any_window(fake_ses.arrivals(), 1.0) <= RATE, "one rate budget across both nodes"
    topics = [b.get(f"/v1/topics/{t}")[1] for t in ("from-a", "from-b")]
    assert sum(t["delivered"] for t in topics) == delivered and sum(t["opened"] for t in topics) == opened


def test_a_rolling_restart_of_both_nodes_loses_nothing(node: Callable[[str], Tree], fake_ses: FakeSes) -> None:
    fake_ses.latency_s = 0.02
    a = node("node-a")
    b = node("node-b")
    emails = [f"u{i}@example.com" for i in range(900)]
    assert a.post("/v1/messages", campaign(emails[:450], topic_id="one"))[0] == 200
    assert b.post("/v1/messages", campaign(emails[450:], topic_id="two"))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 100, 30, "sending to be under way")
    # The standby first, then the sending node: each stopped (SIGTERM) and started again
    b.stop()
    b = node("node-b")
    assert sender_of(b) == {"node": "node-a", "this_node": False}
    more = [f"late{i}@example.com" for i in range(50)]
    assert b.post("/v1/messages", campaign(more, topic_id="three"))[0] == 200
    sent_before = len(fake_ses.sent())
    a.stop()
    wait_until(lambda: sender_of(b)["this_node"] or None, 30, "node-b to take over sending")
    a = node("node-a")
    assert sender_of(a) == {"node": "node-b", "this_node": False}
    wait_until(lambda: every_one_sent(a, 950), 90, "every recipient sent")
    assert len(fake_ses.sent()) > sent_before
    counts = Counter(c.to for c in fake_ses.sent())
    assert set(counts) == {*emails, *more}
    assert sum(n - 1 for n in counts.values()) <= in_flight_limit(RATE, 256)
    assert max_in_any_window(fake_ses.arrivals(), 1.0) <= RATE


def test_a_cancel_and_an_unsubscribe_at_the_standby_are_carried_to_the_sending_node(
    node: Callable[[str], Tree], fake_ses: FakeSes
) -> None:
    fake_ses.latency_s = 0.02
    a = node("node-a")
    b = node("node-b")
    assert sender_of(a)["this_node"]
    emails = [f"u{i}@example.com" for i in range(1000)]
    assert b.post("/v1/messages", campaign(emails, topic_id="big"))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 50, 30, "sending to be under way")
    # An unsubscribe through the one-click link of a sent message, posted to the standby
    first = fake_ses.sent()[0]
    link = re.match(r"<([^>]+)>", dict(first.headers)["List-Unsubscribe"])
    assert link is not None
    path = urllib.parse.urlsplit(link.group(1)).path
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = http("POST", b.base + path, b"List-Unsubscribe=One-Click", headers=form)
    assert status == 200
    # A cancel at the standby: answered by the sending node, exactly
    status, answer, _ = http("DELETE", f"{b.base}/v1/topics/big")
    answered = time.time()
    assert status == 200 and answer["cancelled"] > 0
    wait_until(lambda: set(statuses(b)) <= {"sent", "cancelled"}, 20, "in-flight calls to finish")
    with b.db() as conn:
        held = dict(conn.execute("SELECT status, COUNT(*) FROM recipients GROUP BY status").fetchall())
        left = {r[0] for r in conn.execute("SELECT email FROM suppressions")}
    assert held["cancelled"] == answer["cancelled"] and sum(held.values()) == 1000
    assert left == {first.to}
    reached = [c for c in fake_ses.sent() if c.tags.get("topic_id") == "big"]
    assert len({c.to for c in reached}) == held["sent"], "nothing counted as cancelled reached SES"
    assert max(c.wall for c in reached) <= answered, "nothing reached SES after the answer"


def test_a_hold_while_no_node_sends_is_refused_and_changes_nothing(node: Callable[[str], Tree]) -> None:
    a = node("node-a")
    b = node("node-b")
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert a.post("/v1/messages", campaign(["x@example.com"], topic_id="t", scheduled_at=later))[0] == 200
    kill_9(a)
    # Until node-b takes the lock, nobody sends: the cancel is refused with Retry-After, and nothing changes
    status, answer, headers = http("DELETE", f"{b.base}/v1/topics/t")
    if status == 503:
        assert headers["Retry-After"] == "5" and statuses(b) == {"pending": 1}, answer
    # Once node-b sends (it takes over a grace period after it holds the lock), the retried cancel is done
    wait_until(lambda: sender_of(b)["this_node"] or None, 30, "node-b to hold the sender lock")
    status, answer, _ = wait_until(lambda: ok(http("DELETE", f"{b.base}/v1/topics/t")), 30, "the cancel to be taken")
    assert answer["cancelled"] == 1 and statuses(b) == {"cancelled": 1}


def ok(answer: tuple[int, Any, dict[str, str]]) -> tuple[int, Any, dict[str, str]] | None:
    """The answer once it is a 2xx; None (ask again) while it is a 503 that says to retry."""
    status, body, headers = answer
    if status == 503 and "Retry-After" in headers:
        return None
    assert status == 200, (status, body)
    return answer


def test_a_lost_database_session_is_replaced_and_nothing_accepted_is_lost(
    node: Callable[[str], Tree], fake_ses: FakeSes, pg_url: str
) -> None:
    a = node("node-a")
    emails = [f"u{i}@example.com" for i in range(400)]
    assert a.post("/v1/messages", campaign(emails, topic_id="one"))[0] == 200
    wait_until(lambda: len(fake_ses.sent()) >= 50, 30, "sending to be under way")
    # Given every session of the node ends at once (PostgreSQL restarted, a proxy dropped them)
    with BlockingPostgres(pg_url) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid != pg_backend_pid() AND application_name LIKE 'ses-sender%'"
        ).fetchall()
    assert len(ended) >= 3  # the recorder's, the sender lock's, the contents reader's (and the readers')
    # Then posts are taken again (after 503s that say to retry), and everything is sent
    more = [f"late{i}@example.com" for i in range(20)]
    wait_until(lambda: ok(a.post("/v1/messages", campaign(more, topic_id="two"))), 30, "a post to be taken")
    wait_until(lambda: every_one_sent(a, 420), 90, "every recipient sent")
    counts = Counter(c.to for c in fake_ses.sent())
    assert set(counts) >= {*emails, *more}
    assert sum(n - 1 for n in counts.values()) <= in_flight_limit(RATE, 256)
