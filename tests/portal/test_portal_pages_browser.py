"""Every staff portal page (each GET route of the portal's router: a new page cannot be left out) in
each of the four languages, in headless Chromium at a tablet's width: no WCAG 2.0-2.2 A/AA violation
found by axe-core, labels that tell the fields apart, and no sideways scrolling of the page (wide
tables scroll inside their own box)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.support_requests import record_request
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.portal import imports
from onboarding.portal import pages as portal_pages
from onboarding.portal import staff as staff_service
from onboarding.portal.models import StaffMember
from onboarding.web.rendering import LANGUAGE_COOKIE
from tests.conftest import NOW, Database
from tests.helpers import csrf
from tests.portal.portal_support import STAFF_PASSWORD, add_orders, make_staff, signed_in_staff, staff_login
from tests.web.test_accessibility_browser import axe_script, violations  # noqa: F401 (a fixture)
from tests.web.test_small_screens_browser import LANGS, SQLITE
from vehicles.models import Dealer, Order

pytestmark = pytest.mark.browser
TABLET = {"width": 768, "height": 1024}


def _seeded(client: TestClient, db: Database, settings: Settings) -> dict[str, str]:
    """A signed-in platform admin, an order, a support request about it and a finished check."""
    number = add_orders(db.factory, settings, "SE", 1, dealer="SE-01", country="SE")[0]
    staff_id, secret = make_staff(db.factory, "root@brand.example", "platform_admin", enrolled_with=settings)
    with transaction(db.factory) as session:
        order = session.scalars(select(Order).where(Order.order_number == number)).one()
        request = record_request(
            session, settings, kind="wrong_phone", now=NOW, order=order, dealer=session.get(Dealer, "SE-01")
        )
        staff = session.get(StaffMember, staff_id)
        assert staff is not None
        job = imports.create(session, staff, file_name="orders.csv", stored_path="", dry_run=True, now=NOW)
        job.state = imports.DONE
        job.report = {
            "rows": 2, "valid": 1, "created": 0, "updated": 0, "skipped": 1, "dry_run": True,
            "imported": False, "error_count": 1, "errors_not_listed": 0, "hints_not_listed": 0,
            "errors": [{"row": 3, "field": "buyer_email", "message": "Not an email address."}], "hints": [],
        }  # fmt: skip
        ids = {"order_number": number, "request_id": str(request.id), "import_id": str(job.id)}
    signed_in_staff(client, "root@brand.example", secret)
    return ids


def _invite(client: TestClient, db: Database, settings: Settings) -> Any:
    with transaction(db.factory) as session:
        _member, token = staff_service.create_staff(
            session,
            email="new@brand.example",
            name="New Person",
            role="platform_admin",
            dealer_code=None,
            country=None,
            language="en",
            creator=None,
            now=utcnow(),
        )
    return client.get(f"/portal/invite/{token}")


def _enrol(client: TestClient, db: Database, settings: Settings) -> Any:
    make_staff(db.factory, "first@brand.example", "platform_admin")
    assert staff_login(client, "first@brand.example").status_code == 303
    return client.get("/portal/login/enrol")


def _verify(client: TestClient, db: Database, settings: Settings) -> Any:
    make_staff(db.factory, "back@brand.example", "platform_admin", enrolled_with=settings)
    assert staff_login(client, "back@brand.example", STAFF_PASSWORD).status_code == 303
    return client.get("/portal/login/verify")


def _signed_in(path: str) -> Callable[[TestClient, Database, Settings], Any]:
    def visit(client: TestClient, db: Database, settings: Settings) -> Any:
        ids = _seeded(client, db, settings)
        return client.get(path.format(**ids))

    return visit


def _import_form_with_error(client: TestClient, db: Database, settings: Settings) -> Any:
    _seeded(client, db, settings)
    return client.post("/portal/import", data=csrf(client), files={"file": ("empty.csv", b"", "text/csv")})


# Each portal page as a browser reaches it. Keys: the route; values: the way there.
PAGES: dict[str, Callable[[TestClient, Database, Settings], Any]] = {
    "/portal/login": lambda c, d, s: c.get("/portal/login"),
    "/portal/invite/{token}": _invite,
    "/portal/login/enrol": _enrol,
    "/portal/login/verify": _verify,
    "/portal": _signed_in("/portal/orders"),
    "/portal/orders": _signed_in("/portal/orders?stage=flying"),  # with a field error shown
    "/portal/orders/{order_number}": _signed_in("/portal/orders/{order_number}"),
    "/portal/requests": _signed_in("/portal/requests"),
    "/portal/requests/{request_id}": _signed_in("/portal/requests/{request_id}"),
    "/portal/statistics": _signed_in("/portal/statistics"),
    "/portal/audit": _signed_in("/portal/audit"),
    "/portal/import": _import_form_with_error,
    "/portal/import/{import_id}": _signed_in("/portal/import/{import_id}"),
    "/portal/staff": _signed_in("/portal/staff"),
}


def test_the_list_covers_every_portal_page() -> None:
    routes = {
        route.path
        for route in portal_pages.router.routes
        if isinstance(route, APIRoute) and "GET" in (route.methods or set())
    }
    assert routes == set(PAGES)


@pytest.fixture
def tablet(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=TABLET, locale="en-GB")
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@SQLITE
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("route", list(PAGES))
def test_every_portal_page_passes_axe_and_fits_a_tablet(
    tablet: Any,
    axe_script: Path,  # noqa: F811
    db: Database,
    reference: None,
    settings: Settings,
    client: TestClient,
    route: str,
    lang: str,
) -> None:
    client.cookies.set(LANGUAGE_COOKIE, lang)
    with ThreadPoolExecutor(1) as pool:  # the way there may run the scheduler (asyncio.run)
        response = pool.submit(PAGES[route], client, db, settings).result(timeout=60)
    assert "text/html" in response.headers["content-type"], (route, response.status_code)
    assert f'<html lang="{lang}">' in response.text, route
    tablet.set_content(response.text)
    assert violations(tablet, axe_script) == [], (route, lang)
    labels = tablet.evaluate("[...document.querySelectorAll('label')].map(l => l.textContent.trim())")
    assert len(labels) == len(set(labels)), (route, lang, labels)
    widths = tablet.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], (route, lang, widths)
