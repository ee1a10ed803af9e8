"""No input makes a portal page fail: every route of the route table, with every parameter it reads
(path, query, form) given hostile values one at a time, answers a page or a field-named refusal,
never a 500. A new route or parameter is tried without being listed here."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.support_requests import record_request
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from onboarding.portal import imports
from onboarding.portal.models import StaffMember
from tests.conftest import NOW, Database
from tests.helpers import app_routes
from tests.portal.portal_support import add_orders, make_staff, signed_in_staff
from tests.route_inputs import server_errors
from vehicles.models import Dealer, Order

# Parameters the order list and the audit log read from the query string themselves.
UNDECLARED_QUERY = {
    "/portal/orders": ["q", "stage", "status", "dealer", "country", "delivery_from", "delivery_to", "after"],
    "/portal/audit": ["kind", "who", "since", "until", "after"],
}
# Read by the client's own flow, not worth a thousand requests each.
SKIP = {"/portal/logout"}


def _routes(app: Any) -> list[APIRoute]:
    routes = [r for path, r in app_routes(app.routes) if path.startswith("/portal") and path not in SKIP]
    return sorted(routes, key=lambda r: r.path.startswith(SIGNING_IN))


@pytest.fixture
def rows(db: Database, settings: Settings, reference: None) -> dict[str, str]:
    """Real keys for the path parameters (an order, a request, a staff member, an import)."""
    (number,) = add_orders(db.factory, settings, "HOST", 1, dealer="SE-01", country="SE")
    agent_id, _ = make_staff(db.factory, "row@se01.example", "dealer_agent", dealer="SE-01")
    with transaction(db.factory) as session:
        order = session.scalars(select(Order).where(Order.order_number == number)).one()
        request = record_request(
            session, settings, kind="no_sms", now=NOW, order=order, dealer=session.get(Dealer, "SE-01")
        )
        starter = session.get_one(StaffMember, agent_id)
        job = imports.create(session, starter, file_name="o.csv", stored_path="", dry_run=True, now=NOW)
        return {
            "order_number": number,
            "request_id": str(request.id),
            "staff_id": str(agent_id),
            "import_id": str(job.id),
            "token": "not-a-token",
        }


# The action a route with ``{action}`` takes when the action itself is not the hostile parameter.
ACTIONS = {"/portal/orders/": "email", "/portal/requests/": "note", "/portal/staff/": "reinvite"}
# Pages for signing in come last: trying them may end the session the other pages need.
SIGNING_IN = ("/portal/login", "/portal/invite")


def test_no_portal_input_gives_a_server_error(db: Database, settings: Settings, rows: dict[str, str]) -> None:
    _id, secret = make_staff(db.factory, "root@brand.example", "platform_admin", enrolled_with=settings)
    app = create_app(settings, session_factory=db.factory)
    failures: list[tuple[str, str, str, int]] = []
    tried = 0
    with TestClient(app, raise_server_exceptions=False) as client:
        signed_in_staff(client, "root@brand.example", secret)
        for route in _routes(app):
            real = {**rows, "action": next((a for p, a in ACTIONS.items() if route.path.startswith(p)), "")}
            sent, failed = server_errors(
                client, route, real, extra_query=UNDECLARED_QUERY.get(route.path, [])
            )
            tried += sent
            failures += failed
            if not route.path.startswith(SIGNING_IN):  # still signed in: the next route is tried for real
                assert client.get("/portal/orders", follow_redirects=False).status_code == 200, route.path
    assert tried > 500 and failures == [], failures
