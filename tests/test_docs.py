"""`/docs` and `/redoc` work without internet: every asset they load is served by the API itself,
over real HTTP."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
URL_IN_SCRIPT = re.compile(r"""url:\s*['"]([^'"]+)['"]""")


async def _page_assets(api: httpx.AsyncClient, path: str) -> list[str]:
    page = await api.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    # Nothing from another host: no CDN, no web fonts.
    assert re.findall(r"https?://", html) == []
    return ASSET.findall(html)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css"}),
        ("/redoc", {"redoc.standalone.js": "javascript"}),
    ],
)
async def test_docs_pages_load_only_local_assets(
    api: httpx.AsyncClient, path: str, expected: dict[str, str]
) -> None:
    assets = await _page_assets(api, path)
    local = {url.rsplit("/", 1)[-1]: url for url in assets}
    assert set(expected) <= set(local), assets
    for url in assets:
        assert url.startswith("/docs-assets/"), url
        answer = await api.get(urljoin(str(api.base_url) + "/", url))
        assert answer.status_code == 200, url
        assert len(answer.content) > 100, url
        kind = expected.get(url.rsplit("/", 1)[-1])
        if kind is not None:
            assert kind in answer.headers["content-type"], (url, answer.headers["content-type"])


async def test_swagger_ui_reads_the_openapi_document_and_it_is_3_1(api: httpx.AsyncClient) -> None:
    html = (await api.get("/docs")).text
    assert URL_IN_SCRIPT.findall(html) == ["/openapi.json"]
    document = (await api.get("/openapi.json")).json()
    # The bundled Swagger UI is 5.x, which renders OpenAPI 3.1 (4.x does not).
    assert document["openapi"].startswith("3.1")
    bundle = (await api.get("/docs-assets/swagger-ui-bundle.js")).text
    assert "json-schema-2020-12" in bundle
    assert "/docs-assets/swagger-ui.css" not in document["paths"]
    assert not any(path.startswith(("/docs", "/redoc")) for path in document["paths"])


async def test_oauth2_redirect_page_is_served(api: httpx.AsyncClient) -> None:
    answer = await api.get("/docs/oauth2-redirect")
    assert answer.status_code == 200
    assert re.findall(r"https?://", answer.text) == []


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_may_not_be_framed_by_another_site(
    api: httpx.AsyncClient, path: str
) -> None:
    answer = await api.get(path)
    assert answer.status_code == 200
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
