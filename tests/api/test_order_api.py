"""The order-system and reference-data APIs: validation of every field, RFC 9457 problems, nothing
half-stored, API keys and market scopes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.api.keys import create_api_key
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from tests.conftest import NOW, Database
from tests.helpers import order_payload
from vehicles.models import Dealer, Order, OrderEvent, VehicleModel


def _orders(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count()).select_from(Order)) or 0


def _payload(**overrides: Any) -> dict[str, Any]:
    return order_payload((utcnow() + timedelta(days=30)).date(), **overrides)


BAD_VALUES = [
    ("vin", "YV1ZWA8UDL12345", "vin", "17 characters"),
    ("vin", "YV1ZWA8UOL1234567", "vin", "did you mean '0'"),
    ("vin", "YV1ZWA8UDL12345*7", "vin", "not allowed"),
    ("buyer_email", "astrid@", "buyer_email", "valid email"),
    ("buyer_email", "astrid example.com", "buyer_email", "valid email"),
    ("buyer_phone", "12", "buyer_phone", "phone"),
    ("buyer_phone", "+46 70 12", "buyer_phone", "phone"),
    ("dealer_code", "NOPE", "dealer_code", "Unknown dealer"),
    ("model_code", "NOPE", "model_code", "Unknown model"),
    ("country", "XX", "country", "Unknown country"),
    ("language", "fr", "language", "Unsupported language"),
    ("planned_delivery_date", "2026-02-30", "planned_delivery_date", ""),
    ("planned_delivery_date", "1999-01-01", "planned_delivery_date", "plausible"),
    ("buyer_first_name", "", "buyer_first_name", "empty"),
    ("buyer_last_name", "<script>", "buyer_last_name", "not used in names"),
]


@pytest.mark.parametrize(("key", "value", "field", "words"), BAD_VALUES)
def test_each_bad_field_is_named_and_nothing_is_stored(
    db: Database,
    reference: None,
    client: TestClient,
    api_headers: dict[str, str],
    key: str,
    value: str,
    field: str,
    words: str,
) -> None:
    response = client.put("/api/v1/orders/SO-1", json=_payload(**{key: value}), headers=api_headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422 and body["title"] and body["type"]
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert field in fields, body
    assert words.lower() in fields[field].lower()
    assert _orders(db) == 0


def test_all_bad_fields_are_reported_at_once(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/orders/SO-1",
        json=_payload(buyer_email="x@", buyer_phone="1", country="XX", dealer_code="NOPE"),
        headers=api_headers,
    )
    assert {e["field"] for e in response.json()["errors"]} >= {
        "buyer_email",
        "buyer_phone",
        "country",
        "dealer_code",
    }


def test_vin_check_digit_blocks_in_north_america_and_is_a_hint_in_europe(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    wrong_check_digit = "1M8GDM9A1KP042788"  # the textbook VIN has X in position 9
    us = client.put(
        "/api/v1/orders/US-1",
        json=_payload(
            vin=wrong_check_digit, country="US", dealer_code="US-01", buyer_phone="+1 617 555 0100"
        ),
        headers=api_headers,
    )
    assert us.status_code == 422
    [error] = us.json()["errors"]
    assert error["field"] == "vin" and "'X'" in error["message"]
    se = client.put("/api/v1/orders/SE-1", json=_payload(vin=wrong_check_digit), headers=api_headers)
    assert se.status_code == 201
    assert any("check" in w.lower() for w in se.json()["warnings"])
    good = client.put(
        "/api/v1/orders/US-2",
        json=_payload(
            vin="1M8GDM9AXKP042788",
            country="US",
            dealer_code="US-01",
            buyer_phone="+1 617 555 0100",
            buyer_email="us@example.com",
        ),
        headers=api_headers,
    )
    assert good.status_code == 201, good.text


def test_vin_belongs_to_one_order(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    vin = "YV1ZWA8UDL1234567"
    assert client.put("/api/v1/orders/A", json=_payload(vin=vin), headers=api_headers).status_code == 201
    clash = client.put("/api/v1/orders/B", json=_payload(vin=vin.lower()), headers=api_headers)
    assert clash.status_code == 422 and "order A" in clash.json()["errors"][0]["message"]


def test_upsert_is_idempotent_normalises_and_keeps_a_timeline(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    payload = _payload(buyer_email="Astrid@Example.COM", buyer_phone="070-123 45 67", vin="yv1zwa8udl1234567")
    first = client.put("/api/v1/orders/SO-1", json=payload, headers=api_headers)
    again = client.put("/api/v1/orders/SO-1", json=payload, headers=api_headers)
    assert (first.status_code, again.status_code) == (201, 200)
    body = again.json()
    assert body["buyer_phone"] == "+46701234567"
    assert body["buyer_email"] == "Astrid@example.com"
    assert body["vin"] == "YV1ZWA8UDL1234567"
    nested = {k: v for k, v in payload.items() if not k.startswith("buyer_")}
    nested["buyer"] = {
        "first_name": "Astrid",
        "last_name": "Berg",
        "email": "astrid@example.com",
        "phone": "+46701234567",
    }
    changed = client.put("/api/v1/orders/SO-1", json=nested, headers=api_headers)
    assert changed.status_code == 200 and changed.json()["buyer_last_name"] == "Berg"
    assert _orders(db) == 1
    with db.factory() as session:
        kinds = [e.kind for e in session.scalars(select(OrderEvent).order_by(OrderEvent.id))]
    assert kinds == ["created", "updated"]


def test_status_and_vin_updates(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.put("/api/v1/orders/SO-1", json=_payload(), headers=api_headers)
    status = client.put(
        "/api/v1/orders/SO-1/status", json={"production_status": "in_production"}, headers=api_headers
    )
    assert status.status_code == 200 and status.json()["production_status"] == "in_production"
    bad = client.put("/api/v1/orders/SO-1/status", json={"production_status": "flying"}, headers=api_headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "production_status"
    vin = client.put("/api/v1/orders/SO-1/vin", json={"vin": "YV1ZWA8UQL1234567"}, headers=api_headers)
    assert vin.status_code == 422 and "did you mean '0'" in vin.json()["errors"][0]["message"]
    vin = client.put("/api/v1/orders/SO-1/vin", json={"vin": "YV1ZWA8UDL1234567"}, headers=api_headers)
    assert vin.status_code == 200 and vin.json()["vin"] == "YV1ZWA8UDL1234567"
    assert client.get("/api/v1/orders/NOPE", headers=api_headers).status_code == 404


def test_reference_data_api(db: Database, client: TestClient, api_headers: dict[str, str]) -> None:
    dealer = {
        "name": "Centre Oslo",
        "country": "no",
        "email": "oslo@dealer.example",
        "phone": "+47 22 12 34 56",
        "language": "no",
    }
    response = client.put("/api/v1/dealers/NO-1", json=dealer, headers=api_headers)
    assert response.status_code == 201, response.text
    assert response.json()["country"] == "NO" and response.json()["language"] == "nb"
    assert client.put("/api/v1/dealers/NO-1", json=dealer, headers=api_headers).status_code == 200
    bad = client.put("/api/v1/dealers/NO-2", json={**dealer, "email": "nope"}, headers=api_headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "email"
    model = {
        "name": "E40",
        "model_year": 2027,
        "powertrain": "BEV",
        "requires_security_pin": True,
        "offers_data_pass": True,
        "services": {"no": ["navigation"]},
    }
    response = client.put("/api/v1/models/E40", json=model, headers=api_headers)
    assert response.status_code == 201
    assert [offer["code"] for offer in response.json()["services"]["NO"]] == ["navigation"]
    assert response.json()["services"]["NO"][0]["works_without_login"] is True
    bad = client.put("/api/v1/models/E41", json={**model, "powertrain": "STEAM"}, headers=api_headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "powertrain"
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Dealer)) == 1
        assert session.scalar(select(func.count()).select_from(VehicleModel)) == 1


def test_api_needs_a_valid_key(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    assert client.get("/api/v1/orders/SO-1").status_code == 401
    forged = api_headers["Authorization"][:-2] + "xx"
    response = client.put("/api/v1/orders/SO-1", json=_payload(), headers={"Authorization": forged})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert _orders(db) == 0


def test_a_market_scoped_key_cannot_see_or_touch_another_market(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    with transaction(db.factory) as session:
        _key, us_only = create_api_key(session, "US order system", now=NOW, countries=["us"])
    us = {"Authorization": f"Bearer {us_only}"}
    assert client.put("/api/v1/orders/SE-1", json=_payload(), headers=api_headers).status_code == 201
    assert client.get("/api/v1/orders/SE-1", headers=us).status_code == 404
    assert (
        client.put(
            "/api/v1/orders/SE-1/status", json={"production_status": "cancelled"}, headers=us
        ).status_code
        == 404
    )
    assert client.put("/api/v1/orders/SE-1", json=_payload(), headers=us).status_code == 404
    assert client.put("/api/v1/orders/SE-2", json=_payload(), headers=us).status_code == 404
    dealer = {"name": "X", "country": "US", "email": "x@dealer.example", "language": "en"}
    assert client.put("/api/v1/dealers/US-9", json=dealer, headers=us).status_code == 403
    us_order = _payload(country="US", dealer_code="US-01", buyer_phone="+1 617 555 0100")
    assert client.put("/api/v1/orders/US-1", json=us_order, headers=us).status_code == 201
    assert client.get("/api/v1/orders/SE-1", headers=api_headers).json()["production_status"] == "ordered"


def test_openapi_is_published(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/orders/{order_number}" in spec["paths"]
    assert "/api/v1/dealers/{dealer_code}" in spec["paths"]


def test_a_status_changed_by_the_order_put_is_dated_on_the_timeline(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    """My vehicles' "track your car" dates each production status by the timeline's status events,
    whichever endpoint set it."""
    delivery = (utcnow() + timedelta(days=60)).date()
    assert (
        client.put("/api/v1/orders/SO-9", json=order_payload(delivery), headers=api_headers).status_code
        == 201
    )
    moved = order_payload(delivery, production_status="in_production")
    assert client.put("/api/v1/orders/SO-9", json=moved, headers=api_headers).status_code == 200
    with db.factory() as session:
        details = session.scalars(select(OrderEvent.detail).where(OrderEvent.kind == "status")).all()
    assert details == ["ordered -> in_production"]
