"""The API documentation in headless Chromium: Swagger UI, served by the app itself from the bundled
files (no CDN), renders the order API's operations under the Content-Security-Policy, and the page logs
no console error (a blocked script or a failed load would)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from onboarding.core.settings import Settings
from tests.browser_support import LiveServer, live_server
from tests.conftest import Database

pytestmark = pytest.mark.browser


@pytest.fixture
def live(settings: Settings, db: Database) -> Iterator[LiveServer]:
    with live_server(settings, db.factory) as server:
        yield server


def test_api_docs_render_the_order_api_without_console_errors(page: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    requested: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("request", lambda r: requested.append(r.url))

    response = page.goto(f"{live.url}/api/docs")
    assert response is not None and response.status == 200
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/orders/{order_number}").first
    ).to_be_visible()
    assert operations.count() >= 6
    # Swagger UI 5 renders the OpenAPI 3.1 document (4.x could not): it shows the version it read.
    expect(page.locator(".info .title")).to_contain_text(live.settings.brand_name)
    expect(page.locator(".info .title")).to_contain_text("OAS 3.1")

    # An operation opens, with its parameters, still without any error.
    page.locator(".opblock-summary-path", has_text="/api/v1/orders/{order_number}").first.click()
    expect(page.locator(".opblock.is-open .parameters").first).to_be_visible()
    page.wait_for_timeout(300)

    assert problems == []
    assert requested and all(url.startswith(live.url) for url in requested), requested
