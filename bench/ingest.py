"""Ingest: time to the answer for one POST of 10,000 recipients, beside the same rows
inserted straight into SQLite (same schema, same durability) in the same run; then the
same with each recipient's template data (three fields) and a templated message.

    python -m bench.ingest [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, running_tree
from pipeline.db.schema import open_writer
from tests.helpers import campaign

RECIPIENTS = 10_000


def direct_insert_s(emails: list[str], data: list[str] | None = None) -> float:
    """The floor: one transaction straight into a fresh database, no HTTP, no validation."""
    with tempfile.TemporaryDirectory() as folder:
        conn = open_writer(Path(folder) / "direct.db")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        content_id = conn.execute(
            "INSERT INTO contents (subject, html, created_at_ms) VALUES (?, ?, ?)", ("Hello", "<p>x</p>", 0)
        ).lastrowid
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms, data)"
            " VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            ((content_id, "bench", e, 0, 0, d) for e, d in zip(emails, data or [None] * len(emails), strict=True)),
        )
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
        return elapsed


def personalized(emails: list[str]) -> dict[str, Any]:
    data = [
        {"first_name": f"Name{i}", "plan": ("free", "pro")[i % 2], "city": f"City{i % 50}"} for i in range(len(emails))
    ]
    message = {
        "topic_id": "bench-personal",
        "subject": "Hi {{first_name}}",
        "content": "<p>Hello {{first_name}} from {{city}}, you are on {{plan}}.</p>",
        "recipients": [{"email": e, "data": d} for e, d in zip(emails, data, strict=True)],
    }
    return {"messages": [message], "scheduled_at": "2035-01-01T00:00:00Z"}


def measure(tree: Any, rounds: int, personal: bool) -> tuple[float, float]:
    posted, direct = [], []
    for round_no in range(rounds + 1):
        emails = [f"user{round_no}-{i}{'p' if personal else ''}@example{i % 100}.com" for i in range(RECIPIENTS)]
        if personal:
            body = personalized(emails)
            data = [json.dumps(r["data"], separators=(",", ":")) for r in body["messages"][0]["recipients"]]
        else:
            body, data = campaign(emails, topic_id="bench", scheduled_at="2035-01-01T00:00:00Z"), None
        started = time.perf_counter()
        status, answer, _ = tree.post("/v1/messages", body)
        elapsed = time.perf_counter() - started
        assert status == 200 and answer["success"] == RECIPIENTS, answer
        if round_no:  # the first round warms caches and the connection
            posted.append(elapsed)
            direct.append(direct_insert_s(emails, data))
    return statistics.median(posted) * 1000, statistics.median(direct) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    # Scheduled far ahead, so sending does not compete with what we measure.
    with running_tree({"SCHEDULE_HORIZON_DAYS": "3650"}) as tree:
        for label, personal in (("plain", False), ("personalized, 3 data fields each", True)):
            post_ms, direct_ms = measure(tree, rounds, personal)
            print(f"ingest ({machine()}), {label}, median of {rounds} rounds of {RECIPIENTS:,} recipients:")
            print(f"  POST /v1/messages, time to the answer: {post_ms:8.1f} ms")
            print(f"  direct SQLite insert (same rows):      {direct_ms:8.1f} ms")
            print(f"  ratio POST / direct:                   {post_ms / direct_ms:8.2f}  (aim: < 2)")


if __name__ == "__main__":
    main()
