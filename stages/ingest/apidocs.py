"""`/openapi.json` and `/docs`: the contract, and Swagger UI to read and try it.

Swagger UI's files come from the swagger-ui-py package (Swagger UI 5, which reads
OpenAPI 3.1) and are served from here, so the page works with no internet access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from aiohttp import web

from stages.ingest.errors import answers_errors
from stages.ingest.openapi import build_document

DOCS_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ses-sender API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/docs-init.js"></script>
</body>
</html>
"""
# Inline scripts would need a looser Content-Security-Policy; this file is ours.
DOCS_INIT: Final = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  displayRequestDuration: true
});
"""
SWAGGER_ASSETS: Final = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def swagger_ui_dir() -> Path:
    import swagger_ui.utils

    return Path(swagger_ui.utils.SWAGGER_UI_PY_ROOT) / "static"


def setup_docs(app: web.Application) -> None:
    document = json.dumps(build_document(), ensure_ascii=False).encode()
    assets = swagger_ui_dir()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_PAGE, content_type="text/html", headers=SECURITY_HEADERS)

    async def docs_init(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_INIT, content_type="application/javascript")

    async def swagger_asset(request: web.Request) -> web.StreamResponse:
        """Only the files the page loads: a fixed list, so no path reaches the file system."""
        name = request.match_info["name"]
        if name not in SWAGGER_ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(assets / name)

    app.router.add_get("/openapi.json", answers_errors(openapi_json))
    app.router.add_get("/docs", answers_errors(docs))
    app.router.add_get("/docs/static/docs-init.js", answers_errors(docs_init))
    app.router.add_get("/docs/static/{name}", answers_errors(swagger_asset))
