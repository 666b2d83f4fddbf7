"""Helpers for tests that run the real process tree and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.db.blocking_pg import BlockingPostgres
from pipeline.messages import Refused
from stages.ingest.errors import refused

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = ROOT / "supervisor.py"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition", every_s: float = 0.05
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # the server may still be starting
            last_error = error
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})")


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout_s: float = 30.0
) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON or raw bytes, headers)."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        # urllib would call it a form; the API reads JSON (and answers 415 to anything else).
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw, status, got_headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, got_headers = error.read(), error.code, dict(error.headers)
    try:
        return status, json.loads(raw), got_headers
    except ValueError:
        return status, raw, got_headers


def post_sns(tree: Tree, envelope: dict[str, Any] | bytes, kind: str | None = "auto") -> tuple[int, Any]:
    """POST to the SNS webhook as SNS does (text/plain, the message type header)."""
    body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    if kind == "auto" and isinstance(envelope, dict):
        headers["x-amz-sns-message-type"] = envelope["Type"]
    elif kind not in (None, "auto"):
        headers["x-amz-sns-message-type"] = kind
    status, answer, _ = http("POST", tree.base + "/v1/events/results", body, headers=headers)
    return status, answer


def sent_recipients(tree: Tree, count: int, topic: str = "t1") -> list[tuple[int, str, str]]:
    """(id, email, SES message id) once `count` recipients of the topic are sent."""
    wait_until(lambda: tree.get(f"/v1/topics/{topic}")[1].get("sent") == count, 15, f"{count} sent")
    with tree.db() as conn:
        return conn.execute(
            "SELECT id, email, message_id FROM recipients WHERE topic_id = ? ORDER BY id", (topic,)
        ).fetchall()


class Tree:
    """`python supervisor.py` in a temp dir with its own settings."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(self.port),
            "SERVER_URL": f"http://127.0.0.1:{self.port}",
            "DATABASE_URL": "sqlite://test.db",
            "EMAIL_BACKEND": "outbox",
            "OUTBOX_DIR": "outbox",
            "LOG_LEVEL": "INFO",
            "RESTART_MIN_DELAY_S": "0.1",
            "RESTART_MAX_DELAY_S": "0.5",
            "AUTH_DISABLED": "true",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> Tree:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(SUPERVISOR)], cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            status, body, _ = self.get("/ready", timeout_s=2)
            return body if status == 200 else None

        return wait_until(ready, timeout_s, "/ready to answer 200")

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return http("GET", self.base + path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return http("POST", self.base + path, body, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> dict[str, int]:
        """Stage name -> pid, read from the process titles (`ses-sender: sender`)."""
        assert self.process is not None
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and cmdline.startswith("ses-sender: "):
                found[cmdline.removeprefix("ses-sender: ")] = int(entry.name)
        return found

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout_s: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Terminate, wait, kill: whatever state the test left it in."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def db(self, write: bool = False) -> Any:
        """A connection to the tree's database for assertions (read-only unless `write`):
        sqlite3, or PostgreSQL's with the same calls."""
        url = self.env["DATABASE_URL"]
        if url.startswith("postgresql://"):
            return BlockingPostgres(url)
        if write:
            return sqlite3.connect(self.workdir / "test.db")
        return sqlite3.connect(f"file:{self.workdir / 'test.db'}?mode=ro", uri=True)

    def statuses(self) -> dict[str, int]:
        with self.db() as conn:
            return dict(conn.execute("SELECT status, COUNT(*) FROM recipients GROUP BY status").fetchall())


def campaign(
    emails: list[str], topic_id: str = "t1", subject: str = "Hello", content: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [
            {
                "topic_id": topic_id,
                "emails": emails,
                "subject": subject,
                "content": content or "<html><body><p>Hi there</p></body></html>",
            }
        ],
    }
    body.update(extra)
    return body


SES_FROM = "news@example.org"


def ses_env(endpoint: str, **extra: str) -> dict[str, str]:
    """Settings that point the tree's SES backend at a local endpoint (moto or the fake)."""
    return {
        "EMAIL_BACKEND": "ses",
        "AWS_SES_FROM_EMAIL": SES_FROM,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SESV2": endpoint,
        "AWS_ENDPOINT_URL_SES": endpoint,
        **extra,
    }


FUZZ_CONFIG = ROOT / "tests" / "fuzz" / "schemathesis.toml"


def run_schemathesis(
    base: str, token: str, workdir: Path, examples: int, seed: int, timeout_s: float = 400
) -> subprocess.CompletedProcess[str]:
    """schemathesis against the live /openapi.json, with every check (tests/fuzz/schemathesis.toml)."""
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(FUZZ_CONFIG), "run"]
    command += [f"{base}/openapi.json", "-H", f"Authorization: Bearer {token}", "-n", str(examples)]
    command += ["--seed", str(seed), "--workers", "2", "--request-timeout", "30"]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout_s)


def http_status(reply: Refused) -> int:
    """The HTTP status ingest answers for a recorder's refusal."""
    return refused(reply).status


def sqlite_only(engine: str, why: str) -> None:
    """Skip the PostgreSQL run of an end-to-end test about SQLite's own file, saying why."""
    if engine == "postgresql":
        import pytest

        pytest.skip(f"SQLite only: {why}")
