"""`/docs` renders the API in a real browser with every other host unreachable: Debian's
chromium, driven by Selenium over loopback. The screenshots land in `var/screenshots/`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_SECONDS = 30


def browser() -> webdriver.Chrome:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        # Every host but loopback is unreachable: a page that needs a CDN cannot render.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def render(url: str, ready: str, screenshot: Path) -> dict[str, Any]:
    """Open `url`, wait for an element matching CSS `ready`; what the page shows and loaded."""
    driver = browser()
    try:
        driver.set_page_load_timeout(WAIT_SECONDS)
        driver.get(url)
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return {
            "texts": [e.text for e in driver.find_elements(By.CSS_SELECTOR, ready)],
            "loaded": driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            ),
        }
    finally:
        driver.quit()


async def test_swagger_ui_lists_the_api_with_no_other_host_reachable(
    api: httpx.AsyncClient,
) -> None:
    base = str(api.base_url).rstrip("/")
    shown = await asyncio.to_thread(
        render, f"{base}/docs", ".opblock-summary-path", SCREENSHOTS / "docs.png"
    )
    paths = {text.replace("\u200b", "") for text in shown["texts"]}
    assert "/v1/registrations/{id}" in paths
    assert "/v1/events/{id}/replay" in paths
    assert shown["loaded"], "the page loaded no asset"
    assert all(url.startswith(base) for url in shown["loaded"]), shown["loaded"]


async def test_redoc_renders_with_no_other_host_reachable(api: httpx.AsyncClient) -> None:
    base = str(api.base_url).rstrip("/")
    shown = await asyncio.to_thread(render, f"{base}/redoc", "h1", SCREENSHOTS / "redoc.png")
    assert any("Sinch" in text for text in shown["texts"]), shown["texts"]
    # ReDoc's footer asks for its maker's logo; it is decoration, and the page renders without it.
    elsewhere = [url for url in shown["loaded"] if not url.startswith(base)]
    assert elsewhere in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), elsewhere
