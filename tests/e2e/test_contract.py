"""The OpenAPI contract on the real tree: the document, /docs, live answers, and a fuzz run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import jwt
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from pipeline.db.schema import tracking_key
from pipeline.unsubscribe import token
from stages.ingest.errors import NO_ROUTE, answers_errors
from stages.ingest.routes import setup_routes
from tests.helpers import Tree, campaign, http, run_schemathesis

SECRET = "contract-secret-" + "z" * 40


def bearer(sub: str = "contract") -> dict[str, str]:
    now = int(time.time())
    return {"Authorization": "Bearer " + jwt.encode({"sub": sub, "iat": now, "exp": now + 3600}, SECRET, "HS256")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    started = Tree(tmp_path_factory.mktemp("contract"), {"AUTH_DISABLED": "false", "JWT_SECRET": SECRET}).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def document(tree: Tree) -> dict[str, Any]:
    status, body, headers = tree.get("/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return dict(body)


def test_the_document_is_valid_openapi_3_1_and_lists_every_route(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")
    app = web.Application()
    setup_routes(app)
    served = {
        (resource.canonical, route.method.lower())
        for resource in app.router.resources()
        if not resource.canonical.startswith(("/docs/static", "/dashboard/static")) and resource.name != NO_ROUTE
        for route in resource
        if route.method != "HEAD"
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served


def test_every_route_but_the_pixel_answers_failures_in_the_error_shape() -> None:
    # Read from the router, so a route added without the wrapper fails here (there is no
    # error middleware to catch it: see stages/ingest/errors.py).
    app = web.Application()
    setup_routes(app)
    wrapper = answers_errors(setup_routes).__code__  # type: ignore[arg-type]
    unwrapped = {
        (route.method, resource.canonical)
        for resource in app.router.resources()
        for route in resource
        if route.handler.__code__ is not wrapper  # type: ignore[attr-defined]
    }
    assert unwrapped == {("GET", "/v1/events/open"), ("HEAD", "/v1/events/open")}


class Checker:
    """Validates live answers against the document; remembers which operations it saw."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node and len(node) == 1:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def check(self, method: str, template: str, answer: tuple[int, Any, dict[str, str]]) -> Any:
        status, body, headers = answer
        operation = self.document["paths"][template][method.lower()]
        assert str(status) in operation["responses"], f"{method} {template} answered undocumented {status}: {body}"
        documented = self.resolve(operation["responses"][str(status)])
        media = headers.get("Content-Type", "").split(";")[0]
        assert media in documented["content"], f"{method} {template} {status} answered {media}"
        for header in documented.get("headers", {}):
            assert header in headers, f"{method} {template} {status} lacks {header}"
        if media == "application/json":
            schema = {**documented["content"][media]["schema"], "components": self.document["components"]}
            jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
        self.seen.add((method.lower(), template, status))
        return body


def test_live_answers_match_the_document(tree: Tree, document: dict[str, Any]) -> None:
    c = Checker(document)
    auth = bearer()
    topic = quote("spring/sale", safe="")
    base = tree.base

    def call(method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any, dict[str, str]]:
        return http(method, base + path, body, headers={**auth, **headers})

    # Messages and topics
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", campaign(["a@example.com", "bad"], "spring/sale")))
    later = campaign(["b@example.com"], "held", scheduled_at=(datetime.now(UTC) + timedelta(days=30)).isoformat())
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", later))
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", {"messages": []}))
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", b"x", **{"Content-Type": "text/plain"}))
    c.check("POST", "/v1/messages", http("POST", base + "/v1/messages", campaign(["c@example.com"])))
    keyed = {"Idempotency-Key": "k1"}
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", campaign(["d@example.com"]), **keyed))
    c.check("POST", "/v1/messages", call("POST", "/v1/messages", campaign(["e@example.com"]), **keyed))
    c.check("GET", "/v1/topics", call("GET", "/v1/topics"))
    c.check("GET", "/v1/topics", call("GET", "/v1/topics?limit=0"))
    c.check("GET", "/v1/topics/{topic_id}", call("GET", f"/v1/topics/{topic}"))
    c.check("GET", "/v1/topics/{topic_id}", call("GET", "/v1/topics/nope"))
    c.check("POST", "/v1/topics/{topic_id}/pause", call("POST", "/v1/topics/held/pause"))
    c.check("POST", "/v1/topics/{topic_id}/resume", call("POST", "/v1/topics/held/resume"))
    c.check("POST", "/v1/topics/{topic_id}/resume", call("POST", "/v1/topics/nope/resume"))
    c.check("DELETE", "/v1/topics/{topic_id}", call("DELETE", "/v1/topics/held"))
    c.check("DELETE", "/v1/topics/{topic_id}", call("DELETE", "/v1/topics/nope"))
    c.check("POST", "/v1/topics/{topic_id}/pause", call("POST", "/v1/topics/nope/pause"))
    # Events
    c.check("GET", "/v1/events/counts/sent", call("GET", "/v1/events/counts/sent?hours=24"))
    c.check("GET", "/v1/events/counts/sent", call("GET", "/v1/events/counts/sent?hours=0"))
    c.check("GET", "/v1/events/open", http("GET", base + "/v1/events/open?request_id=1&sig=x"))
    sns_type = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
    c.check("POST", "/v1/events/results", http("POST", base + "/v1/events/results", b"{}", headers=sns_type))
    forged = {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "{}"}
    forged |= {"Timestamp": "2026-01-01T00:00:00Z", "SignatureVersion": "1", "Signature": "AAAA"}
    forged["SigningCertURL"] = "https://evil.example.com/cert.pem"
    c.check("POST", "/v1/events/results", http("POST", base + "/v1/events/results", forged, headers=sns_type))
    c.check("POST", "/v1/events/results", http("POST", base + "/v1/events/results", b"x" * 300_000, headers=sns_type))
    # Suppressions
    c.check("POST", "/v1/suppressions", call("POST", "/v1/suppressions", {"email": "s@example.com"}))
    c.check("POST", "/v1/suppressions", call("POST", "/v1/suppressions", {"email": "s@example.com"}))
    c.check("POST", "/v1/suppressions", call("POST", "/v1/suppressions", {"email": "nope"}))
    c.check("POST", "/v1/suppressions", call("POST", "/v1/suppressions", {"email": "x" * 20_000}))
    c.check("GET", "/v1/suppressions", call("GET", "/v1/suppressions?limit=1"))
    c.check("GET", "/v1/suppressions", call("GET", "/v1/suppressions?limit=x"))
    c.check("GET", "/v1/suppressions/{email}", call("GET", "/v1/suppressions/S@example.com"))
    c.check("GET", "/v1/suppressions/{email}", call("GET", "/v1/suppressions/%20"))
    c.check("DELETE", "/v1/suppressions/{email}", call("DELETE", "/v1/suppressions/s@example.com"))
    c.check("DELETE", "/v1/suppressions/{email}", call("DELETE", "/v1/suppressions/s@example.com"))
    # Unsubscribe: a real link (the installation key signs it, as the sender does) and a forged one
    with tree.db() as conn:
        key, first = tracking_key(conn), conn.execute("SELECT MIN(id) FROM recipients").fetchone()[0]
    link, one_click = f"/v1/unsubscribe/{token(key, first, None)}", b"List-Unsubscribe=One-Click"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    c.check("GET", "/v1/unsubscribe/{token}", http("GET", base + link))
    c.check("GET", "/v1/unsubscribe/{token}", http("GET", base + "/v1/unsubscribe/forged"))
    c.check("POST", "/v1/unsubscribe/{token}", http("POST", base + link, one_click, headers=form))
    c.check("POST", "/v1/unsubscribe/{token}", http("POST", base + "/v1/unsubscribe/forged", one_click, headers=form))
    # Clicks: a forged token, and a topic's links
    c.check("GET", "/v1/events/click/{token}", http("GET", base + "/v1/events/click/forged"))
    c.check("GET", "/v1/topics/{topic_id}/links", call("GET", f"/v1/topics/{topic}/links"))
    # The account and the reputation guard
    c.check("GET", "/v1/account", call("GET", "/v1/account"))
    c.check("POST", "/v1/account/resume", call("POST", "/v1/account/resume"))
    # Operations
    for path in ("/health", "/ready", "/openapi.json", "/docs", "/dashboard"):
        c.check("GET", path, tree.get(path))
    c.check("GET", "/metrics", call("GET", "/metrics"))
    c.check("GET", "/metrics", http("GET", base + "/metrics"))  # no credentials: 401

    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == {(method, path) for method, path, _ in c.seen}, "every operation was checked"
    statuses = {status for *_, status in c.seen}
    assert {200, 201, 400, 401, 403, 404, 413, 415, 422} <= statuses


def test_docs_work_offline_from_this_server(tree: Tree) -> None:
    status, page, headers = tree.get("/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = page.decode()
    assert "http://" not in html and "https://" not in html, "no CDN: every asset comes from this server"
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/docs/static/docs-init.js"):
        assert asset in html
        status, content, _ = tree.get(asset)
        assert status == 200 and len(content) > 100, asset
    status, script, _ = tree.get("/docs/static/docs-init.js")
    assert b'url: "/openapi.json"' in script
    status, bundle, _ = tree.get("/docs/static/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(tree: Tree, tmp_path: Path) -> None:
    # Every check schemathesis has (5xx, status codes, content types, headers, schemas,
    # negative data refused, auth enforced, 405 with Allow), over a bounded number of cases;
    # `python -m bench fuzz` runs many more.
    token = bearer("fuzz")["Authorization"].removeprefix("Bearer ")
    result = run_schemathesis(tree.base, token, tmp_path, examples=15, seed=20261129)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Traceback" not in tree.log(), tree.log()[-4000:]
