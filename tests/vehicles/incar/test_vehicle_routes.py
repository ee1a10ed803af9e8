"""The car's endpoints and the /device pages through the app: the PIN of a device login (204, 400 with
the tries left, 423 locked), services for a user and for the car alone, who is logged in, remote
functions under the same PIN lock, pairing codes, 401 problems with the RFC 6750 challenge, and the
approval pages (a stranger gets 403, audited)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from tests.account_support import log_in
from tests.conftest import Database
from tests.helpers import csrf
from tests.vehicles.incar.incar_support import (
    PIN,
    PRIMARY_EMAIL,
    SECONDARY_EMAIL,
    STRANGER_EMAIL,
    Car,
    car_tokens,
    make_car,
    start_login,
    user_tokens,
)
from vehicles.incar.models import DeviceAuthorization

pytestmark = pytest.mark.usefixtures("reference")


def _basic(car: Car) -> dict[str, str]:
    raw = base64.b64encode(f"{car.client_id}:{car.secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _approve_on_web(client: TestClient, email: str, user_code: str) -> Any:
    assert log_in(client, email).status_code == 303
    page = client.get(f"/device?user_code={user_code}")
    assert page.status_code == 200
    return client.post(
        "/device/approve", data={**csrf(client), "user_code": user_code}, follow_redirects=False
    )


def _audited(db: Database, kind: str) -> int:
    with db.factory() as session:
        return len(list(session.scalars(select(AuditEvent).where(AuditEvent.kind == kind))))


def test_device_page_asks_to_log_in_and_shows_the_car(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    _, _, user_code = start_login(db, settings, car, utcnow())
    assert "user_code" in client.get("/device").text
    redirect = client.get(f"/device?user_code={user_code}", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"].startswith(
        "/login?next=%2Fdevice%3Fuser_code%3D"
    )
    log_in(client, SECONDARY_EMAIL)
    page = client.post("/device", data={**csrf(client), "user_code": user_code.replace("-", "").lower()})
    assert page.status_code == 200
    assert "Nordlicht E40" in page.text and car.vin[-4:] in page.text and car.vin not in page.text
    wrong = client.post("/device", data={**csrf(client), "user_code": "BBBB-BBBB"})
    assert wrong.status_code == 422


def test_a_stranger_is_refused_with_403_and_audited(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    authorization_id, _, user_code = start_login(db, settings, car, utcnow())
    refused = _approve_on_web(client, STRANGER_EMAIL, user_code)
    assert refused.status_code == 403
    assert _audited(db, "device_login_refused") == 1
    with db.factory() as session:
        assert session.get_one(DeviceAuthorization, authorization_id).approved_at is None


def test_the_pin_endpoint_counts_and_locks(client: TestClient, db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    _, device_code, user_code = start_login(db, settings, car, utcnow())
    early = client.post(
        "/incar/v1/device/pin", json={"device_code": device_code, "pin": PIN}, headers=_basic(car)
    )
    assert early.status_code == 409
    assert _approve_on_web(client, SECONDARY_EMAIL, user_code).status_code == 200
    no_client = client.post("/incar/v1/device/pin", json={"device_code": device_code, "pin": PIN})
    assert no_client.status_code == 401 and no_client.headers["content-type"] == "application/problem+json"
    wrong = client.post(
        "/incar/v1/device/pin", json={"device_code": device_code, "pin": "1111"}, headers=_basic(car)
    )
    assert wrong.status_code == 400 and wrong.json()["attempts_left"] == 2
    client.post("/incar/v1/device/pin", data={"device_code": device_code, "pin": "1112"}, headers=_basic(car))
    locked = client.post(
        "/incar/v1/device/pin",
        data={
            "device_code": device_code,
            "pin": "1113",
            "client_id": car.client_id,
            "client_secret": car.secret,
        },
    )
    assert locked.status_code == 423
    right = client.post(
        "/incar/v1/device/pin", json={"device_code": device_code, "pin": PIN}, headers=_basic(car)
    )
    assert right.status_code == 423


def test_the_right_pin_answers_204(client: TestClient, db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    authorization_id, device_code, user_code = start_login(db, settings, car, utcnow())
    _approve_on_web(client, PRIMARY_EMAIL, user_code)
    answer = client.post(
        "/incar/v1/device/pin", json={"device_code": device_code, "pin": PIN}, headers=_basic(car)
    )
    assert answer.status_code == 204
    with db.factory() as session:
        assert session.get_one(DeviceAuthorization, authorization_id).pin_verified_at is not None


def test_services_for_a_user_and_for_the_car_alone(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    user = user_tokens(db, settings, car, car.secondary_id, utcnow())["access_token"]
    mine = client.get("/incar/v1/services", headers=_bearer(user))
    assert mine.status_code == 200
    assert [s["code"] for s in mine.json()["services"]] == ["navigation", "remote_climate"]
    alone = client.get(
        "/incar/v1/services", headers=_bearer(car_tokens(db, settings, car, utcnow())["access_token"])
    )
    assert alone.json()["logged_in"] is False
    assert [s["code"] for s in alone.json()["services"]] == ["navigation"]
    me = client.get("/incar/v1/me", headers=_bearer(user)).json()
    assert me["first_name"] == "Astrid" and me["role"] == "secondary"
    missing = client.get("/incar/v1/services")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="incar"'
    bad = client.get("/incar/v1/services", headers=_bearer("nope"))
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.headers["content-type"] == "application/problem+json"


def test_remote_functions_need_the_pin_and_lock(client: TestClient, db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    user = user_tokens(db, settings, car, car.secondary_id, utcnow())["access_token"]
    anonymous = car_tokens(db, settings, car, utcnow())["access_token"]
    url = "/incar/v1/remote-authorisations"
    assert (
        client.post(
            url, json={"function": "remote_climate", "pin": PIN}, headers=_bearer(anonymous)
        ).status_code
        == 403
    )
    assert (
        client.post(url, json={"function": "navigation", "pin": PIN}, headers=_bearer(user)).status_code
        == 403
    )
    assert (
        client.post(url, json={"function": "remote_lock", "pin": PIN}, headers=_bearer(user)).status_code
        == 403
    )
    granted = client.post(url, json={"function": "remote_climate", "pin": PIN}, headers=_bearer(user))
    assert granted.status_code == 201 and granted.json()["function"] == "remote_climate"
    assert 0 < granted.json()["expires_in"] <= 300
    statuses = [
        client.post(url, json={"function": "remote_climate", "pin": p}, headers=_bearer(user)).status_code
        for p in ("1111", "1112", "1113", PIN)
    ]
    assert statuses == [400, 400, 423, 423]


def test_pairing_codes_need_the_car_s_credentials(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    assert client.post("/incar/v1/pairing-codes").status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{car.client_id}:nope".encode()).decode()}
    assert client.post("/incar/v1/pairing-codes", headers=wrong).status_code == 401
    answer = client.post("/incar/v1/pairing-codes", headers=_basic(car))
    assert answer.status_code == 201
    code = answer.json()["code"]
    assert len(code) == 8 and set(code) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert answer.json()["expires_in"] == settings.pairing_code_valid_minutes * 60


def test_qr_code_and_openapi(client: TestClient, db: Database, settings: Settings) -> None:
    qr = client.get("/device/qr.svg?user_code=bcdfghjk")
    assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml" and b"<svg" in qr.content
    assert client.get("/device/qr.svg?user_code=x").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/incar/v1/device/pin",
        "/incar/v1/services",
        "/incar/v1/me",
        "/incar/v1/remote-authorisations",
        "/incar/v1/pairing-codes",
    ):
        assert path in paths
    assert "/device" not in paths


def test_the_cars_reads_of_a_persons_data_are_audited(
    client: TestClient, db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    token = user_tokens(db, settings, car, car.primary_id, utcnow())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/incar/v1/services", headers=headers).status_code == 200
    assert client.get("/incar/v1/me", headers=headers).status_code == 200
    with db.factory() as session:
        kinds = [e.kind for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert kinds.count("incar_services_read") == 1 and kinds.count("incar_user_read") == 1
