"""`/docs` (Swagger UI) and `/redoc` from assets the API serves itself: no CDN, so both work on a
machine without internet.

FastAPI's own pages load their JS and CSS (and ReDoc its fonts) from CDNs. The same pages are built
here with FastAPI's functions, pointing at the files of the `fastapi-offline` package (Swagger UI 5,
which reads OpenAPI 3.1, and ReDoc), served under `DOCS_ASSETS_PATH`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
DOCS_ASSETS_PATH = "/docs-assets"
ASSETS_FOLDER = Path(fastapi_offline.__file__).parent / "static"
"""`swagger-ui-bundle.js`, `swagger-ui.css`, `redoc.standalone.js`, `favicon.png`."""
NEVER_FRAMED = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
"""Headers of each page: no other site may frame it (clickjacking the "Authorize" form).
Only `frame-ancestors`: the pages' own inline scripts must still run."""


class _Page(TypedDict):
    """What both pages are given alike: the document they show and their title."""

    openapi_url: str
    title: str


def _never_framed(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(NEVER_FRAMED)
    return page


def install_docs(app: FastAPI) -> None:
    """Serve the assets and the two pages. `app` is built with `docs_url=None, redoc_url=None`."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=ASSETS_FOLDER), name="docs-assets")

    def under_root(request: Request, path: str) -> str:
        """`path` as the browser must ask for it (behind a proxy that strips a prefix too)."""
        return f"{request.scope.get('root_path', '')}{path}"

    def asset(request: Request, name: str) -> str:
        return under_root(request, f"{DOCS_ASSETS_PATH}/{name}")

    def page(request: Request, name: str) -> _Page:
        return _Page(openapi_url=under_root(request, openapi_url), title=f"{app.title} - {name}")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _never_framed(
            get_swagger_ui_html(
                **page(request, "Swagger UI"),
                oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
                swagger_js_url=asset(request, "swagger-ui-bundle.js"),
                swagger_css_url=asset(request, "swagger-ui.css"),
                swagger_favicon_url=asset(request, "favicon.png"),
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _never_framed(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _never_framed(
            get_redoc_html(
                **page(request, "ReDoc"),
                redoc_js_url=asset(request, "redoc.standalone.js"),
                redoc_favicon_url=asset(request, "favicon.png"),
                with_google_fonts=False,
            )
        )
