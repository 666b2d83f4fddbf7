"""Scale: memory (RSS of every process of the tree) with 1,000,000 recipients scheduled and
while due work is being sent against the fake SES at a high limit, and the scheduler's
lateness (arrival at SES minus due time, p50/p99) under that load.

    python -m bench.scale [--scheduled 1000000] [--busy]

--busy keeps the recorder busy while the due work is sent: campaigns of 10,000 more
recipients (due in 2035) are posted back to back until the due sends are done, so a
claim made at the due time waits behind their commits.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from bench.common import arrivals, fake_ses_process, machine, running_tree, ses_env, wait_sent
from tests.helpers import Tree, campaign

BATCH = 10_000
RATE = 2_000.0
# Due work during the measurement: this many recipients due at each of these many seconds.
PER_SECOND = 200
SECONDS = 20


def rss_mb(tree: Tree) -> dict[str, float]:
    assert tree.process is not None
    pids = {"supervisor": tree.process.pid, **tree.children()}
    sizes = {}
    for name, pid in pids.items():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes[name] = int(line.split()[1]) / 1024
    return sizes


def show(label: str, sizes: dict[str, float]) -> None:
    parts = ", ".join(f"{name} {mb:.0f}" for name, mb in sorted(sizes.items()))
    print(f"  {label:34s} total {sum(sizes.values()):6.0f} MB  ({parts})")


busy_posted = [0]


def keep_posting(tree: Tree, done: threading.Event) -> None:
    """Campaigns of BATCH recipients due in 2035, back to back, until `done`."""
    round_no = 0
    while not done.is_set():
        emails = [f"busy{round_no}-{i}@example.com" for i in range(BATCH)]
        body = campaign(emails, topic_id=f"busy{round_no % 10}", scheduled_at="2035-01-01T00:00:00Z")
        assert tree.post("/v1/messages", body)[0] == 200
        busy_posted[0] += BATCH
        round_no += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scheduled", type=int, default=1_000_000)
    parser.add_argument("--busy", action="store_true", help="post 10,000-recipient campaigns while due work is sent")
    arguments = parser.parse_args()
    scheduled = arguments.scheduled
    with fake_ses_process() as url, running_tree({**ses_env(url, RATE), "SCHEDULE_HORIZON_DAYS": "3650"}) as tree:
        print(f"scale ({machine()}):")
        show("idle", rss_mb(tree))
        started = time.perf_counter()
        for start in range(0, scheduled, BATCH):
            emails = [f"u{i}@example{i % 100}.com" for i in range(start, min(scheduled, start + BATCH))]
            body = campaign(emails, topic_id=f"far{start // 100_000}", scheduled_at="2035-01-01T00:00:00Z")
            assert tree.post("/v1/messages", body)[0] == 200
        took = time.perf_counter() - started
        print(f"  stored {scheduled:,} scheduled recipients in {took:.0f} s ({scheduled / took:,.0f}/s)")
        show(f"{scheduled:,} scheduled", rss_mb(tree))
        first_due = int(time.time()) + 3
        for second in range(SECONDS):
            due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first_due + second))
            emails = [f"due{second}-{i}@example.com" for i in range(PER_SECOND)]
            assert tree.post("/v1/messages", campaign(emails, topic_id=f"due{second}", scheduled_at=due))[0] == 200
        done = threading.Event()
        busy = threading.Thread(target=keep_posting, args=(tree, done), daemon=True)
        if arguments.busy:
            busy.start()
        peak: dict[str, float] = {}
        while tree.statuses().get("sent", 0) < PER_SECOND * SECONDS:
            for name, mb in rss_mb(tree).items():
                peak[name] = max(peak.get(name, 0.0), mb)
            time.sleep(0.5)
        show("peak while sending due work", peak)
        wait_sent(tree, PER_SECOND * SECONDS, 120)
        done.set()
        if arguments.busy:
            busy.join()
            print(f"  while {busy_posted[0]:,} more recipients were posted in campaigns of {BATCH:,} (--busy)")
        times = arrivals(url)
    # Recipients due at second k arrive in order; lateness = arrival - due for each.
    lateness = []
    for second in range(SECONDS):
        window = [t - (first_due + second) for t in times if first_due + second <= t < first_due + second + 1]
        lateness.extend(window)
    lateness.sort()
    late = [t for t in times if all(not (first_due + s <= t < first_due + s + 1) for s in range(SECONDS))]
    print(f"  lateness of {len(times):,} due sends at {PER_SECOND}/s (limit {RATE:.0f}/s):")
    print(
        f"    p50 {statistics.median(lateness) * 1000:.0f} ms, p99 {lateness[int(len(lateness) * 0.99)] * 1000:.0f} ms,"
        f" {len(late)} outside their due second"
    )


if __name__ == "__main__":
    main()
