"""Shared set-up for the in-car tests of the device approval, the car's endpoints and pairing: a car with
its client, a primary and a secondary user, device logins and grants made with the OAuth core."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity import pin
from onboarding.identity.models import Account
from tests.account_support import make_account
from tests.conftest import NOW, Database
from vehicles import links
from vehicles.catalogue import STANDARD_SERVICES
from vehicles.incar import clients, device_login, tokens
from vehicles.incar.models import DeviceAuthorization, VehicleClient
from vehicles.models import Vehicle, VehicleRole
from vehicles.subscriptions import activate_services

VIN = "YV1DZ8256C2271234"
PIN = "2580"
PRIMARY_EMAIL = "astrid@example.com"
SECONDARY_EMAIL = "erik@example.com"
STRANGER_EMAIL = "mallory@example.com"


@dataclass
class Car:
    vehicle_id: int
    vin: str
    client_id: str
    secret: str
    primary_id: int
    secondary_id: int
    stranger_id: int


def make_car(
    db: Database, settings: Settings, *, model_code: str = "E40", now: datetime = NOW, services: bool = True
) -> Car:
    """A car with its client, a primary user (who set the PIN), a secondary user and an ID that does
    not use it; its model's services activated."""
    primary_id = make_account(db.factory, settings, now, email=PRIMARY_EMAIL)
    secondary_id = make_account(db.factory, settings, now, email=SECONDARY_EMAIL)
    stranger_id = make_account(db.factory, settings, now, email=STRANGER_EMAIL)
    with transaction(db.factory) as session:
        vehicle = Vehicle(vin=VIN, model_code=model_code, country="SE", created_at=now)
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, primary_id, VehicleRole.PRIMARY, now=now, actor="test")
        links.link_user(session, vehicle, secondary_id, VehicleRole.SECONDARY, now=now, actor="test")
        pin.set_pin(session, settings, session.get_one(Account, primary_id), PIN, PIN, now=now, ip=None)
        if services:
            offers = [STANDARD_SERVICES["navigation"], STANDARD_SERVICES["remote_climate"]]
            activate_services(session, vehicle, offers, account_id=primary_id, now=now)
        client, secret = clients.provision(session, VIN, now=now)
        return Car(vehicle.id, VIN, client.client_id, secret, primary_id, secondary_id, stranger_id)


def start_login(db: Database, settings: Settings, car: Car, now: datetime) -> tuple[int, str, str]:
    """A device login of the car: (authorization id, device code, user code)."""
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, car.client_id)
        authorization, device_code = device_login.start(session, settings, client, "", now=now)
        return authorization.id, device_code, authorization.user_code


def user_tokens(db: Database, settings: Settings, car: Car, account_id: int, now: datetime) -> dict[str, Any]:
    """Tokens of a completed device login of ``account_id`` (approved and PIN-verified directly)."""
    authorization_id, _device_code, _user_code = start_login(db, settings, car, now)
    with transaction(db.factory) as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        authorization.account_id, authorization.approved_at, authorization.pin_verified_at = (
            account_id,
            now,
            now,
        )
        authorization.completed_at = now
        grant = tokens.grant_for_device_login(session, authorization, now=now)
        return tokens.issue(session, settings, grant, now=now)


def car_tokens(db: Database, settings: Settings, car: Car, now: datetime) -> dict[str, Any]:
    """The car's own (anonymous) tokens."""
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, car.client_id)
        return tokens.issue(session, settings, tokens.client_grant(session, client, now=now), now=now)
