"""Sentry on the real tree: every stage reports its errors, and no report carries a secret.

A local collector stands in for Sentry (the DSN points at it). A `sitecustomize.py` on the
tree's PYTHONPATH makes one function of each stage fail once, while its locals and message
hold the JWT secret, the API key, the caller's Bearer token, an address and the HTML the test
posted: what a real failure in the middle of the work would hold. The test then checks that
an event arrived from every stage and that none of those values is in anything that arrived.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.helpers import ROOT, Tree, campaign, wait_until

JWT_SECRET = "e2e-jwt-secret-" + "j" * 40
API_KEY = "e2e-api-key-" + "a" * 40
AUDIENCE, ISSUER = "ses-sender", "https://auth.example.com"
ADDRESSES = ["leak.one@example.com", "leak.two@example.org"]
HTML = "<html><body><h1>Confidential offer</h1><p>Only for you: code 9137</p></body></html>"
STAGES = ("ingest", "scheduler", "sender", "recorder")
PROJECT_ID = 42

# One target per stage, a function it calls while working, and what a failure there does:
# ingest logs it (answers 500), the recorder logs it (refuses the request with 422), the
# scheduler and the sender crash (and the supervisor restarts the tree).
SITECUSTOMIZE = '''
"""Injected by tests/e2e/test_sentry.py: one fault per stage, while it holds what must not leak."""
import functools
import os

TARGETS = {
    "ingest": ("stages.ingest.campaigns", None, "parse_campaign"),
    "recorder": ("stages.recorder.writes", None, "store_messages"),
    "scheduler": ("stages.scheduler", "SchedulerState", "on_work_added"),
    "sender": ("stages.sender.sending", "Sender", "on_deliver"),
}


def first_time(stage):
    try:
        os.close(os.open(os.path.join(os.environ["FAULT_FLAGS"], stage), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fail(stage):
    jwt_secret = os.environ["JWT_SECRET"]
    api_key = os.environ["API_KEY"]
    authorization = "Bearer " + os.environ["FAULT_TOKEN"]
    address = os.environ["FAULT_ADDRESS"]
    html = os.environ["FAULT_HTML"]
    raise RuntimeError(
        f"injected fault in {stage}: key {jwt_secret}, api key {api_key}, {authorization}, to {address}: {html}"
    )


def faulty(stage, original):
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if first_time(stage):
            fail(stage)
        return original(*args, **kwargs)

    return wrapper


def patch(stage):
    import sys

    module_name, class_name, name = TARGETS[stage]
    module = sys.modules[module_name]
    if class_name is not None:
        owner = getattr(module, class_name)
        setattr(owner, name, faulty(stage, getattr(owner, name)))
        return
    original = getattr(module, name)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith("stages.") and getattr(loaded, name, None) is original:
            setattr(loaded, name, faulty(stage, original))


def install():
    import pipeline.runtime

    resolve = pipeline.runtime.resolve_entry

    def resolve_and_patch(entry):
        function = resolve(entry)
        patch(entry.split(":")[0].split(".")[1])
        return function

    pipeline.runtime.resolve_entry = resolve_and_patch


install()
'''


class Collector:
    """Sentry's envelope endpoint on 127.0.0.1: keeps every body, decompressed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = decode(raw, self.headers.get("Content-Encoding", ""))
                if self.path.startswith(f"/api/{PROJECT_ID}/envelope/"):
                    with collector.lock:
                        collector.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public{PROJECT_ID}@127.0.0.1:{self.server.server_address[1]}/{PROJECT_ID}"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            bodies = list(self.bodies)
        return [item for body in bodies for kind, item in envelope_items(body) if kind in ("event", "transaction")]

    def texts(self) -> list[str]:
        """Every body, and every string in it once JSON escapes are undone."""
        with self.lock:
            bodies = list(self.bodies)
        found = [body.decode("utf-8", "replace") for body in bodies]
        for body in bodies:
            for _, item in envelope_items(body):
                found.extend(strings_in(item))
        return found


def decode(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding == "br":
        import brotli  # only present when the SDK found it, too

        return bytes(brotli.decompress(raw))
    return raw


def envelope_items(body: bytes) -> Iterator[tuple[str, Any]]:
    """(item type, payload) for each item: a header line, then `length` bytes or a line."""
    lines = body.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            yield header.get("type", ""), json.loads(payload)
        except ValueError:
            yield header.get("type", ""), payload.decode("utf-8", "replace")


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


@pytest.fixture
def collector() -> Iterator[Collector]:
    started = Collector()
    started.thread.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


def bearer_token() -> str:
    now = int(time.time())
    claims = {"sub": "sentry-e2e", "iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def stage_of(event: dict[str, Any]) -> str | None:
    tags = event.get("tags") or {}
    stage = tags.get("stage") if isinstance(tags, dict) else dict(tags).get("stage")
    return stage if stage == event.get("server_name") else None


def injected_faults(collector: Collector) -> dict[str, list[dict[str, Any]]]:
    """Stage -> its events that report the injected fault (by message or exception)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in collector.events():
        stage = stage_of(event)
        if stage is not None and any(f"injected fault in {stage}" in text for text in strings_in(event)):
            found.setdefault(stage, []).append(event)
    return found


@pytest.mark.timeout(180)
def test_every_stage_reports_to_sentry_and_no_report_carries_a_secret(
    make_tree: Callable[..., Tree], collector: Collector, tmp_path: Path
) -> None:
    inject, flags = tmp_path / "inject", tmp_path / "flags"
    inject.mkdir()
    flags.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    token = bearer_token()
    tree = make_tree(
        env={
            "AUTH_DISABLED": "false",
            "JWT_SECRET": JWT_SECRET,
            "API_KEY": API_KEY,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_ISSUER": ISSUER,
            "SENTRY_DSN": collector.dsn,
            "PYTHONPATH": f"{inject}:{ROOT}",
            "FAULT_FLAGS": str(flags),
            "FAULT_TOKEN": token,
            "FAULT_ADDRESS": ADDRESSES[0],
            "FAULT_HTML": HTML,
        },
        workdir=tmp_path / "tree",
    )
    bearer = {"Authorization": f"Bearer {token}"}
    body = campaign(ADDRESSES, content=HTML)
    answers: list[int] = []

    def stored() -> bool:
        # 500 (ingest's fault), then 422 (the recorder's), then stored; 503s while restarting.
        status = tree.post("/v1/messages", body, headers=bearer, timeout_s=5)[0]
        answers.append(status)
        return status == 200

    wait_until(stored, 30, "the campaign to be stored once the faults have fired", every_s=0.2)
    assert answers[:2] == [500, 422], answers
    wait_until(lambda: tree.statuses() == {"sent": 2}, 60, "both to be sent after the crashes", every_s=0.2)
    tree.wait_ready()
    assert tree.get("/v1/topics", headers={"X-API-KEY": API_KEY})[0] == 200
    assert sorted(p.name for p in flags.iterdir()) == sorted(STAGES)

    def from_every_stage() -> dict[str, list[dict[str, Any]]]:
        found = injected_faults(collector)
        return found if set(found) == set(STAGES) else {}

    faults = wait_until(from_every_stage, 30, "an event about its injected fault from every stage", every_s=0.2)

    texts = collector.texts()
    must_not_leak = {
        "JWT_SECRET": JWT_SECRET,
        "API_KEY": API_KEY,
        "the Bearer token": token,
        "the token's signature": token.rsplit(".", 1)[1],
        **{f"address {a}": a for a in ADDRESSES},
        **{f"local part of {a}": a.split("@")[0] for a in ADDRESSES},
        "the HTML": HTML,
        "the HTML's text": "Confidential offer",
        "the HTML's other text": "code 9137",
    }
    leaked = {name: sum(value in text for text in texts) for name, value in must_not_leak.items()}
    assert {name: count for name, count in leaked.items() if count} == {}, "found in what was sent to Sentry"
    # Scrubbed, not dropped: the report still says what failed, with placeholders.
    sender_report = " ".join(strings_in(faults["sender"]))
    assert "injected fault in sender: key [secret], api key [secret], Bearer [Filtered], to [email]" in sender_report
