"""`/dashboard` in the ingest app (`make_app`), in-process: a static, public page under a strict CSP.

The browser's view of it, against the real tree, is tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config.settings import AuthSettings, Settings
from pipeline.channels import PendingReplies
from pipeline.db.schema import open_writer
from pipeline.memory_channels import MemoryPipeline
from pipeline.messages import Message
from stages.ingest.app import make_app
from stages.ingest.dashboard import ASSETS, PAGE, read_files

SECRET = "dashboard-secret-" + "d" * 40
AppClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
MAX_TOTAL_BYTES = 100_000


@pytest.fixture
async def client(settings: Settings, aiohttp_client: AppClient) -> AsyncIterator[Client]:
    """The app with authentication on (a JWT secret); no other stage runs."""
    open_writer(settings.database_path).close()  # the recorder's migration, which ingest reads
    pipeline = MemoryPipeline(replace(settings, auth=AuthSettings(jwt_secret=SECRET)))
    replies: PendingReplies[Message] = PendingReplies()
    yield await aiohttp_client(make_app(pipeline.context("ingest"), replies))


def csp_directives(header: str) -> dict[str, str]:
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


async def test_the_page_is_html_under_a_strict_content_security_policy(client: Client) -> None:
    response = await client.get("/dashboard")
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = csp_directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == "default-src 'none'"
    assert policy["script-src"] == "script-src 'self'"  # no inline script, no eval, no other host
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert policy["connect-src"] == "connect-src 'self'" and policy["frame-ancestors"] == "frame-ancestors 'none'"
    html = await response.text()
    assert '<meta name="viewport"' in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, "every script is a file (the CSP forbids inline)"
    assert " style=" not in html and "<style" not in html, "no inline style"
    assert re.search(r"<[^>]*\son[a-z]+=", html) is None, "no inline event handlers"


async def test_the_script_and_the_stylesheet_are_served_from_here(client: Client) -> None:
    html = await (await client.get("/dashboard")).text()
    for name, media_type in ASSETS.items():
        assert f'"/dashboard/static/{name}"' in html
        response = await client.get(f"/dashboard/static/{name}")
        assert response.status == 200 and response.content_type == media_type, name
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # A fixed list: nothing else under the folder, and no path reaches the file system.
    for name in ("index.html", "..%2Fdashboard.py", "nope.js"):
        response = await client.get(f"/dashboard/static/{name}")
        assert response.status == 404 and (await response.json())["code"] == "not_found", name


async def test_with_auth_on_the_page_needs_no_credential_but_its_data_does(client: Client) -> None:
    for path in ("/dashboard", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"):
        assert (await client.get(path)).status == 200, path
    for path in ("/v1/topics", "/v1/topics/t1", "/v1/account", "/v1/events/counts/sent"):
        response = await client.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    actions = (("POST", "/v1/topics/t1/pause"), ("POST", "/v1/topics/t1/resume"), ("DELETE", "/v1/topics/t1"))
    for method, path in actions:
        assert (await client.request(method, path)).status == 401, (method, path)


def test_the_files_are_small_and_load_nothing_from_elsewhere() -> None:
    files = read_files()
    assert set(files) == {PAGE, *ASSETS}
    assert sum(len(content) for content in files.values()) < MAX_TOTAL_BYTES
    page, css, script = files[PAGE].decode(), files["dashboard.css"].decode(), files["dashboard.js"].decode()
    assert "http://" not in page + css and "https://" not in page + css + script and "//cdn" not in script
    # The one http:// URL in the script is SVG's namespace name, which is never fetched.
    assert set(re.findall(r"http://[^\"']+", script)) == {"http://www.w3.org/2000/svg"}
    # Topic ids come from API callers: data goes into the page as text only.
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script
    assert "sessionStorage" in script and "localStorage" not in script
