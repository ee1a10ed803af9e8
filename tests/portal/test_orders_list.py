"""The portal's order list: keyset pages walked to the end (none missed or repeated, even with
orders arriving between pages), filters, search, field-named errors for bad filters, and the stored
onboarding stage following the buyer step by step (the same stage as the orders API's funnel)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.helpers import (
    PIN,
    id_form,
    invite_through_api,
    path_of,
    set_pin_step,
    terms_step,
    verify_phone_step,
)
from tests.portal.portal_support import add_orders, make_staff, order_numbers, signed_in_staff
from vehicles.models import Order


def _next_link(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_pages_filters_and_search(db: Database, settings: Settings, reference: None) -> None:
    numbers = add_orders(db.factory, settings, "SE", 120, dealer="SE-01", country="SE")
    add_orders(db.factory, settings, "US", 3, dealer="US-01", country="US")
    _id, secret = make_staff(
        db.factory, "market@se.example", "market_agent", country="SE", enrolled_with=settings
    )
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        signed_in_staff(client, "market@se.example", secret)
        seen: list[str] = []
        url: str | None = "/portal/orders"
        pages = 0
        while url:
            page = client.get(url)
            assert page.status_code == 200
            seen += order_numbers(page.text)
            url = _next_link(page.text)
            pages += 1
            if pages == 1:  # an order arriving while the staff member pages: it is on page one, not a shift
                add_orders(db.factory, settings, "LATE", 1, dealer="SE-01", country="SE")
        assert pages == 3 and seen == sorted(numbers, reverse=True)  # newest first, none twice

        def listed(**params: str) -> list[str]:
            answer = client.get("/portal/orders", params=params)
            assert answer.status_code == 200, answer.text
            return order_numbers(answer.text)

        assert listed(q="SE-0007") == ["SE-0007"]
        assert listed(q="se7@example.com") == ["SE-0007"]
        assert listed(q="Buyer7") == ["SE-0007"]
        assert listed(q="astrid buyer7") == ["SE-0007"]
        assert listed(q="US-0001") == []  # another market's order is not found by search either
        # Delivery dates run 2026-06-01 + (n % 30) days: the 1st and 2nd of June are n % 30 in (0, 1).
        window = listed(delivery_from="2026-06-01", delivery_to="2026-06-02")
        assert sorted(window) == sorted(
            ["LATE-0000", *(n for i, n in enumerate(numbers) if i % 30 in (0, 1))]
        )
        assert listed(status="cancelled") == []
        assert len(listed(status="ordered")) == 50
        assert listed(stage="completed") == []
        bad = client.get("/portal/orders", params={"stage": "flying", "delivery_from": "1 June"})
        assert bad.status_code == 422
        assert 'id="stage-error"' in bad.text and 'id="delivery_from-error"' in bad.text


def _funnel_stage(client: TestClient, api_headers: dict[str, str]) -> str:
    answer = client.get("/api/v1/orders/SO-1", headers=api_headers)
    assert answer.status_code == 200
    stage: str = answer.json()["onboarding"]["stage"]
    return "not_due" if stage == "due" else stage


def _stored_stage(db: Database) -> str:
    with db.factory() as session:
        order = session.query(Order).filter(Order.order_number == "SO-1").one()
        return order.onboarding_stage


def test_stored_stage_follows_the_buyer(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers)
    stages = [_stored_stage(db)]
    assert stages[-1] == _funnel_stage(client, api_headers) == "invited"
    client.get(path_of(link))
    stages.append(_stored_stage(db))
    assert client.post("/activate/id", data=id_form(client), follow_redirects=False).status_code == 303
    stages.append(_stored_stage(db))
    verify_phone_step(client, db.factory)
    stages.append(_stored_stage(db))
    set_pin_step(client, PIN)
    stages.append(_stored_stage(db))
    terms_step(client)
    stages.append(_stored_stage(db))
    assert stages == ["invited", "opened", "id_created", "phone_verified", "pin_set", "terms_accepted"]
    assert stages[-1] == _funnel_stage(client, api_headers)

    _id, secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    staff = TestClient(client.app)
    signed_in_staff(staff, "agent@se01.example", secret)
    assert order_numbers(staff.get("/portal/orders", params={"stage": "terms_accepted"}).text) == ["SO-1"]
    assert order_numbers(staff.get("/portal/orders", params={"stage": "invited"}).text) == []
    page = staff.get("/portal/orders/SO-1")
    assert 'data-stage="terms_accepted"' in page.text
    for kind in ("invitation_opened", "id_created", "invitation"):
        assert f"<td>{kind}</td>" in page.text
