"""`import-original`: the original server's database, brought into ours with its counters exact."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.db.import_original import Unrecognised, open_original
from pipeline.db.original import OriginalDatabase, is_original
from pipeline.db.schema import open_writer
from pipeline.messages import CampaignFacts, ClaimDue, NewMessage, RecordOutcomes, Sent, StoreMessages
from stages.recorder import writes
from stages.recorder.claims import ClaimState, claim_due
from stages.recorder.import_original import Importer, Refused, import_file
from tests.helpers import SUPERVISOR

# R-new, exactly as migrations/20241228000000_initial_schema.sql creates it (original-server.md 4.1).
R_NEW_DDL = """
CREATE TABLE IF NOT EXISTS email_contents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject VARCHAR(255) NOT NULL,
    content TEXT NOT NULL,
    created_at DATETIME NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS email_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id VARCHAR(255) NOT NULL,
    content_id INTEGER NOT NULL,
    message_id VARCHAR(255) DEFAULT NULL,
    email VARCHAR(255) NOT NULL,
    scheduled_at DATETIME NOT NULL,
    status TINYINT NOT NULL DEFAULT 0,
    error VARCHAR(255) DEFAULT NULL,
    created_at DATETIME NOT NULL DEFAULT (datetime('now')),
    updated_at DATETIME NOT NULL DEFAULT (datetime('now')),
    deleted_at DATETIME,
    FOREIGN KEY (content_id) REFERENCES email_contents(id)
);
CREATE INDEX IF NOT EXISTS idx_requests_topic_id ON email_requests(topic_id);
CREATE INDEX IF NOT EXISTS idx_requests_content_id ON email_requests(content_id);
CREATE INDEX IF NOT EXISTS idx_requests_message_id ON email_requests(message_id);
CREATE INDEX IF NOT EXISTS idx_requests_status_scheduled ON email_requests(status, scheduled_at ASC);
CREATE INDEX IF NOT EXISTS idx_requests_status_created ON email_requests(status, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_requests_status_topic ON email_requests(status, topic_id);
CREATE TABLE IF NOT EXISTS email_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL,
    status VARCHAR(50) NOT NULL,
    raw TEXT,
    created_at DATETIME NOT NULL DEFAULT (datetime('now')),
    FOREIGN KEY (request_id) REFERENCES email_requests(id)
);
CREATE INDEX IF NOT EXISTS idx_results_request_id ON email_results(request_id);
CREATE INDEX IF NOT EXISTS idx_results_status ON email_results(status);
"""

# R-old, as the first init_database.sh creates it: subject and content on every request.
R_OLD_DDL = """
CREATE TABLE IF NOT EXISTS email_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id VARCHAR(255) NOT NULL,
    message_id VARCHAR(255) DEFAULT NULL,
    email VARCHAR(255) NOT NULL,
    subject VARCHAR(255) NOT NULL,
    content TEXT NOT NULL,
    scheduled_at DATETIME NOT NULL,
    status TINYINT NOT NULL DEFAULT 0,
    error VARCHAR(255) DEFAULT NULL,
    created_at DATETIME NOT NULL DEFAULT (datetime('now')),
    updated_at DATETIME NOT NULL DEFAULT (datetime('now')),
    deleted_at DATETIME
);
CREATE INDEX idx_requests_status ON email_requests(status);
CREATE INDEX idx_requests_scheduled_at ON email_requests(scheduled_at DESC);
CREATE INDEX idx_requests_topic_id ON email_requests(topic_id);
CREATE TABLE IF NOT EXISTS email_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL,
    status VARCHAR(50) NOT NULL,
    raw TEXT,
    created_at DATETIME NOT NULL DEFAULT (datetime('now')),
    FOREIGN KEY (request_id) REFERENCES email_requests(id)
);
"""

T0 = "2024-01-02 10:00:00"
# id, topic, content, email, status, message_id, error, scheduled_at, updated_at
REQUESTS: list[tuple[Any, ...]] = [
    (1, "t1", 1, "a@x.io", 0, None, None, "2030-01-01 00:00:00", T0),  # Created, due later
    (2, "t1", 1, "b@x.io", 0, None, None, "2024-01-01 00:00:00", T0),  # Created, overdue
    (3, "t1", 1, "c@x.io", 2, "m-3", None, T0, "2024-01-02 10:00:01"),
    (4, "t1", 1, "d@x.io", 2, "m-4", None, T0, "2024-01-02 10:00:02"),
    (5, "t2", 2, "e@x.io", 3, None, "MessageRejected: Email address is not verified", T0, T0),
    (6, "t2", 2, "f@x.io", 4, None, None, "2030-01-01 00:00:00", T0),  # Stopped
    (7, "t2", 2, "g@x.io", 1, None, None, T0, T0),  # Processed, no sign it went out
    (8, "t2", 2, "h@x.io", 1, "m-8", None, T0, T0),  # Processed, but SES had accepted it
    (9, "t2", 2, "i@x.io", 9, None, None, T0, T0),  # a status no variant knows
    (10, "t1", 1, "j@x.io", 2, "m-10", None, T0, "2024-01-02 10:00:10"),
    (11, "t1", 1, "k@x.io", 2, "m-11", None, T0, "2024-01-02 10:00:11"),
]


def ses(kind: str, message_id: str, email: str, **detail: Any) -> str:
    """An identity notification's Message, as the original stored it in `raw`."""
    mail = {"timestamp": "2024-01-02T10:00:00.000Z", "messageId": message_id, "destination": [email]}
    return json.dumps({"notificationType": kind, "mail": mail, **detail})


BOUNCE_HARD = {"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": "d@x.io"}]}
BOUNCE_SOFT = {
    "bounceType": "Transient",
    "bounceSubType": "MailboxFull",
    "bouncedRecipients": [{"emailAddress": "k@x.io"}],
}
# id, request_id, status, raw, created_at
RESULTS: list[tuple[Any, ...]] = [
    (1, 3, "Delivery", ses("Delivery", "m-3", "c@x.io", delivery={"timestamp": "2024-01-02T10:00:05.000Z"}), T0),
    (2, 3, "Open", None, "2024-01-02 11:00:00"),
    (3, 3, "Open", None, "2024-01-02 12:00:00"),
    (4, 4, "Bounce", ses("Bounce", "m-4", "d@x.io", bounce=BOUNCE_HARD), T0),
    (5, 10, "Complaint", ses("Complaint", "m-10", "j@x.io", complaint={"complaintFeedbackType": "abuse"}), T0),
    (6, 10, "Delivery", ses("Delivery", "m-10", "j@x.io", delivery={}), T0),
    (7, 8, "Delivery", ses("Delivery", "m-8", "h@x.io", delivery={}), T0),
    (8, 99, "Delivery", ses("Delivery", "m-99", "z@x.io", delivery={}), T0),  # no such request
    (9, 4, "Rendering Failure", "{}", T0),
    (10, 3, "Click", None, T0),
    (11, 3, "SomethingNew", None, T0),
    (12, 11, "Bounce", ses("Bounce", "m-11", "k@x.io", bounce=BOUNCE_SOFT), T0),
]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def make_original(path: Path, variant: str = "R-new") -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(R_NEW_DDL if variant == "R-new" else R_OLD_DDL)
        if variant == "R-new":
            conn.execute("INSERT INTO email_contents VALUES (1, 'Hello', '<p>one</p>', '2024-01-01 09:00:00')")
            conn.execute("INSERT INTO email_contents VALUES (2, 'Other', '<p>two</p>', '2024-01-01 09:00:00')")
        for rid, topic, content, email, status, message_id, error, due, updated in REQUESTS:
            created = "2024-01-01 09:00:00"
            if variant == "R-new":
                conn.execute(
                    "INSERT INTO email_requests (id, topic_id, content_id, message_id, email, scheduled_at, status,"
                    " error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, topic, content, message_id, email, due, status, error, created, updated),
                )
            else:
                subject, html = ("Hello", "<p>one</p>") if content == 1 else ("Other", "<p>two</p>")
                conn.execute(
                    "INSERT INTO email_requests (id, topic_id, message_id, email, subject, content, scheduled_at,"
                    " status, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, topic, message_id, email, subject, html, due, status, error, created, updated),
                )
        conn.executemany("INSERT INTO email_results VALUES (?, ?, ?, ?, ?)", RESULTS)
    conn.close()
    return path


def recipients(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {row["email"]: dict(row) for row in conn.execute("SELECT * FROM recipients")}


def assert_counters_match_rows(db: Path) -> None:
    """Every counter recomputed from the rows, as migrations 4 and 5 compute them from scratch."""
    with sqlite3.connect(db) as conn:
        expected: Counter[tuple[str, str]] = Counter()
        queries = [
            "SELECT topic_id, status, COUNT(*) FROM recipients GROUP BY 1, 2",
            "SELECT topic_id, delivery, COUNT(*) FROM recipients WHERE delivery IS NOT NULL GROUP BY 1, 2",
            "SELECT topic_id, 'complained', COUNT(*) FROM recipients WHERE complained_at_ms IS NOT NULL GROUP BY 1",
            "SELECT topic_id, 'hard_bounced', COUNT(*) FROM recipients WHERE bounce_type LIKE 'Permanent%' GROUP BY 1",
            "SELECT topic_id, 'opened', COUNT(*) FROM recipients WHERE open_count > 0 GROUP BY 1",
            "SELECT topic_id, 'opens', SUM(open_count) FROM recipients WHERE open_count > 0 GROUP BY 1",
            "SELECT topic_id, 'first_sent_at_ms', MIN(sent_at_ms) FROM recipients WHERE sent_at_ms IS NOT NULL"
            " GROUP BY 1",
            "SELECT topic_id, 'last_sent_at_ms', MAX(sent_at_ms) FROM recipients WHERE sent_at_ms IS NOT NULL"
            " GROUP BY 1",
            "SELECT r.topic_id, 'event:' || e.kind, COUNT(DISTINCT e.recipient_id) FROM events e"
            " JOIN recipients r ON r.id = e.recipient_id GROUP BY 1, 2",
        ]
        for query in queries:
            for topic, name, n in conn.execute(query):
                expected[(topic, name)] = n
        actual = {(t, name): n for t, name, n in conn.execute("SELECT topic_id, name, n FROM topic_counts") if n}
        assert actual == {k: v for k, v in expected.items() if v}
        topics = conn.execute(
            "SELECT topic_id, first_posted_at_ms, last_posted_at_ms, total FROM topics ORDER BY 1"
        ).fetchall()
        assert (
            topics
            == conn.execute(
                "SELECT topic_id, MIN(created_at_ms), MAX(created_at_ms), COUNT(*) FROM recipients"
                " GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )


@pytest.fixture
def original(tmp_path: Path) -> Path:
    return make_original(tmp_path / "sqlite3.db")


def test_every_status_maps_and_results_apply_as_live_events(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    summary = import_file(original, ours)
    assert summary.line() == (
        "imported 11 recipients: 2 pending, 4 sent, 1 failed, 1 cancelled, 3 unknown; 12 events"
        " (1 matched no request, kept unlinked); 2 contents"
    )
    rows = recipients(ours)
    assert {e: r["status"] for e, r in rows.items()} == {
        "a@x.io": "pending",
        "b@x.io": "pending",
        "c@x.io": "sent",
        "d@x.io": "sent",
        "e@x.io": "failed",
        "f@x.io": "cancelled",
        "g@x.io": "unknown",
        "h@x.io": "unknown",
        "i@x.io": "unknown",
        "j@x.io": "sent",
        "k@x.io": "sent",
    }
    assert rows["a@x.io"]["due_at_ms"] == ms("2030-01-01 00:00:00")  # read as UTC, as the original stored it
    assert rows["a@x.io"]["created_at_ms"] == ms("2024-01-01 09:00:00")
    assert rows["c@x.io"]["message_id"] == "m-3" and rows["c@x.io"]["sent_at_ms"] == ms("2024-01-02 10:00:01")
    failed = rows["e@x.io"]
    assert (failed["error_code"], failed["error_message"]) == (
        "ImportedFailure",
        "MessageRejected: Email address is not verified",
    )
    assert failed["sent_at_ms"] is None
    assert rows["h@x.io"]["message_id"] == "m-8"
    # Events: delivery, opens, bounces (a hard one suppresses), complaints (suppress).
    assert rows["c@x.io"]["delivery"] == "delivered"
    assert rows["c@x.io"]["open_count"] == 2 and rows["c@x.io"]["opened_first_at_ms"] == ms("2024-01-02 11:00:00")
    assert (rows["d@x.io"]["delivery"], rows["d@x.io"]["bounce_type"]) == ("bounced", "Permanent/General")
    assert (rows["k@x.io"]["delivery"], rows["k@x.io"]["bounce_type"]) == ("bounced", "Transient/MailboxFull")
    assert rows["j@x.io"]["complained_at_ms"] is not None and rows["j@x.io"]["delivery"] == "delivered"
    assert rows["h@x.io"]["delivery"] == "delivered"
    with sqlite3.connect(ours) as conn:
        assert dict(conn.execute("SELECT email, reason FROM suppressions")) == {
            "d@x.io": "bounce",
            "j@x.io": "complaint",
        }
        kinds = Counter(kind for (kind,) in conn.execute("SELECT kind FROM events"))
        assert kinds == {
            "delivery": 4,
            "open": 2,
            "bounce": 2,
            "complaint": 1,
            "rendering_failure": 1,
            "click": 1,
            "somethingnew": 1,
        }
        assert conn.execute("SELECT COUNT(*) FROM events WHERE recipient_id IS NULL").fetchone()[0] == 1
        # Each result's raw is kept once, under a synthetic SNS id naming the file and the result.
        raws = dict(conn.execute("SELECT sns_message_id, raw FROM sns_messages"))
        assert len(raws) == len(RESULTS) and all(k.startswith("original:") for k in raws)
        assert raws[next(k for k in raws if k.endswith(":4"))] == RESULTS[3][3]
        contents = conn.execute("SELECT subject, html, created_at_ms FROM contents ORDER BY id").fetchall()
        assert contents == [
            ("Hello", "<p>one</p>", ms("2024-01-01 09:00:00")),
            ("Other", "<p>two</p>", ms("2024-01-01 09:00:00")),
        ]
    assert_counters_match_rows(ours)


def test_counters_add_to_a_database_already_in_use(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    conn = open_writer(ours)
    message = NewMessage("t1", "Live", "<p>live</p>", ("live1@x.io", "live2@x.io"))
    writes.store_messages(conn, StoreMessages(1, "ingest", (message,), 0, CampaignFacts(2)), now_ms=5)
    claimed = claim_due(conn, ClaimDue(1, "scheduler", limit=1, due_by_ms=10), ClaimState())
    outcome = Sent(claimed.recipients[0].recipient_id, "live-m", 20)
    writes.record_outcomes(conn, RecordOutcomes(1, "sender", (outcome,)), now_ms=20)
    conn.close()
    import_file(original, ours)
    assert_counters_match_rows(ours)
    with sqlite3.connect(ours) as db:
        first, last, total = db.execute(
            "SELECT first_posted_at_ms, last_posted_at_ms, total FROM topics WHERE topic_id = 't1'"
        ).fetchone()
    assert (first, last, total) == (5, ms("2024-01-01 09:00:00"), 8)


def test_importing_the_same_file_twice_imports_nothing_the_second_time(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    import_file(original, ours)
    before = recipients(ours)
    again = import_file(original, ours)
    assert again.line() == (
        "imported 0 recipients; 0 events; 0 contents; 11 recipients were imported from this file before"
    )
    assert recipients(ours) == before
    assert_counters_match_rows(ours)


def test_rows_added_to_the_original_since_are_imported_alone(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    import_file(original, ours)
    with sqlite3.connect(original) as conn:
        conn.execute(
            "INSERT INTO email_requests (id, topic_id, content_id, email, scheduled_at, status)"
            " VALUES (12, 't1', 1, 'new@x.io', '2024-02-01 00:00:00', 0)"
        )
        conn.execute("INSERT INTO email_results VALUES (13, 2, 'Open', NULL, '2024-02-01 00:00:00')")
    conn.close()
    later = import_file(original, ours)
    assert later.statuses == {"pending": 1} and later.events == 1 and later.contents == 0
    assert recipients(ours)["b@x.io"]["open_count"] == 1
    assert_counters_match_rows(ours)


def test_resend_processed_queues_processed_rows_unless_ses_had_accepted_them(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    summary = import_file(original, ours, resend_processed=True)
    rows = recipients(ours)
    assert rows["g@x.io"]["status"] == "pending"
    assert rows["h@x.io"]["status"] == "unknown"  # it has a message id and a delivery: resending would duplicate
    assert summary.statuses["pending"] == 3 and summary.kept_unknown == 1
    assert_counters_match_rows(ours)


def test_the_r_old_variant_is_imported_with_its_inline_contents_stored_once(tmp_path: Path) -> None:
    old = make_original(tmp_path / "old.db", "R-old")
    ours = tmp_path / "ours.db"
    summary = import_file(old, ours)
    assert summary.contents == 2 and sum(summary.statuses.values()) == len(REQUESTS)
    assert recipients(ours)["c@x.io"]["open_count"] == 2
    assert_counters_match_rows(ours)
    assert import_file(old, ours).imported_before == len(REQUESTS)


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda p: p.write_bytes(b"not a database, just text" * 100), "not an SQLite database"),
        (lambda p: sqlite3.connect(p).executescript("CREATE TABLE other (x);").close(), "no email_requests"),
        (
            lambda p: (
                sqlite3.connect(p).executescript(R_NEW_DDL + "ALTER TABLE email_results DROP COLUMN raw;").close()
            ),
            "email_results.raw",
        ),
        (lambda p: None, "no such file"),
    ],
    ids=["not-sqlite", "other-tables", "missing-column", "missing-file"],
)
def test_an_unrecognised_file_is_refused_and_nothing_is_written(tmp_path: Path, setup: Any, words: str) -> None:
    source, ours = tmp_path / "theirs.db", tmp_path / "ours.db"
    setup(source)
    with pytest.raises(Unrecognised, match=words):
        import_file(source, ours)
    assert not ours.exists()


def test_the_import_is_one_transaction(original: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = tmp_path / "ours.db"

    def fail(self: Importer, result: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Importer, "add_result", fail)
    with pytest.raises(sqlite3.OperationalError):
        import_file(original, ours)
    assert recipients(ours) == {}
    with sqlite3.connect(ours) as conn:
        assert conn.execute("SELECT COUNT(*) FROM topic_counts").fetchone()[0] == 0
    conn.close()


def test_importing_a_file_into_itself_is_refused(original: Path) -> None:
    with pytest.raises(Refused, match="new file"):
        import_file(original, original)


def test_the_server_refuses_to_open_the_originals_database(original: Path) -> None:
    with sqlite3.connect(original) as conn:
        assert is_original(conn)
    conn.close()
    with pytest.raises(OriginalDatabase, match="import-original") as refused:
        open_writer(original)
    assert "\n" not in str(refused.value)
    with sqlite3.connect(original) as conn:  # untouched: not migrated, not switched to WAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert "recipients" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert open_original(original).variant == "R-new"


def run_supervisor(cwd: Path, *args: str, database: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": f"sqlite://{database}", "AUTH_DISABLED": "true"}
    return subprocess.run(
        [sys.executable, str(SUPERVISOR), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_command_imports_refuses_and_migrate_refuses_the_original(original: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    done = run_supervisor(tmp_path, "import-original", str(original), database=ours)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 11 recipients: 2 pending, 4 sent, 1 failed, 1 cancelled, 3 unknown;")
    assert_counters_match_rows(ours)
    again = run_supervisor(tmp_path, "import-original", str(original), database=ours)
    assert again.returncode == 0 and again.stdout.startswith("imported 0 recipients;")
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    refused = run_supervisor(tmp_path, "import-original", str(junk), database=tmp_path / "fresh.db")
    assert refused.returncode == 2 and not (tmp_path / "fresh.db").exists()
    assert len(refused.stderr.strip().splitlines()) == 1 and "nothing was imported" in refused.stderr
    migrate = run_supervisor(tmp_path, "migrate", database=original)
    assert migrate.returncode == 78 and "import-original" in migrate.stderr
    helped = run_supervisor(tmp_path, "import-original", "--help", database=ours)
    assert helped.returncode == 0 and "Stop the server first" in helped.stdout
