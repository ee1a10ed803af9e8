"""The portal's audit log: each entry names the staff member and carries the dealer and market of
what was done; a dealer's staff see their dealer's entries only, a market's its country's (its
dealers' staff's own entries included), platform
admins all (the IDs' security events too); filters by kind, who and day; bad filters name the field."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.helpers import csrf
from tests.portal.portal_support import add_orders, make_staff, signed_in_staff


def _kinds(html: str) -> list[str]:
    return re.findall(r'<tr data-kind="(\w+)">', html)


def test_entries_are_scoped_and_filtered(db: Database, settings: Settings, reference: None) -> None:
    add_orders(db.factory, settings, "SE", 1, dealer="SE-01", country="SE")
    add_orders(db.factory, settings, "US", 1, dealer="US-01", country="US")
    _a, se_secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    _b, us_secret = make_staff(
        db.factory, "market@us.example", "market_agent", country="US", enrolled_with=settings
    )
    _c, root_secret = make_staff(db.factory, "root@brand.example", "platform_admin", enrolled_with=settings)
    _d, us_dealer_secret = make_staff(
        db.factory, "agent@us01.example", "dealer_agent", dealer="US-01", enrolled_with=settings
    )
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as se, TestClient(app) as us, TestClient(app) as root, TestClient(app) as us_dealer:
        signed_in_staff(us_dealer, "agent@us01.example", us_dealer_secret)
        signed_in_staff(se, "agent@se01.example", se_secret)
        signed_in_staff(us, "market@us.example", us_secret)
        signed_in_staff(root, "root@brand.example", root_secret)
        assert (
            se.post(
                "/portal/orders/SE-0000/cancel", data={**csrf(se), "reason": "Buyer withdrew"}
            ).status_code
            == 200
        )
        assert (
            us.post(
                "/portal/orders/US-0000/cancel", data={**csrf(us), "reason": "Duplicate order"}
            ).status_code
            == 200
        )

        mine = se.get("/portal/audit").text
        assert (
            "staff_cancelled_order" in _kinds(mine)
            and "Buyer withdrew" in mine
            and "Duplicate order" not in mine
        )
        theirs = us.get("/portal/audit").text
        assert "Duplicate order" in theirs and "Buyer withdrew" not in theirs
        # A dealer's staff belong to its market: their own entries (signing in) are the market's too.
        signed_in = {"kind": "staff_signed_in", "who": "agent@us01"}
        assert _kinds(us.get("/portal/audit", params=signed_in).text) == ["staff_signed_in"]
        assert _kinds(se.get("/portal/audit", params=signed_in).text) == []
        everything = root.get("/portal/audit", params={"kind": "staff_cancelled_order"}).text
        assert _kinds(everything) == ["staff_cancelled_order", "staff_cancelled_order"]
        by_who = root.get("/portal/audit", params={"kind": "staff_cancelled_order", "who": "market@us"}).text
        assert "Duplicate order" in by_who and "Buyer withdrew" not in by_who
        none_then = root.get("/portal/audit", params={"since": "2020-01-01", "until": "2020-01-02"}).text
        assert _kinds(none_then) == []
        bad = root.get("/portal/audit", params={"since": "soon", "kind": "drop table"})
        assert bad.status_code == 422 and 'id="since-error"' in bad.text and 'id="kind-error"' in bad.text
    with db.factory() as session:
        cancelled = session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "staff_cancelled_order")
        ).all()
        assert {(e.dealer_code, e.country) for e in cancelled} == {("SE-01", "SE"), ("US-01", "US")}
        assert all(e.staff_id is not None for e in cancelled)
