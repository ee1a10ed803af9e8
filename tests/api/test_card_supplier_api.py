"""The card supplier's endpoint (SPEC §3.6): ``PUT /api/v1/charging-cards/{id}/state`` with a key of
its own scope; keys of one scope cannot call the other's endpoints; a state the card cannot move to
is a 422 naming "state", and nothing changes."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.api.keys import CARD_SUPPLIER, create_api_key
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database
from tests.vehicles.charging.test_contracts_and_cards import _book, _car
from vehicles.charging.models import ChargingCard


def _supplier_headers(db: Database) -> dict[str, str]:
    with transaction(db.factory) as session:
        _key, plaintext = create_api_key(session, "card supplier", now=NOW, scope=CARD_SUPPLIER)
    return {"Authorization": f"Bearer {plaintext}"}


def _card(db: Database, settings: Settings) -> int:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    _book(db, settings, vehicle_id, primary_id, now=NOW - timedelta(days=1))
    with db.factory() as session:
        return int(session.scalars(select(ChargingCard.id)).one())


def _state(db: Database, card_id: int) -> str:
    with db.factory() as session:
        card = session.get(ChargingCard, card_id)
        assert card is not None
        return card.state


def test_the_supplier_reports_states_in_order(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    card_id = _card(db, settings)
    headers = _supplier_headers(db)
    for state in ("produced", "produced", "shipped", "delivered"):
        answer = client.put(f"/api/v1/charging-cards/{card_id}/state", json={"state": state}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == state and _state(db, card_id) == state
    missing = client.put("/api/v1/charging-cards/999999/state", json={"state": "produced"}, headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )


def test_bad_transitions_are_422_naming_the_state(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    card_id = _card(db, settings)
    headers = _supplier_headers(db)
    for bad in ("delivered", "blocked", "lost", "requested"):
        answer = client.put(f"/api/v1/charging-cards/{card_id}/state", json={"state": bad}, headers=headers)
        if bad == "requested":  # the card's current state: nothing to change
            assert answer.status_code == 200
            continue
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "state" in answer.text
        assert _state(db, card_id) == "requested"
    no_body = client.put(f"/api/v1/charging-cards/{card_id}/state", json={}, headers=headers)
    assert no_body.status_code == 422


def test_each_scope_is_refused_the_others_endpoints(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    card_id = _card(db, settings)
    order_system = client.put(
        f"/api/v1/charging-cards/{card_id}/state", json={"state": "produced"}, headers=api_headers
    )
    assert order_system.status_code == 403
    assert order_system.headers["content-type"].startswith("application/problem+json")
    assert _state(db, card_id) == "requested"
    supplier = _supplier_headers(db)
    for method, path in (("GET", "/api/v1/orders/SO-1"), ("PUT", "/api/v1/orders/SO-1/vin")):
        answer = client.request(method, path, headers=supplier, json={"vin": "YV1DZ8256C2271234"})
        assert answer.status_code == 403, (path, answer.text)
    assert client.get("/api/v1/orders/SO-1", headers=api_headers).status_code == 404
    unknown = client.put(
        f"/api/v1/charging-cards/{card_id}/state",
        json={"state": "produced"},
        headers={"Authorization": "Bearer x"},
    )
    assert unknown.status_code == 401
