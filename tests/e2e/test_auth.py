"""Authentication on the real tree: Bearer JWT (HS256) or X-API-KEY on /v1/, public pixel and webhook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.helpers import ROOT, SUPERVISOR, Tree, campaign, http

SECRET = "test-secret-" + "x" * 60  # 64+ bytes, so even the HS512 forgery is a clean key
API_KEY = "test-api-key-" + "y" * 40
AUDIENCE, ISSUER = "ses-sender", "https://auth.example.com"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    env = {
        "AUTH_DISABLED": "false",
        "JWT_SECRET": SECRET,
        "API_KEY": API_KEY,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
    }
    started = Tree(tmp_path_factory.mktemp("auth"), env).start()
    yield started
    started.stop()


def token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "tests", "iat": now, "exp": now + 300, "aud": AUDIENCE, "iss": ISSUER, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm=algorithm)


def get_topics(tree: Tree, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    return http("GET", tree.base + "/v1/topics", headers=headers)


def test_a_valid_token_or_api_key_is_let_in(tree: Tree) -> None:
    assert get_topics(tree, {"Authorization": f"Bearer {token()}"})[0] == 200
    assert get_topics(tree, {"X-API-KEY": API_KEY})[0] == 200


def unsigned_token() -> str:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": "x", "exp": int(time.time()) + 300, "aud": AUDIENCE, "iss": ISSUER}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD = {
    "missing": {},
    "not bearer": {"Authorization": f"Basic {token()}"},
    "garbage": {"Authorization": "Bearer not.a.token"},
    "wrong secret": {"Authorization": f"Bearer {token(secret='another-secret-' + 'z' * 40)}"},
    "expired": {"Authorization": f"Bearer {token(exp=int(time.time()) - 120)}"},
    "not yet valid": {"Authorization": f"Bearer {token(nbf=int(time.time()) + 600)}"},
    "HS512": {"Authorization": f"Bearer {token(algorithm='HS512')}"},
    "alg none": {"Authorization": f"Bearer {unsigned_token()}"},
    "wrong audience": {"Authorization": f"Bearer {token(aud='someone-else')}"},
    "wrong issuer": {"Authorization": f"Bearer {token(iss='https://evil.example')}"},
    "wrong api key": {"X-API-KEY": "nope-" + "n" * 40},
}


@pytest.mark.parametrize("case", list(BAD))
def test_everything_else_gets_401_with_a_bearer_challenge(tree: Tree, case: str) -> None:
    status, body, headers = get_topics(tree, BAD[case])
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["code"] == "unauthorized"


def test_writes_are_protected_and_change_nothing(tree: Tree) -> None:
    body = {"messages": [{"emails": ["a@example.com"], "subject": "S", "content": "<p>x</p>"}]}
    assert http("POST", tree.base + "/v1/messages", body)[0] == 401
    with tree.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0] == 0
    status, answer, _ = http("POST", tree.base + "/v1/messages", body, headers={"X-API-KEY": API_KEY})
    assert status == 200 and answer["success"] == 1


def test_the_pixel_the_webhook_and_health_are_public(tree: Tree) -> None:
    assert http("GET", tree.base + "/v1/events/open?request_id=1&sig=x")[0] == 200
    # The webhook answers on its own terms (400: no SNS message type), never 401.
    assert http("POST", tree.base + "/v1/events/results", b"{}")[0] == 400
    assert tree.get("/health")[0] == 200 and tree.get("/ready")[0] == 200


def test_the_dashboard_page_is_public_and_its_data_is_not(tree: Tree) -> None:
    # The page and its files carry no data (like /docs); what it shows comes from the API.
    for path in ("/dashboard", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"):
        assert tree.get(path)[0] == 200, path
    for path in ("/v1/topics", "/v1/account", "/v1/topics/t1"):
        assert tree.get(path)[0] == 401, path


def test_secrets_and_tokens_never_reach_the_log(tree: Tree) -> None:
    get_topics(tree, {"Authorization": f"Bearer {token(secret='leak-' + 'q' * 40)}"})
    log = tree.log()
    assert SECRET not in log and API_KEY not in log and "leak-" not in log


def test_no_secret_and_no_explicit_opt_out_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SUPERVISOR)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "JWT_SECRET: required" in result.stderr and "AUTH_DISABLED=true" in result.stderr


def test_running_open_is_announced_at_every_start(tree: Tree, tmp_path: Path) -> None:
    open_tree = Tree(tmp_path, {"AUTH_DISABLED": "true"}).start()
    try:
        assert "AUTH_DISABLED=true: the API accepts requests from anyone" in open_tree.log()
        assert open_tree.get("/v1/topics")[0] == 200
    finally:
        open_tree.stop()


def test_the_token_command_mints_a_working_token(tree: Tree, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "JWT_SECRET": SECRET, "JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER}
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest", "token", "--sub", "ops", "--ttl", "2h"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    minted = result.stdout.strip()
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == "ops" and 7100 <= claims["exp"] - time.time() <= 7200
    assert get_topics(tree, {"Authorization": f"Bearer {minted}"})[0] == 200


def test_every_api_route_but_the_pixel_the_webhook_and_the_links_in_mail_wants_a_token(tree: Tree) -> None:
    # Read from the router itself, so a route added without `protected` fails here.
    from aiohttp import web

    from stages.ingest.routes import setup_routes

    app = web.Application()
    setup_routes(app)
    # The unsubscribe link's token is its credential (RFC 8058: no cookie, no auth).
    public = {"/v1/events/open", "/v1/events/results", "/v1/unsubscribe/{token}", "/v1/events/click/{token}"}
    checked = 0
    for resource in app.router.resources():
        path = resource.canonical
        if not path.startswith("/v1/"):
            continue
        for route in resource:
            if route.method == "HEAD":
                continue
            url = tree.base + path.replace("{topic_id}", "t1").replace("{email}", "a@example.com")
            url = url.replace("{token}", "forged")
            status = http(route.method, url, b"{}" if route.method == "POST" else None)[0]
            assert (status != 401) if path in public else (status == 401), (route.method, path, status)
            checked += 1
    assert checked == 19


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer \xff"},
        {"Authorization": "Bearer \xe9t\xe9.\xff.x"},
        {"Authorization": "Bearer " + "a" * 5000},
        {"X-API-KEY": "\xff" * 40},
        {"X-API-KEY": "   "},
        {"X-API-KEY": API_KEY + "\xe9"},
    ],
    ids=["bearer-0xff", "bearer-latin1", "bearer-long", "key-0xff", "key-blank", "key-latin1"],
)
def test_a_malformed_credential_is_a_401_never_an_error(tree: Tree, headers: dict[str, str]) -> None:
    status, body, _ = get_topics(tree, headers)
    assert status == 401 and body["code"] == "unauthorized"
    assert "Traceback" not in tree.log() and "unexpected error" not in tree.log()


def test_a_token_without_an_expiry_is_refused(tree: Tree) -> None:
    status, body, _ = get_topics(tree, {"Authorization": f"Bearer {token(exp=None)}"})
    assert status == 401 and "exp" in body["error"]


def test_an_idempotency_key_belongs_to_its_caller(tree: Tree) -> None:
    """The same key from two callers is two requests: one caller never gets another's answer."""
    body = campaign(["scoped@example.com"], topic_id="scoped")
    for caller in (
        {"Authorization": f"Bearer {token(sub='alice')}"},
        {"Authorization": f"Bearer {token(sub='bob')}"},
        {"X-API-KEY": API_KEY},
    ):
        status, answer, _ = http("POST", tree.base + "/v1/messages", body, headers={**caller, "Idempotency-Key": "k1"})
        assert status == 200 and answer["success"] == 1, caller
    status, topic, _ = http("GET", tree.base + "/v1/topics/scoped", headers={"X-API-KEY": API_KEY})
    assert topic["total"] == 3


def test_an_api_key_alone_protects_the_server(tmp_path: Path) -> None:
    """The original server's operators set only API_KEY; AUTH_DISABLED cannot open it then."""
    keyed = Tree(tmp_path, {"AUTH_DISABLED": "true", "API_KEY": API_KEY}).start()
    try:
        assert get_topics(keyed, {})[0] == 401
        assert get_topics(keyed, {"X-API-KEY": "wrong" * 8})[0] == 401
        assert get_topics(keyed, {"Authorization": f"Bearer {token()}"})[0] == 401
        assert get_topics(keyed, {"X-API-KEY": API_KEY})[0] == 200
        assert "AUTH_DISABLED=true: the API accepts" not in keyed.log()
    finally:
        keyed.stop()


def test_with_auth_off_it_listens_on_loopback_only_unless_told(tmp_path: Path) -> None:
    open_tree = Tree(tmp_path, {"AUTH_DISABLED": "true"})
    del open_tree.env["SERVER_HOST"]
    open_tree.start()
    try:
        assert re.search(r"listening on http://127\.0\.0\.1:\d+", open_tree.log())
        assert "listening on 127.0.0.1 only: authentication is off" in open_tree.log()
    finally:
        open_tree.stop()
