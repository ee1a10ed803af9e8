"""The activation's car steps through the pages: the model's services for the order's country,
activated once with their periods; the car linked as primary user at once with a VIN, or when the
order system sends the VIN later (once, with one email)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from notifications.models import DevMailboxMessage, OutboxMessage
from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from tests.conftest import Database
from tests.helpers import (
    csrf,
    id_form,
    invite_through_api,
    path_of,
    run_jobs,
    services_step,
    verify_phone_step,
)
from vehicles.models import OrderEvent, Vehicle, VehicleRole, VehicleService, VehicleUser
from vehicles.subscriptions import add_months

VIN = "YV1SW61R021234561"
CORRECTED_VIN = "YV1SW61R021234562"
FERRY = {
    "code": "ferry_mode",
    "name": {"en": "Ferry mode", "sv": "Färjeläge"},
    "description": {"en": "A quiet alarm on board.", "sv": "Ett tyst larm ombord."},
    "works_without_login": True,
    "remote_function": False,
    "included_months": 5,
}
MODEL = {
    "name": "Nordlicht X1",
    "model_year": 2028,
    "powertrain": "ICE",  # no charging step: the vehicle link ends the flow
    "requires_security_pin": False,
    "offers_data_pass": False,
    # Different services per country: the Swedish order sees only the Swedish ones.
    "services": {"SE": ["navigation", "remote_climate", FERRY], "DE": ["trip_log", "voice_assistant"]},
}


def _to_services_step(
    client: TestClient, db: Database, settings: Settings, api_headers: dict[str, str], **order: Any
) -> None:
    """A buyer of an X1 through the ID and phone steps; the steps another page set owns (terms, billing)
    recorded as done in the database."""
    answer = client.put("/api/v1/models/X1", json=MODEL, headers=api_headers)
    assert answer.status_code in (200, 201), answer.text
    client.get(
        path_of(invite_through_api(client, db.factory, settings, api_headers, model_code="X1", **order))
    )
    assert client.post("/activate/id", data=id_form(client), follow_redirects=False).status_code == 303
    assert verify_phone_step(client, db.factory).headers["location"] == "/activate/terms"
    with db.factory() as session:
        now = utcnow()
        session.execute(update(Invitation).values(terms_done_at=now, billing_done_at=now))
        session.commit()


def _stage(client: TestClient, api_headers: dict[str, str]) -> dict[str, Any]:
    answer = client.get("/api/v1/orders/SO-1", headers=api_headers)
    assert answer.status_code == 200, answer.text
    onboarding: dict[str, Any] = answer.json()["onboarding"]
    return onboarding


def _links(db: Database) -> list[tuple[str, str | None]]:
    with db.factory() as session:
        return [
            (role, vin)
            for role, vin in session.execute(
                select(VehicleUser.role, Vehicle.vin).join(Vehicle, Vehicle.id == VehicleUser.vehicle_id)
            )
        ]


def _count(db: Database, what: Any, *where: Any) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count()).select_from(what).where(*where)) or 0


def test_the_services_are_the_models_for_the_orders_country_with_their_periods(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers)
    page = client.get("/activate/services")
    assert page.status_code == 200, page.text
    # In the invitation's language (Swedish), exactly the Swedish offer.
    for name in ("Onlinenavigering", "Fjärrstyrd klimatanläggning", "Färjeläge", "Ett tyst larm ombord."):
        assert name in page.text
    for name in ("Körjournal", "Röstassistent", "Online navigation", "Ferry mode"):
        assert name not in page.text
    assert page.text.count('class="badge"') == 3  # two without login, one remote function
    assert page.text.count("<h2>") == 3

    answer = services_step(client)
    assert (answer.status_code, answer.headers["location"]) == (303, "/activate/vehicle")
    today = utcnow().date()
    with db.factory() as session:
        rows = session.execute(
            select(VehicleService.service_code, VehicleService.starts_on, VehicleService.ends_on).order_by(
                VehicleService.service_code
            )
        ).all()
        assert [tuple(row) for row in rows] == [
            ("ferry_mode", today, add_months(today, 5)),
            ("navigation", today, add_months(today, 36)),
            ("remote_climate", today, add_months(today, 36)),
        ]
        assert session.scalars(
            select(OrderEvent.detail).where(OrderEvent.kind == "services_activated")
        ).all() == ["ferry_mode, navigation, remote_climate"]
    assert _stage(client, api_headers)["stage"] == "services_active"


def test_with_a_vin_the_car_is_linked_at_once(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers, vin=VIN)
    services_step(client)
    answer = client.get("/activate/vehicle", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/activate/done")
    assert _links(db) == [(VehicleRole.PRIMARY, VIN)]
    onboarding = _stage(client, api_headers)
    assert onboarding["stage"] == "completed" and onboarding["vehicle_linked_at"] is not None
    done = client.get("/activate/done")
    assert done.status_code == 200
    # Without a login in the car: the anonymous services of this model and country, by name.
    assert "Onlinenavigering, Färjeläge" in done.text or "Färjeläge, Onlinenavigering" in done.text
    assert 'href="/vehicles"' in done.text
    assert _count(db, OutboxMessage, OutboxMessage.purpose == "vehicle_linked") == 0


def test_without_a_vin_the_link_follows_the_vin_update_once_with_one_email(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers)
    services_step(client)
    page = client.get("/activate/vehicle", follow_redirects=False)
    assert page.status_code == 200
    assert "automatiskt" in page.text or "automatically" in page.text
    answer = client.post("/activate/vehicle", data=csrf(client), follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/activate/done")
    assert _links(db) == []
    onboarding = _stage(client, api_headers)
    assert onboarding["stage"] == "completed" and onboarding["vehicle_linked_at"] is None

    answer = client.put("/api/v1/orders/SO-1/vin", json={"vin": VIN}, headers=api_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["onboarding"]["vehicle_linked_at"] is not None
    assert _links(db) == [(VehicleRole.PRIMARY, VIN)]
    # Again, and corrected: the car keeps its one link and the buyer their one email.
    assert client.put("/api/v1/orders/SO-1/vin", json={"vin": VIN}, headers=api_headers).status_code == 200
    assert (
        client.put("/api/v1/orders/SO-1/vin", json={"vin": CORRECTED_VIN}, headers=api_headers).status_code
        == 200
    )
    assert _links(db) == [(VehicleRole.PRIMARY, CORRECTED_VIN)]
    assert _count(db, OutboxMessage, OutboxMessage.purpose == "vehicle_linked") == 1
    assert _count(db, OrderEvent, OrderEvent.kind == "vehicle_linked") == 1
    run_jobs(db.factory, settings, utcnow() + timedelta(minutes=1))
    with db.factory() as session:
        [body] = session.scalars(
            select(DevMailboxMessage.text_body).where(
                DevMailboxMessage.recipient == "astrid@example.com", DevMailboxMessage.text_body.contains(VIN)
            )
        ).all()
    assert "http://testserver/vehicles" in body and "Nordlicht X1" in body


def test_the_order_update_that_brings_the_vin_links_too(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers)
    services_step(client)
    client.post("/activate/vehicle", data=csrf(client), follow_redirects=False)
    order = client.get("/api/v1/orders/SO-1", headers=api_headers).json()
    body = {k: order[k] for k in ("dealer_code", "model_code", "buyer_first_name", "buyer_last_name")}
    body |= {
        k: order[k] for k in ("buyer_email", "buyer_phone", "country", "language", "planned_delivery_date")
    }
    answer = client.put("/api/v1/orders/SO-1", json={**body, "vin": VIN}, headers=api_headers)
    assert answer.status_code == 200, answer.text
    assert _links(db) == [(VehicleRole.PRIMARY, VIN)]
    assert _count(db, OutboxMessage, OutboxMessage.purpose == "vehicle_linked") == 1


def test_a_model_without_services_in_the_country_says_so_and_goes_on(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers)
    with db.factory() as session:
        from vehicles.models import VehicleModel

        model = session.get(VehicleModel, "X1")
        assert model is not None
        model.services = {"DE": model.services["DE"]}
        session.commit()
    page = client.get("/activate/services")
    assert page.status_code == 200 and "<h2>" not in page.text.split("<h1>", 1)[1]
    answer = client.post("/activate/services", data=csrf(client), follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/activate/vehicle")
    assert _count(db, VehicleService) == 0
    assert _count(db, Vehicle) == 1  # made for the VIN's link


def test_two_tabs_submitting_the_services_at_once_activate_one_set(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_services_step(client, db, settings, api_headers)
    form = {**csrf(client), "confirm": "yes"}
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def submit() -> None:
        barrier.wait(timeout=10)
        statuses.append(client.post("/activate/services", data=form, follow_redirects=False).status_code)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [303, 303]
    assert _count(db, VehicleService) == 3
    assert _count(db, Vehicle) == 1
    assert _count(db, OrderEvent, OrderEvent.kind == "services_activated") == 1
