"""`/dashboard`: a live page over the API, served from this server (no CDN, no build step).

The page is static, like `/docs`: `index.html`, `dashboard.js` and `dashboard.css` in
stages/ingest/dashboard/ (shipped as package data) hold no data, so they are public.
The script asks the authenticated API for everything it shows, with the token or key
the operator types in (kept in the tab's sessionStorage), and polls every 2 s; what it
reads from where is in docs/dashboard.md.

The files are read once when the app is built and served from memory, from a fixed
list, so no request path ever reaches the file system.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from aiohttp import web

from stages.ingest.errors import answers_errors

PAGE: Final = "index.html"
# name -> media type; nothing else is served under /dashboard/static/.
ASSETS: Final = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
# Strict: only this server's own script and stylesheet run, and the page talks only to
# this server. No inline script or style (the script sets widths through the CSSOM, which
# style-src does not govern); no form may submit anywhere (the login form is handled in
# the script, so a credential can never land in a URL); no framing.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate, so a new version's script is picked up after an upgrade.
    "Cache-Control": "no-cache",
}


def read_files() -> dict[str, bytes]:
    """The page and its assets, by file name."""
    folder = files("stages.ingest") / "dashboard"
    return {name: (folder / name).read_bytes() for name in (PAGE, *ASSETS)}


def setup_dashboard(app: web.Application) -> None:
    """GET /dashboard and its two assets; public, because they carry no data."""
    content = read_files()

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(body=content[PAGE], content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=content[name], content_type=ASSETS[name], charset="utf-8", headers=SECURITY_HEADERS)

    app.router.add_get("/dashboard", answers_errors(dashboard))
    app.router.add_get("/dashboard/static/{name}", answers_errors(asset))
