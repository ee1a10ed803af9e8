"""Every page fits a phone (issue 11, item 9): no page scrolls sideways at 320 or 390 CSS pixels in any
of the four languages, in headless Chromium.

The pages are the app's GET pages (checked against its routers, below), each reached the way a
browser reaches it (an invitation, an ID, a reset link; ``test_error_pages_and_titles.Visit``), in the
language chosen with the language cookie, then laid out by Chromium (the styles are inline)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import insert

from notifications.models import DevMailboxMessage
from onboarding.activation import (
    car_pages,
    charging_pages,
    consent_pages,
    pairing_pages,
    secondary_pages,
    vehicle_pages,
)
from onboarding.activation import pages as activation_pages
from onboarding.core.clock import utcnow
from onboarding.identity import account_pages
from onboarding.identity import pages as identity_pages
from onboarding.ops import mailbox_pages
from onboarding.web.rendering import LANGUAGE_COOKIE
from tests.conftest import Database
from tests.helpers import csrf
from tests.web.test_error_pages_and_titles import PAGES, Visit
from vehicles.incar import pages as incar_pages

pytestmark = pytest.mark.browser
# Layout does not depend on the database: SQLite only.
SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

LANGS = ("en", "de", "sv", "nb")
WIDTHS = (320, 390)
LONG_LINK = "https://example.com/" + "a-very-long-path-segment-without-any-break" * 4 + "?token=" + "x" * 80


def _mailbox_message(v: Visit) -> Any:
    with v.db.engine.begin() as conn:
        found = conn.execute(
            insert(DevMailboxMessage)
            .values(
                channel="email",
                recipient="kommunikationsinstallningar.langadress@example.com",
                subject="Kommunikationsinställningar",
                text_body=f"Open {LONG_LINK}\n\n{'x' * 120}",
                html_body=f'<p><a href="{LONG_LINK}">{LONG_LINK}</a></p>',
                created_at=utcnow(),
            )
            .returning(DevMailboxMessage.id)
        ).scalar_one()
    return v.client.get(f"/dev/mailbox/{found}")


def _totp_enrolment(v: Visit) -> Any:
    v.signed_in()
    return v.client.post("/account/security/totp/start", data=csrf(v.client))


# Pages the title test does not visit.
MORE_PAGES: dict[str, Callable[[Visit], Any]] = {
    "account: PIN": lambda v: v.signed_in().client.get("/account/security/pin"),
    "account: authenticator app": _totp_enrolment,
    "dev mailbox": lambda v: v.invited().client.get("/dev/mailbox"),
    "dev SMS outbox": lambda v: v.with_id().client.get("/dev/sms"),
    "dev mailbox message": _mailbox_message,
}
ALL_PAGES = {**PAGES, **MORE_PAGES}

# The GET routes that are not pages of their own, or are visited under another name.
NOT_VISITED = {
    "/i/{token}": "opens the link and redirects; its problem pages are the '... invitation link' pages",
    "/register/verify/{token}": "the 'used email link' page",
    "/password/reset/{token}": "moves the token into a cookie and redirects to /password/reset",
    "/account/email/confirm/{token}": "confirms and redirects, or the same link-problem page",
    "/login/verify": "the code field of the PIN and SMS pages (web/_forms.html code_field)",
    "/vehicles/{vehicle_id}/leave": "a one-button confirmation like 'remove a vehicle', for secondary users",
    "/device/qr.svg": "an image for the car's screen, not a page",
}
VISITED_ROUTES = {
    "/",
    "/activate",
    "/activate/id",
    "/activate/phone",
    "/activate/phone/wrong",
    "/activate/pin",
    "/activate/terms",
    "/activate/billing",
    "/activate/data-pass",
    "/activate/services",
    "/activate/vehicle",
    "/activate/charging",
    "/activate/done",
    "/vehicles",
    "/vehicles/{vehicle_id}/users",
    "/vehicles/{vehicle_id}/remove",
    "/secondary/{token}",
    "/account/consents",
    "/device",
    "/vehicles/pair",
    "/invitation/request",
    "/login",
    "/register",
    "/register/pending",
    "/password/forgot",
    "/password/reset",
    "/terms",
    "/privacy",
    "/account",
    "/account/email",
    "/account/password",
    "/account/security",
    "/account/security/pin",
    "/dev/mailbox",
    "/dev/sms",
    "/dev/mailbox/{message_id}",
}


def page_routes() -> set[str]:
    routers = (
        activation_pages.router,
        consent_pages.router,
        car_pages.router,
        charging_pages.router,
        vehicle_pages.router,
        secondary_pages.router,
        pairing_pages.router,
        incar_pages.router,
        identity_pages.router,
        account_pages.router,
        mailbox_pages.router,
    )
    return {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and "GET" in (route.methods or set())
    }


def test_the_page_list_covers_every_page_route() -> None:
    assert page_routes() - set(NOT_VISITED) == VISITED_ROUTES
    assert set(NOT_VISITED) <= page_routes()


def render_page(
    name: str, lang: str, db: Database, settings: Any, client: TestClient, api_headers: dict[str, str]
) -> str:
    """The page ``name`` as a browser gets it in ``lang``. Visited in a thread of its own: the way there
    may run the scheduler (``asyncio.run``), which Playwright's event loop on this thread refuses."""
    client.cookies.set(LANGUAGE_COOKIE, lang)
    with ThreadPoolExecutor(1) as pool:
        response = pool.submit(ALL_PAGES[name], Visit(client, db, settings, api_headers)).result(timeout=60)
    assert "text/html" in response.headers["content-type"], (name, response.status_code, response.text[:300])
    assert f'<html lang="{lang}">' in response.text, name
    return str(response.text)


def overflow(page: Any, width: int) -> dict[str, Any]:
    page.set_viewport_size({"width": width, "height": 800})
    result: dict[str, Any] = page.evaluate(
        """() => {
            const limit = window.innerWidth;
            const wide = [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > limit + 0.5)
                .slice(0, 5)
                .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ': '
                          + (e.textContent || '').trim().slice(0, 40));
            return {scrollWidth: document.documentElement.scrollWidth, innerWidth: limit, wide};
        }"""
    )
    return result


@SQLITE
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", list(ALL_PAGES))
def test_no_page_scrolls_sideways_on_a_phone(
    page: Any,
    db: Database,
    reference: None,
    settings: Any,
    client: TestClient,
    api_headers: dict[str, str],
    name: str,
    lang: str,
) -> None:
    page.set_content(render_page(name, lang, db, settings, client, api_headers))
    for width in WIDTHS:
        found = overflow(page, width)
        # A phone browser widens its layout viewport (innerWidth) to fit a page that is too wide, so
        # both are compared with the screen's width too.
        assert found["scrollWidth"] <= found["innerWidth"] == width, (name, lang, width, found)
