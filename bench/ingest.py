"""Ingest: time to the answer for one POST of 10,000 recipients, beside the same rows
inserted straight into SQLite (same schema, same durability) in the same run.

    python -m bench.ingest [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine, running_tree
from pipeline.db.schema import open_writer
from tests.helpers import campaign

RECIPIENTS = 10_000


def direct_insert_s(emails: list[str]) -> float:
    """The floor: one transaction straight into a fresh database, no HTTP, no validation."""
    with tempfile.TemporaryDirectory() as folder:
        conn = open_writer(Path(folder) / "direct.db")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        content_id = conn.execute(
            "INSERT INTO contents (subject, html, created_at_ms) VALUES (?, ?, ?)", ("Hello", "<p>x</p>", 0)
        ).lastrowid
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms)"
            " VALUES (?, ?, ?, 'pending', ?, ?)",
            ((content_id, "bench", e, 0, 0) for e in emails),
        )
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    # Scheduled far ahead, so sending does not compete with what we measure.
    with running_tree({"SCHEDULE_HORIZON_DAYS": "3650"}) as tree:
        posted, direct = [], []
        for round_no in range(rounds + 1):
            emails = [f"user{round_no}-{i}@example{i % 100}.com" for i in range(RECIPIENTS)]
            body = campaign(emails, topic_id="bench", scheduled_at="2035-01-01T00:00:00Z")
            started = time.perf_counter()
            status, answer, _ = tree.post("/v1/messages", body)
            elapsed = time.perf_counter() - started
            assert status == 200 and answer["success"] == RECIPIENTS, answer
            if round_no:  # the first round warms caches and the connection
                posted.append(elapsed)
                direct.append(direct_insert_s(emails))
    post_ms, direct_ms = statistics.median(posted) * 1000, statistics.median(direct) * 1000
    print(f"ingest ({machine()}), median of {rounds} rounds of {RECIPIENTS:,} recipients:")
    print(f"  POST /v1/messages, time to the answer: {post_ms:8.1f} ms")
    print(f"  direct SQLite insert (same rows):      {direct_ms:8.1f} ms")
    print(f"  ratio POST / direct:                   {post_ms / direct_ms:8.2f}  (aim: < 2)")


if __name__ == "__main__":
    main()
