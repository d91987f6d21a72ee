"""Swagger UI at /api/docs/ in headless Chromium: served from our own static files, working under the
site's Content-Security-Policy, listing the API's operations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls from it
# unless told the (test-only) mix is intended.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "browser" / "screenshots"


def test_swagger_ui_renders_every_operation_without_a_csp_violation(live_server, administrator):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(base_url=live_server.url)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto("/api/docs/")
            assert response is not None and response.status == 200
            assert "script-src 'self'" in response.headers.get("content-security-policy", "")
            page.wait_for_selector(".opblock", timeout=20_000)
            labels = page.locator(".opblock-summary-path").all_inner_texts()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "api-docs.png"), full_page=True)
        finally:
            browser.close()

    assert any("/api/escalations/{id}/acknowledge/" in label.replace("\u200b", "") for label in labels)
    assert not [m for m in console_errors if "Content Security Policy" in m], console_errors
    assert all(url.startswith(live_server.url) for url in requests), "a request left our origin (a CDN?)"
