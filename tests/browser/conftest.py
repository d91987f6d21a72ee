"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against pytest-django's live server.

Skipped only when that browser is not installed. Screenshots go to ``tests/browser/screenshots/``
(git-ignored) so a person can look at what the tests saw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls from it
# unless told the (test-only) mix is intended.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        yield browser
        browser.close()


class Watched:
    """What the page did that it should not: JavaScript dialogs, console errors (CSP violations)."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    page = context.new_page()
    watched = Watched()

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: watched.console_errors.append(m.text) if m.type == "error" else None)
    page.watched = watched
    page.base_url = live_server.url
    yield page
    context.close()


def sign_in(page: Any, user: Any) -> None:
    """Give the browser a session for ``user`` without typing (the login form has its own test)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": page.base_url}])


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def fill_count_of_pending(page: Any, *, subject: str = "project") -> None:
    """The custom-fact admin form, filled in for ``custom.co_pending_30d``: pending change orders of the
    last 30 days."""
    page.fill("#id_key", "co_pending_30d")
    page.select_option("#id_subject_type", subject)
    page.select_option("#id_type", "int")
    page.fill("#id_unit", "count")
    page.select_option("#id_kind", "aggregate")
    page.select_option("#id_related", "change_orders")
    page.select_option("#id_function", "count")
    page.fill("#id_filters", "status eq pending")
    page.fill("#id_window", "30d")


def preview_values(page: Any) -> dict[str, str]:
    """The custom-fact preview's table, once shown: each subject's name → the value as shown."""
    table = page.locator("#custom-fact-preview")
    table.wait_for()
    return dict(
        zip(
            table.locator("tbody td:first-child").all_inner_texts(),
            table.locator("tbody td.preview-value").all_inner_texts(),
            strict=True,
        )
    )
