"""Pairing a car without an order on the web (SPEC §3.5): the car's code makes the signed-in ID the
primary user of a car without one (its vehicle made from the newest order with the VIN); a car with a
primary user, or without any order, becomes a support request; a wrong code is a field error, and
the form is rate limited."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.models import SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import log_in, make_account
from tests.conftest import NOW, Database
from tests.helpers import csrf, order_payload, put_order
from tests.vehicles.incar.incar_support import VIN, make_car
from vehicles import links
from vehicles.incar import clients, pairing
from vehicles.incar.models import PairingCode, VehicleClient
from vehicles.models import Vehicle, VehicleRole

pytestmark = pytest.mark.usefixtures("reference")


def _code(db: Database, settings: Settings, vin: str = VIN) -> str:
    with transaction(db.factory) as session:
        client = session.get(VehicleClient, clients.client_id_for(vin))
        if client is None:
            client, _secret = clients.provision(session, vin, now=utcnow())
        code, _ = pairing.new_code(session, settings, client, now=utcnow())
        return code


def _pair(client: TestClient, code: str) -> Any:
    return client.post("/vehicles/pair", data={**csrf(client), "code": code})


def _support_requests(db: Database) -> list[SupportRequest]:
    with db.factory() as session:
        return list(session.scalars(select(SupportRequest)))


def test_a_car_without_a_primary_user_gets_this_id(
    client: TestClient, db: Database, settings: Settings
) -> None:
    put_order(db.factory, settings, "PAIR-1", NOW, **order_payload(NOW.date() + timedelta(days=30), vin=VIN))
    make_account(db.factory, settings, NOW, email="owner@example.com")
    code = _code(db, settings)
    assert client.get("/vehicles/pair", follow_redirects=False).status_code == 303  # log in first
    log_in(client, "owner@example.com")
    assert client.get("/vehicles/pair").status_code == 200
    page = _pair(client, code[:4].lower() + "-" + code[4:])
    assert page.status_code == 200 and "primary user" in page.text
    with db.factory() as session:
        vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == VIN))
        assert vehicle is not None and vehicle.model_code == "E40"
        primary = links.primary_of(session, vehicle.id)
        assert primary is not None and primary.role == VehicleRole.PRIMARY
    again = _pair(client, code)  # a used code
    assert again.status_code == 422
    assert _support_requests(db) == []


def test_a_car_with_a_primary_user_goes_to_support(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    make_account(db.factory, settings, NOW, email="buyer@example.com")
    log_in(client, "buyer@example.com")
    page = _pair(client, _code(db, settings))
    assert page.status_code == 200 and "Support will check" in page.text
    [request] = _support_requests(db)
    assert request.kind == "vehicle_pairing" and request.contact_email == "buyer@example.com"
    assert request.country == "SE" and VIN in (request.message or "")
    with db.factory() as session:
        primary = links.primary_of(session, car.vehicle_id)
        assert primary is not None and primary.account_id == car.primary_id


def test_a_car_without_an_order_cannot_be_paired(
    client: TestClient, db: Database, settings: Settings
) -> None:
    make_account(db.factory, settings, NOW, email="owner@example.com")
    log_in(client, "owner@example.com")
    page = _pair(client, _code(db, settings))
    assert "Support will check" in page.text
    assert [r.kind for r in _support_requests(db)] == ["vehicle_pairing"]
    with db.factory() as session:
        assert session.scalar(select(Vehicle).where(Vehicle.vin == VIN)) is None


def test_wrong_codes_are_field_errors_and_rate_limited(
    client: TestClient, db: Database, settings: Settings
) -> None:
    make_account(db.factory, settings, NOW, email="owner@example.com")
    log_in(client, "owner@example.com")
    statuses = [_pair(client, "BCDFGHJK").status_code for _ in range(6)]
    assert statuses == [422] * 5 + [429]


def test_two_ids_entering_one_code_at_once_use_it_once(
    client: TestClient, db: Database, settings: Settings
) -> None:
    put_order(db.factory, settings, "PAIR-3", NOW, **order_payload(NOW.date() + timedelta(days=30), vin=VIN))
    code = _code(db, settings)
    browsers = []
    for email in ("owner@example.com", "other@example.com"):
        make_account(db.factory, settings, NOW, email=email)
        browser = TestClient(client.app)
        log_in(browser, email)
        browsers.append(browser)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def enter(browser: TestClient) -> None:
        barrier.wait(timeout=10)
        statuses.append(_pair(browser, code).status_code)

    threads = [threading.Thread(target=enter, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 422], statuses
    with db.factory() as session:
        used = session.scalars(select(PairingCode)).one()
        assert used.used_at is not None
    assert _support_requests(db) == []
