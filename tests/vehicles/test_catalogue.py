"""The connected-services catalogue (issue 12, item 1): a model's services per country, set through
``PUT /api/v1/models/{code}`` as standard codes or whole service objects, validated field by field."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Database
from vehicles.catalogue import STANDARD_SERVICES, services_for
from vehicles.models import VehicleModel

OWN_SERVICE = {
    "code": "battery_care",
    "name": {"en": "Battery care", "sv": "Batterivård"},
    "description": {"en": "Battery reports.", "sv": "Batterirapporter."},
    "works_without_login": False,
    "remote_function": False,
    "included_months": 60,
}


def _model(**services: list[Any]) -> dict[str, Any]:
    return {
        "name": "Nordlicht E50",
        "model_year": 2027,
        "powertrain": "BEV",
        "requires_security_pin": True,
        "offers_data_pass": False,
        "services": services,
    }


def test_a_model_offers_standard_and_own_services_per_country(
    db: Database, client: TestClient, api_headers: dict[str, str]
) -> None:
    body = _model(se=["remote_lock", OWN_SERVICE, "navigation"], DE=["navigation"])
    response = client.put("/api/v1/models/E50", json=body, headers=api_headers)
    assert response.status_code == 201, response.text
    shown = response.json()["services"]
    assert [offer["code"] for offer in shown["SE"]] == ["battery_care", "navigation", "remote_lock"]
    assert [offer["code"] for offer in shown["DE"]] == ["navigation"]
    remote_lock = next(offer for offer in shown["SE"] if offer["code"] == "remote_lock")
    assert remote_lock["remote_function"] is True and remote_lock["works_without_login"] is False
    assert remote_lock["name"]["sv"] == STANDARD_SERVICES["remote_lock"].name["sv"]

    with db.factory() as session:
        model = session.get(VehicleModel, "E50")
        assert model is not None
        swedish = services_for(model.services, "SE")
        assert [offer.code for offer in swedish] == ["battery_care", "navigation", "remote_lock"]
        own = swedish[0]
        assert own.included_months == 60
        # Texts per language, English where a language is missing.
        assert own.text("name", "sv") == "Batterivård" and own.text("name", "de") == "Battery care"
        assert services_for(model.services, "NO") == []


def test_bad_services_are_named_field_by_field_and_nothing_is_stored(
    db: Database, client: TestClient, api_headers: dict[str, str]
) -> None:
    bad_service = {
        **OWN_SERVICE,
        "name": {"sv": "Bara svenska", "fr": "Non"},
        "included_months": 0,
    }
    body = _model(SE=["teleportation", bad_service], XX=["navigation"])
    response = client.put("/api/v1/models/E50", json=body, headers=api_headers)
    assert response.status_code == 422, response.text
    fields = {error["field"] for error in response.json()["errors"]}
    assert {
        "services.SE[0]",
        "services.SE[1].name.fr",
        "services.SE[1].name.en",
        "services.XX",
    } <= fields, fields
    assert "navigation" in next(
        e["message"] for e in response.json()["errors"] if e["field"] == "services.SE[0]"
    )
    assert "services.SE[1].included_months" in fields
    unsafe = client.put(
        "/api/v1/models/E50",
        json=_model(SE=[{**OWN_SERVICE, "name": {"en": "Bad\u0000name"}, "colour": "red"}]),
        headers=api_headers,
    )
    assert unsafe.status_code == 422
    assert {e["field"] for e in unsafe.json()["errors"]} == {
        "services.SE[0].name.en",
        "services.SE[0].colour",
    }
    twice = client.put(
        "/api/v1/models/E50",
        json=_model(SE=[OWN_SERVICE, {**OWN_SERVICE, "included_months": 12}]),
        headers=api_headers,
    )
    assert twice.status_code == 422
    assert [e["field"] for e in twice.json()["errors"]] == ["services.SE[1].code"]
    with db.factory() as session:
        assert session.scalars(select(VehicleModel).where(VehicleModel.code == "E50")).first() is None


def test_models_stored_with_codes_only_still_read_from_the_standard_catalogue() -> None:
    offers = services_for({"SE": ["navigation", "no_longer_offered"]}, "SE")
    assert [offer.code for offer in offers] == ["navigation"]
    assert offers[0].works_without_login is True
