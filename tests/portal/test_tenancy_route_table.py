"""Tenancy, from the application's route table: every /portal route but the login and invitation
pages requires a signed-in staff member (a new route without ``staff_signed_in`` fails here), and every route that names a row answers another dealer's or
market's staff 404, the same as for a row that does not exist, while its own staff see it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.activation.support_requests import record_request
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from onboarding.ops.app import create_app
from onboarding.portal import imports
from onboarding.portal.dependencies import staff_signed_in
from onboarding.portal.models import StaffMember
from onboarding.portal.pages import ACTION_DONE, REQUEST_DONE, STAFF_ACTIONS
from tests.conftest import NOW, Database
from tests.helpers import app_routes, csrf
from tests.portal.portal_support import add_dealer, add_orders, make_staff, signed_in_staff
from vehicles.models import Dealer, Order

PUBLIC = {
    "/portal/login",
    "/portal/login/enrol",
    "/portal/login/verify",
    "/portal/logout",
    "/portal/invite/{token}",
}


def _dependencies(route: APIRoute) -> set[Any]:
    found: set[Any] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        found.add(dependant.call)
        stack.extend(dependant.dependencies)
    return found


def _portal_routes(settings: Settings, db: Database) -> list[APIRoute]:
    app = create_app(settings, session_factory=db.factory)
    return [route for path, route in app_routes(app.routes) if path.startswith("/portal")]


def test_every_portal_route_requires_a_staff_member(settings: Settings, db: Database) -> None:
    routes = _portal_routes(settings, db)
    assert {r.path for r in routes} >= {"/portal/orders", "/portal/orders/{order_number}"}
    unguarded = [r.path for r in routes if r.path not in PUBLIC and staff_signed_in not in _dependencies(r)]
    assert unguarded == []


@pytest.fixture
def tenants(db: Database, settings: Settings, reference: None) -> dict[str, Any]:
    """Per tenant, an order and a support request about it (the keys a portal path names)."""
    add_dealer(db.factory, "SE-02", "SE")
    rows: dict[str, dict[str, str]] = {}
    for name, prefix, dealer, country in [
        ("own", "OWN", "SE-01", "SE"),
        ("same_market", "NEXT", "SE-02", "SE"),
        ("other_market", "FAR", "US-01", "US"),
    ]:
        number = add_orders(db.factory, settings, prefix, 1, dealer=dealer, country=country)[0]
        with transaction(db.factory) as session:
            order = session.scalars(select(Order).where(Order.order_number == number)).one()
            request = record_request(
                session, settings, kind="no_sms", now=NOW, order=order, dealer=session.get(Dealer, dealer)
            )
            rows[name] = {"order_number": number, "request_id": str(request.id)}
        # A dealer agent of the tenant: the row the staff pages name.
        agent_id, _secret = make_staff(
            db.factory, f"row-agent@{prefix.lower()}.example", "dealer_agent", dealer=dealer
        )
        rows[name]["staff_id"] = str(agent_id)
        # An import that agent started (only its starter and platform admins see it).
        with transaction(db.factory) as session:
            starter = session.get(StaffMember, agent_id)
            assert starter is not None
            job = imports.create(
                session, starter, file_name="orders.csv", stored_path="", dry_run=True, now=NOW
            )
            rows[name]["import_id"] = str(job.id)
    staff = {
        "dealer_agent": make_staff(
            db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
        ),
        "market_agent": make_staff(
            db.factory, "market@se.example", "market_agent", country="SE", enrolled_with=settings
        ),
        "other_dealer": make_staff(
            db.factory, "agent@se02.example", "dealer_admin", dealer="SE-02", enrolled_with=settings
        ),
        "other_market": make_staff(
            db.factory, "market@us.example", "market_agent", country="US", enrolled_with=settings
        ),
        "platform": make_staff(db.factory, "admin@brand.example", "platform_admin", enrolled_with=settings),
    }
    return {"rows": rows, "staff": staff}


ACTION_KINDS = (
    "staff_resent_invitation",
    "staff_corrected_email",
    "staff_corrected_phone",
    "staff_cancelled_order",
    "staff_took_request",
    "staff_noted_request",
    "staff_finished_request",
    "staff_deactivated",
    "staff_reinvited",
    "staff_linked_used_car",
)
MISSING = {
    "order_number": "NO-SUCH-ORDER",
    "request_id": "999999",
    "staff_id": "999999",
    "import_id": "999999",
}

# Who sees which tenant's rows: True means 200, False means 404 (as for a row that does not exist).
SEES = {
    "dealer_agent": {"own": True, "same_market": False, "other_market": False},
    "other_dealer": {"own": False, "same_market": True, "other_market": False},
    "market_agent": {"own": True, "same_market": True, "other_market": False},
    "other_market": {"own": False, "same_market": False, "other_market": True},
    "platform": {"own": True, "same_market": True, "other_market": True},
}
EMAILS = {
    "dealer_agent": "agent@se01.example",
    "market_agent": "market@se.example",
    "other_dealer": "agent@se02.example",
    "other_market": "market@us.example",
    "platform": "admin@brand.example",
}


def _sees(who: str, name: str, path: str) -> bool:
    """Whether ``who`` may see the row of tenant ``name`` that ``path`` names: an import is its
    starter's (and platform admins'), everything else the tenant's."""
    if "{import_id}" in path:
        return who == "platform"
    return SEES[who][name]


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _actions(path: str) -> list[str]:
    """The actions a POST route with ``{action}`` takes (its page's own table)."""
    if "{action}" not in path:
        return [""]
    tables = {
        "/portal/orders/": ACTION_DONE,
        "/portal/requests/": REQUEST_DONE,
        "/portal/staff/": STAFF_ACTIONS,
    }
    (table,) = [actions for prefix, actions in tables.items() if path.startswith(prefix)]
    return list(table)


@pytest.mark.parametrize("who", sorted(SEES))
def test_rows_of_another_tenant_are_not_found(
    db: Database, settings: Settings, tenants: dict[str, Any], who: str
) -> None:
    routes = [r for r in _portal_routes(settings, db) if "{" in r.path and r.path not in PUBLIC]
    gets = [r for r in routes if "GET" in (r.methods or ())]
    posts = [r for r in routes if "POST" in (r.methods or ())]
    assert {r.path for r in gets} >= {"/portal/orders/{order_number}", "/portal/requests/{request_id}"}
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        signed_in_staff(client, EMAILS[who], tenants["staff"][who][1])
        for route in gets:
            missing_path = _fill(route.path, MISSING)
            missing = client.get(missing_path)
            assert missing.status_code == 404, route.path
            for name, keys in tenants["rows"].items():
                path = _fill(route.path, keys)
                answer = client.get(path)
                expected = 200 if _sees(who, name, route.path) else 404
                assert answer.status_code == expected, (route.path, who, name)
                if expected == 404:  # exactly as if it did not exist
                    assert answer.text.replace(path, missing_path) == missing.text
        # Every action on another tenant's row is a 404 too, and changes nothing.
        for route in posts:
            for name, keys in tenants["rows"].items():
                if _sees(who, name, route.path):
                    continue
                for action in _actions(route.path):
                    path = _fill(route.path, {**keys, "action": action})
                    data = {
                        **csrf(client),
                        "reason": "checking tenancy",
                        "email": "x@example.com",
                        "note": "x",
                    }
                    # A page for some roles refuses the others first (403); the rest do not find the row.
                    refusals = (403, 404) if _required_roles(route) else (404,)
                    assert client.post(path, data=data).status_code in refusals, (path, who)
        with db.factory() as session:
            changed = select(func.count()).select_from(AuditEvent).where(AuditEvent.kind.in_(ACTION_KINDS))
            assert session.scalar(changed) == 0
        listed = client.get("/portal/orders").text
        inbox = client.get("/portal/requests").text
        for name, keys in tenants["rows"].items():
            assert (keys["order_number"] in listed) is SEES[who][name], (who, name)
            assert (f'href="/portal/requests/{keys["request_id"]}"' in inbox) is SEES[who][name], (who, name)


def _required_roles(route: APIRoute) -> tuple[str, ...] | None:
    for call in _dependencies(route):
        roles = getattr(call, "required_roles", None)
        if roles is not None:
            return tuple(roles)
    return None


def test_pages_for_some_roles_refuse_the_others(
    db: Database, settings: Settings, tenants: dict[str, Any]
) -> None:
    """Every route that names its roles answers anyone else 403 (a dealer agent, who has the fewest
    rights, is tried on each), before it reads or changes anything."""
    limited = [(r, roles) for r in _portal_routes(settings, db) if (roles := _required_roles(r)) is not None]
    assert {r.path for r, _roles in limited} >= {"/portal/staff", "/portal/staff/{staff_id}/{action}"}
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        signed_in_staff(client, EMAILS["dealer_agent"], tenants["staff"]["dealer_agent"][1])
        for route, roles in limited:
            assert "dealer_agent" not in roles
            for action in _actions(route.path):
                path = _fill(
                    route.path, {"staff_id": str(tenants["staff"]["other_dealer"][0]), "action": action}
                )
                for method in sorted(route.methods or ()):
                    if method == "HEAD":
                        continue
                    answer = client.request(method, path, data=csrf(client) if method == "POST" else None)
                    assert answer.status_code == 403, (method, path)
    with db.factory() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.kind.in_(["staff_deactivated", "staff_reinvited"]))
            )
            == 0
        )
