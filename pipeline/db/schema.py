"""The SQLite schema, its versioned migrations, and how connections are opened.

Only the recorder opens the database for writing (`open_writer`, which migrates).
Every other stage opens it read-only; WAL lets those readers run beside the writer.
`PRAGMA user_version` records which migrations ran, so a second start redoes nothing.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Final

from pipeline.db.dialect import Conn
from pipeline.db.original import refuse_original

# Per-topic counters kept by triggers (migration 4); a rebuild of `recipients` drops them,
# so migration 5 creates the same ones again.
COUNT_TRIGGERS: Final = """
    CREATE TRIGGER count_status AFTER UPDATE OF status ON recipients WHEN OLD.status IS NOT NEW.status BEGIN
        UPDATE topic_counts SET n = n - 1 WHERE topic_id = OLD.topic_id AND name = OLD.status;
        INSERT INTO topic_counts VALUES (NEW.topic_id, NEW.status, 1)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER count_sent_at AFTER UPDATE OF sent_at_ms ON recipients WHEN NEW.sent_at_ms IS NOT NULL BEGIN
        INSERT INTO topic_counts VALUES (NEW.topic_id, 'first_sent_at_ms', NEW.sent_at_ms)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = MIN(n, excluded.n);
        INSERT INTO topic_counts VALUES (NEW.topic_id, 'last_sent_at_ms', NEW.sent_at_ms)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = MAX(n, excluded.n);
    END;
    CREATE TRIGGER count_delivery AFTER UPDATE OF delivery ON recipients
        WHEN OLD.delivery IS NOT NEW.delivery AND NEW.delivery IS NOT NULL BEGIN
        UPDATE topic_counts SET n = n - 1 WHERE topic_id = OLD.topic_id AND name = OLD.delivery;
        INSERT INTO topic_counts VALUES (NEW.topic_id, NEW.delivery, 1)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER count_complaint AFTER UPDATE OF complained_at_ms ON recipients
        WHEN OLD.complained_at_ms IS NULL AND NEW.complained_at_ms IS NOT NULL BEGIN
        INSERT INTO topic_counts VALUES (NEW.topic_id, 'complained', 1)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER count_opens AFTER UPDATE OF open_count ON recipients WHEN NEW.open_count > OLD.open_count BEGIN
        INSERT INTO topic_counts VALUES (NEW.topic_id, 'opens', NEW.open_count - OLD.open_count)
            ON CONFLICT (topic_id, name) DO UPDATE SET n = n + excluded.n;
        INSERT INTO topic_counts SELECT NEW.topic_id, 'opened', 1 WHERE OLD.open_count = 0
            ON CONFLICT (topic_id, name) DO UPDATE SET n = n + 1;
    END;
"""

# Each entry runs once, in order, inside one transaction with its version bump.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: contents stored once per message, one row per recipient, the tracking key.
    """
    CREATE TABLE contents (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        html TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE recipients (
        id INTEGER PRIMARY KEY,
        content_id INTEGER NOT NULL REFERENCES contents(id),
        topic_id TEXT NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'sending', 'sent', 'failed', 'cancelled', 'paused')),
        due_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        sent_at_ms INTEGER,
        message_id TEXT,
        error_code TEXT,
        error_message TEXT
    );
    CREATE INDEX recipients_due ON recipients (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX recipients_topic ON recipients (topic_id, status);
    CREATE INDEX recipients_message_id ON recipients (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX recipients_sent_at ON recipients (sent_at_ms) WHERE sent_at_ms IS NOT NULL;
    CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        body_digest TEXT NOT NULL,
        answer TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: fair claims walk the topics that have pending work, and take from each in turn.
    """
    CREATE INDEX recipients_pending_topic ON recipients (topic_id, due_at_ms, id) WHERE status = 'pending';
    """,
    # 3: what comes back after a send (SES events, opens) and the suppression list. The
    # recipients table is rebuilt (SQLite's documented way) to allow the 'suppressed' status.
    """
    CREATE TABLE recipients_new (
        id INTEGER PRIMARY KEY,
        content_id INTEGER NOT NULL REFERENCES contents(id),
        topic_id TEXT NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'sending', 'sent', 'failed', 'cancelled', 'paused', 'suppressed')),
        due_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        sent_at_ms INTEGER,
        message_id TEXT,
        error_code TEXT,
        error_message TEXT,
        -- NULL (not known yet), 'delivered' or 'bounced'; a bounce wins over a delivery.
        delivery TEXT CHECK (delivery IN ('delivered', 'bounced')),
        delivery_at_ms INTEGER,
        bounce_type TEXT,
        complained_at_ms INTEGER,
        opened_first_at_ms INTEGER,
        open_count INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO recipients_new (id, content_id, topic_id, email, status, due_at_ms, created_at_ms,
                                sent_at_ms, message_id, error_code, error_message)
        SELECT id, content_id, topic_id, email, status, due_at_ms, created_at_ms,
               sent_at_ms, message_id, error_code, error_message FROM recipients;
    DROP TABLE recipients;
    ALTER TABLE recipients_new RENAME TO recipients;
    CREATE INDEX recipients_due ON recipients (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX recipients_topic ON recipients (topic_id, status);
    CREATE INDEX recipients_message_id ON recipients (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX recipients_sent_at ON recipients (sent_at_ms) WHERE sent_at_ms IS NOT NULL;
    CREATE INDEX recipients_pending_topic ON recipients (topic_id, due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX recipients_email ON recipients (email) WHERE status IN ('pending', 'paused');

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        sns_message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        subtype TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        ses_message_id TEXT NOT NULL DEFAULT '',
        recipient_id INTEGER,  -- NULL: unmatched, kept for the operator
        occurred_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        raw TEXT NOT NULL
    );
    -- SNS delivers at least once: the same message recorded twice is recorded once.
    CREATE UNIQUE INDEX events_once ON events (sns_message_id, kind, email);
    CREATE INDEX events_recipient ON events (recipient_id);

    -- One row per topic, kept by the recorder, so listing topics never scans recipients.
    CREATE TABLE topics (
        topic_id TEXT PRIMARY KEY,
        first_posted_at_ms INTEGER NOT NULL,
        last_posted_at_ms INTEGER NOT NULL,
        total INTEGER NOT NULL
    );
    INSERT INTO topics (topic_id, first_posted_at_ms, last_posted_at_ms, total)
        SELECT topic_id, MIN(created_at_ms), MAX(created_at_ms), COUNT(*) FROM recipients GROUP BY topic_id;
    CREATE INDEX topics_recent ON topics (last_posted_at_ms DESC, topic_id);

    CREATE TABLE suppressions (
        email TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL
    );
    """,
    # 4: per-topic counters, kept exact by triggers whatever code path changes a row, so a
    # topic's statistics are a read of a dozen rows, not an aggregate over a million.
    # (recipients_email from migration 3 is dropped: nothing queried it.)
    """
    DROP INDEX recipients_email;
    CREATE TABLE topic_counts (
        topic_id TEXT NOT NULL,
        name TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (topic_id, name)
    ) WITHOUT ROWID;
    INSERT INTO topic_counts SELECT topic_id, status, COUNT(*) FROM recipients GROUP BY topic_id, status;
    INSERT INTO topic_counts SELECT topic_id, delivery, COUNT(*) FROM recipients
        WHERE delivery IS NOT NULL GROUP BY topic_id, delivery;
    INSERT INTO topic_counts SELECT topic_id, 'complained', COUNT(*) FROM recipients
        WHERE complained_at_ms IS NOT NULL GROUP BY topic_id;
    INSERT INTO topic_counts SELECT topic_id, 'opened', COUNT(*) FROM recipients
        WHERE open_count > 0 GROUP BY topic_id;
    INSERT INTO topic_counts SELECT topic_id, 'opens', SUM(open_count) FROM recipients
        WHERE open_count > 0 GROUP BY topic_id;
    INSERT INTO topic_counts SELECT topic_id, 'first_sent_at_ms', MIN(sent_at_ms) FROM recipients
        WHERE sent_at_ms IS NOT NULL GROUP BY topic_id;
    INSERT INTO topic_counts SELECT topic_id, 'last_sent_at_ms', MAX(sent_at_ms) FROM recipients
        WHERE sent_at_ms IS NOT NULL GROUP BY topic_id;

    -- New rows are counted by the recorder, once per message (a per-row trigger doubled
    -- the cost of storing a campaign); every later change is counted here.
    """
    + COUNT_TRIGGERS,
    # 5: the original server's "Processed" rows import as 'unknown' (sent or not, nobody knows);
    # an SNS message's raw text is kept once, not once per recipient it names; events that
    # arrive before their send's outcome can be found by SES's message id and linked later;
    # and per topic, how many recipients had each kind of SES event (the original's counts).
    """
    CREATE TABLE recipients_new (
        id INTEGER PRIMARY KEY,
        content_id INTEGER NOT NULL REFERENCES contents(id),
        topic_id TEXT NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'sending', 'sent', 'failed', 'cancelled', 'paused', 'suppressed', 'unknown')),
        due_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        sent_at_ms INTEGER,
        message_id TEXT,
        error_code TEXT,
        error_message TEXT,
        delivery TEXT CHECK (delivery IN ('delivered', 'bounced')),
        delivery_at_ms INTEGER,
        bounce_type TEXT,
        complained_at_ms INTEGER,
        opened_first_at_ms INTEGER,
        open_count INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO recipients_new SELECT * FROM recipients;
    DROP TABLE recipients;
    ALTER TABLE recipients_new RENAME TO recipients;
    CREATE INDEX recipients_due ON recipients (due_at_ms, id) WHERE status = 'pending';
    CREATE INDEX recipients_topic ON recipients (topic_id, status);
    CREATE INDEX recipients_message_id ON recipients (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX recipients_sent_at ON recipients (sent_at_ms) WHERE sent_at_ms IS NOT NULL;
    CREATE INDEX recipients_pending_topic ON recipients (topic_id, due_at_ms, id) WHERE status = 'pending';

    CREATE TABLE sns_messages (
        sns_message_id TEXT PRIMARY KEY,
        raw TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO sns_messages SELECT sns_message_id, raw, MIN(received_at_ms) FROM events
        GROUP BY sns_message_id;
    ALTER TABLE events DROP COLUMN raw;
    DROP INDEX events_recipient;
    CREATE INDEX events_recipient ON events (recipient_id, kind);
    CREATE INDEX events_unlinked ON events (ses_message_id) WHERE recipient_id IS NULL AND ses_message_id != '';

    INSERT INTO topic_counts SELECT r.topic_id, 'event:' || e.kind, COUNT(DISTINCT e.recipient_id)
        FROM events e JOIN recipients r ON r.id = e.recipient_id GROUP BY r.topic_id, e.kind;
    """
    + COUNT_TRIGGERS,
    # 6: one-click unsubscribe. A message may name its list (List-Id) or be transactional
    # (no unsubscribe headers or footer); a suppression has a scope: '' is all mail, else
    # the list an unsubscribe named. A topic paused by the reputation guard says why.
    """
    ALTER TABLE contents ADD COLUMN list_id TEXT;
    ALTER TABLE contents ADD COLUMN transactional INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE suppressions_new (
        email TEXT NOT NULL,
        scope TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (email, scope)
    ) WITHOUT ROWID;
    INSERT INTO suppressions_new SELECT email, '', reason, detail, created_at_ms FROM suppressions;
    DROP TABLE suppressions;
    ALTER TABLE suppressions_new RENAME TO suppressions;
    ALTER TABLE topics ADD COLUMN paused_reason TEXT;
    -- An unsubscribe withdraws the address's unsent rows; without this it would scan them all.
    CREATE INDEX recipients_unsent_email ON recipients (lower(email))
        WHERE status IN ('pending', 'paused', 'sending');

    -- The reputation guard's inputs: hard bounces per topic (complaints and sends are
    -- counted already), each topic's counts when the operator last resumed it, the
    -- account's pause, and events by arrival for the account's rolling 24 hours.
    INSERT INTO topic_counts SELECT topic_id, 'hard_bounced', COUNT(*) FROM recipients
        WHERE bounce_type LIKE 'Permanent%' GROUP BY topic_id;
    CREATE TABLE guard_resumes (
        topic_id TEXT PRIMARY KEY,
        resumed_at_ms INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        hard_bounces INTEGER NOT NULL,
        complaints INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE guard_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_received ON events (received_at_ms);
    """,
    # 7: personalized messages. A content may be a template (subject, html and text rendered
    # per recipient) with its own text part; each recipient keeps its data (JSON) for that.
    """
    ALTER TABLE contents ADD COLUMN template INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE contents ADD COLUMN text TEXT;
    ALTER TABLE recipients ADD COLUMN data TEXT;
    """,
    # 8: click tracking. A content's tracked links, by their place in its HTML (the redirect
    # reads the URL here: a token names only the recipient and the link's index), and per
    # recipient and link the first click and the count.
    """
    ALTER TABLE contents ADD COLUMN track_clicks INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE links (
        content_id INTEGER NOT NULL REFERENCES contents(id),
        link_index INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (content_id, link_index)
    ) WITHOUT ROWID;
    CREATE TABLE clicks (
        recipient_id INTEGER NOT NULL,
        link_index INTEGER NOT NULL,
        first_at_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (recipient_id, link_index)
    ) WITHOUT ROWID;
    """,
    # 9: honest opens and clicks: when a person (not Apple's proxy or a scanner) first opened
    # or clicked, so a topic can count the people apart from the machines.
    """
    ALTER TABLE recipients ADD COLUMN human_opened_at_ms INTEGER;
    ALTER TABLE recipients ADD COLUMN human_clicked_at_ms INTEGER;
    """,
)
TRACKING_KEY: Final = "tracking_hmac_key"
BUSY_TIMEOUT_MS: Final = 5000


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; return how many ran."""
    applied = 0
    for version, script in enumerate(MIGRATIONS, start=1):
        if schema_version(conn) >= version:
            continue
        # executescript commits first; the BEGIN makes the script and its bump one unit.
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
        applied += 1
    # A key per installation for the pixel's HMAC: stable across restarts, never configured.
    conn.execute(
        "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)",
        (TRACKING_KEY, secrets.token_hex(32)),
    )
    conn.commit()
    return applied


def open_writer(path: Path) -> sqlite3.Connection:
    """The one writing connection (the recorder's), migrated.

    WAL with synchronous=FULL: a committed transaction survives a power cut, which is
    what "accepted means committed" promises.
    """
    refuse_original(path)  # before connecting: the writer would switch their file to WAL
    conn = _connect_writer(path)
    migrate(conn)
    return conn


def _connect_writer(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate_file(path: Path) -> int:
    """Migrate the database at `path` and close it (`supervisor.py migrate`)."""
    conn = _connect_writer(path)
    try:
        return migrate(conn)
    finally:
        conn.close()


def read_only_uri(path: Path) -> str:
    """The URI that opens `path` read-only (for aiosqlite and sqlite3 alike)."""
    return f"file:{path.resolve()}?mode=ro"


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection for stages other than the recorder."""
    conn = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def tracking_key(conn: Conn) -> bytes:
    row = conn.execute("SELECT value FROM server_secrets WHERE name = ?", (TRACKING_KEY,)).fetchone()
    if row is None:
        raise LookupError("the database has no tracking key; has the recorder migrated it?")
    return bytes.fromhex(row[0])
