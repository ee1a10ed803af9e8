"""Activation statistics: the funnel counts every order that reached a step (its furthest stage or a
later one), only the staff member's own dealer's or market's orders, in the chosen period; the median
days from the invitation to active services; the step with the largest drop and the orders stuck
there longest; a server-side SVG chart beside the table; bad dates name the field."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.portal.portal_support import add_orders, make_staff, signed_in_staff
from vehicles.models import Order

# How many SE-01 orders stop at each stage: 10 invited only, 6 stop at opened, 1 at services_active.
PLAN = {"invited": 10, "opened": 6, "services_active": 1}


def test_funnel_median_and_stall(db: Database, settings: Settings, reference: None) -> None:
    numbers = add_orders(db.factory, settings, "SE", sum(PLAN.values()), dealer="SE-01", country="SE")
    add_orders(db.factory, settings, "US", 5, dealer="US-01", country="US")
    now = utcnow()
    with transaction(db.factory) as session:
        stages = [stage for stage, count in PLAN.items() for _ in range(count)]
        orders = {
            o.order_number: o for o in session.scalars(select(Order).where(Order.order_number.in_(numbers)))
        }
        for number, stage in zip(numbers, stages, strict=True):
            order = orders[number]
            order.onboarding_stage = stage
            order.created_at = now - timedelta(days=3)
            order.updated_at = now - timedelta(days=int(number[-2:]) % 7)
            if stage == "services_active":  # invited 4.5 days before its services became active
                session.add(
                    Invitation(
                        order_id=order.id,
                        email=order.buyer_email,
                        language="sv",
                        token_hash=f"{order.id:064d}",
                        created_at=now - timedelta(days=5),
                        sent_at=now - timedelta(days=5),
                        services_done_at=now - timedelta(hours=12),
                    )
                )
        # The US orders are another market's: never counted for a Swedish dealer.
        session.execute(update(Order).where(Order.country == "US").values(onboarding_stage="completed"))
    _id, secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        signed_in_staff(client, "agent@se01.example", secret)
        page = client.get("/portal/statistics")
        assert page.status_code == 200
        html = page.text
        assert re.search(r'<dd id="total">17</dd>', html)
        reached = dict(re.findall(r'<tr data-stage="(\w+)"><td>[^<]*</td><td>(\d+)</td>', html))
        assert reached["not_due"] == "17" and reached["invited"] == "17" and reached["opened"] == "7"
        assert reached["services_active"] == "1" and reached["completed"] == "0"
        assert 'data-stage="invited"' in re.search(r'<dd id="stall"[^>]*>', html).group(0)  # type: ignore[union-attr]
        assert '<dd id="median-days">4.5' in html and "(1 order)" in html  # one order measured: singular
        assert "10 orders go no further" in html  # 17 invited, 7 opened
        assert len(re.findall(r'<rect class="bar"', html)) == len(reached)
        stuck = re.findall(r'<li><a href="/portal/orders/(SE-\d+)"', html)
        assert len(stuck) == 10 and set(stuck) <= set(numbers[:10])
        # A period without these orders counts none; a bad date is named.
        earlier = client.get("/portal/statistics", params={"since": "2020-01-01", "until": "2020-03-01"})
        assert '<dd id="total">0</dd>' in earlier.text
        bad = client.get("/portal/statistics", params={"since": "yesterday"})
        assert bad.status_code == 422 and 'id="since-error"' in bad.text
