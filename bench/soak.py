"""Soak (not CI): a steady mixed load for a long time, printing one line a minute, so a leak
or a slow growth shows: POSTs, sends at the limit against the fake SES, signed SNS events
for what was sent, and pixel hits; per minute the throughput, errors, backlog and the RSS
of every process.

    python -m bench.soak [--minutes 30] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import fake_ses_process
from bench.scale import rss_mb
from pipeline import tracking
from pipeline.db.schema import tracking_key
from tests.fakes.fake_sns import FakeSns, ses_event, sns_env
from tests.helpers import Tree, campaign, http, ses_env


class Load:
    """Background traffic with counters; every request loop is bounded by `stop`."""

    def __init__(self, tree: Tree, sns: FakeSns, rate: float) -> None:
        self.tree, self.sns, self.rate = tree, sns, rate
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()

    def run(self, target: object) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def note(self, what: str, status: int) -> None:
        self.counts[what if 200 <= status < 300 else f"{what}_error"] += 1

    def posts(self) -> None:
        batch = 0
        while not self.stop.wait(1.0):  # one POST a second, sized to keep the sender at its limit
            emails = [f"s{batch}-{i}@example.com" for i in range(int(self.rate))]
            self.note(
                "post", http("POST", self.tree.base + "/v1/messages", campaign(emails, topic_id=f"soak{batch % 50}"))[0]
            )
            batch += 1

    def events_and_opens(self) -> None:
        last = 0
        with self.tree.db() as conn:
            key = tracking_key(conn)
        while not self.stop.wait(0.5):
            with self.tree.db() as conn:
                rows = conn.execute(
                    "SELECT id, email FROM recipients WHERE status = 'sent' AND id > ? ORDER BY id LIMIT 50", (last,)
                ).fetchall()
            for recipient_id, email in rows:
                envelope = self.sns.notification(ses_event("Delivery", "m", email, request_id=recipient_id))
                headers = {"x-amz-sns-message-type": "Notification"}
                self.note(
                    "sns",
                    http("POST", self.tree.base + "/v1/events/results", json.dumps(envelope).encode(), headers=headers)[
                        0
                    ],
                )
                self.note("pixel", http("GET", tracking.pixel_url(self.tree.base, key, recipient_id))[0])
                last = recipient_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    sns = FakeSns().start()
    with fake_ses_process() as url, tempfile.TemporaryDirectory() as folder:
        env = {**ses_env(url, MAX_SEND_PER_SECOND=str(args.rate)), **sns_env(LOG_LEVEL="WARNING")}
        tree = Tree(Path(folder), env).start()
        load = Load(tree, sns, args.rate)
        threads = [load.run(load.posts), load.run(load.events_and_opens)]
        print("minute  sent/s  posts  sns   pixel  errors  pending  total RSS MB (per process)")
        try:
            previous_sent, deadline = 0, time.monotonic() + args.minutes * 60
            minute = 0
            while time.monotonic() < deadline:
                time.sleep(60)
                minute += 1
                statuses = tree.statuses()
                sent = statuses.get("sent", 0)
                errors = sum(v for k, v in load.counts.items() if k.endswith("_error"))
                sizes = rss_mb(tree)
                per = " ".join(f"{k}={v:.0f}" for k, v in sorted(sizes.items()))
                print(
                    f"{minute:6d}  {(sent - previous_sent) / 60:6.1f}  {load.counts['post']:5d}"
                    f"  {load.counts['sns']:5d}  {load.counts['pixel']:5d}  {errors:6d}"
                    f"  {statuses.get('pending', 0):7d}"
                    f"  {sum(sizes.values()):6.0f} ({per})",
                    flush=True,
                )
                previous_sent = sent
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(30)
            tree.stop()
            sns.stop()


if __name__ == "__main__":
    main()
