"""Debian's Chromium driven through Playwright's sync API (issue 10 point 9).

Invariants:
* the browser is always ``/usr/bin/chromium`` (Debian package ``chromium``,
  installed by ``.ci/run``); Playwright never downloads one, so the launch
  names ``executable_path`` and nothing here calls ``playwright install``;
* one browser per test module (``browser``), a fresh context per test
  (``context``: own cookies and storage, ``ignore_https_errors`` because the
  server's certificate is self-signed);
* test host names (``BROWSER_HOSTS``) resolve to 127.0.0.1 inside the browser
  through ``--host-resolver-rules``, since a browser cannot set ``Host:``;
* when a test fails, every open page of its context is saved as a PNG under
  ``<tmp_path>/screenshots/`` (the report comes from the hook in
  ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_HOSTS = ("client.com", "main.dom", "other.com")
"""Names the browser resolves to 127.0.0.1 (the tests' domains)."""
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=" + ", ".join(f"MAP {h} 127.0.0.1" for h in BROWSER_HOSTS),
]
PHONE: dict[str, Any] = {"viewport": {"width": 375, "height": 667}, "device_scale_factor": 2,
                         "is_mobile": True, "has_touch": True}
"""A phone-sized context (iPhone SE class)."""
TIMEOUT_MS = 15_000


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is missing: apt-get install chromium "
                    "(.ci/run installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; closed with its driver afterwards."""
    _require_chromium()
    # Belt and braces: even a stray code path must not fetch a browser.
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS,
                                      headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot_pages(pages: list[Page], folder: Path) -> list[Path]:
    """Save each page as ``<n>.png``; a page that cannot be shot is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for n, page in enumerate(pages):
        path = folder / f"{n}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
        except Exception:  # a crashed page must not hide the failure itself
            continue
        saved.append(path)
    return saved


@pytest.fixture
def context(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[BrowserContext]:
    """A fresh desktop-sized browser context for one test."""
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        finish(ctx, request, tmp_path)


@pytest.fixture
def phone(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[BrowserContext]:
    """A fresh phone-sized context (375x667, mobile viewport rules, touch)."""
    ctx = browser.new_context(ignore_https_errors=True, **PHONE)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        finish(ctx, request, tmp_path)


def finish(ctx: BrowserContext, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Close ``ctx``, first saving screenshots of its pages if the test failed."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        saved = screenshot_pages(list(ctx.pages), tmp_path / "screenshots")
        for path in saved:
            print(f"screenshot: {path}")
    ctx.close()


AFTER_SIGN_IN = re.compile(r"/login$|/Session/")
"""Where the login form's POST leaves the browser: the login page again, or a session."""


def web_url(server: Any, host: str = "main.dom", *, secure: bool = False) -> str:
    """The login page URL as a user types it (the host name, not 127.0.0.1);
    ``server`` is a ``tests.support.server.WaypostServer``."""
    if secure:
        return f"https://{host}:{server.webs}/"
    return f"http://{host}:{server.web}/"


SESSION_START = re.compile(r"/Session/[^/]+/Mailboxes\.wssp$")
"""The first page of a session."""


def sign_in(page: Page, server: Any, name: str, password: str, host: str = "main.dom", *,
            session: bool = False) -> None:
    """Log in through the stock login form, as a user does; with ``session``
    wait until the session's first page is shown (else also accept the login
    page again, for tests of refusals)."""
    page.goto(web_url(server, host))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(SESSION_START if session else AFTER_SIGN_IN)
