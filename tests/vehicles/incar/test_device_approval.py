"""The user's side of a device login at the service level: only a live user of the VIN approves (others
refused and audited), ended logins refused, the car's PIN is its primary user's, three wrong entries
lock it, and revocation subscribers end the grants when links end or the ID signs out everywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

import vehicles.incar.revocation  # noqa: F401  (imported for its subscriptions)
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity import pin, web_sessions
from onboarding.identity.models import Account, AuditEvent
from tests.conftest import Database
from tests.vehicles.incar.incar_support import PIN, Car, make_car, start_login, user_tokens
from vehicles import secondary
from vehicles.incar import device_approval, tokens
from vehicles.incar.models import DeviceAuthorization
from vehicles.models import Vehicle

pytestmark = pytest.mark.usefixtures("reference")


def _approve(db: Database, car: Car, authorization_id: int, account_id: int) -> None:
    with transaction(db.factory) as session:
        device_approval.approve(
            session,
            session.get_one(DeviceAuthorization, authorization_id),
            session.get_one(Account, account_id),
            now=utcnow(),
        )


def _events(db: Database, kind: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))


def test_a_secondary_user_approves_and_the_login_waits_for_the_pin(db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    authorization_id, _, _ = start_login(db, settings, car, utcnow())
    _approve(db, car, authorization_id, car.secondary_id)
    with db.factory() as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        assert authorization.account_id == car.secondary_id and authorization.approved_at is not None
        assert authorization.pin_required and authorization.pin_verified_at is None
    assert len(_events(db, "device_login_approved")) == 1


def test_an_id_not_on_the_vin_is_refused_and_audited(db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    authorization_id, _, _ = start_login(db, settings, car, utcnow())
    with transaction(db.factory) as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        with pytest.raises(device_approval.ApprovalRefused) as refused:
            device_approval.approve(
                session, authorization, session.get_one(Account, car.stranger_id), now=utcnow()
            )
        assert refused.value.reason == "not_a_user"
        assert authorization.approved_at is None
    [event] = _events(db, "device_login_refused")
    assert event.account_id == car.stranger_id


@pytest.mark.parametrize("ended", ["expired", "denied", "completed"])
def test_an_ended_login_cannot_be_approved(db: Database, settings: Settings, ended: str) -> None:
    car = make_car(db, settings)
    now = utcnow()
    authorization_id, _, _ = start_login(db, settings, car, now)
    with transaction(db.factory) as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        if ended == "denied":
            device_approval.deny(session, authorization, session.get_one(Account, car.primary_id), now=now)
        elif ended == "completed":
            authorization.completed_at = now
    later = now + timedelta(minutes=11) if ended == "expired" else now
    with transaction(db.factory) as session, pytest.raises(device_approval.ApprovalRefused) as refused:
        device_approval.approve(
            session,
            session.get_one(DeviceAuthorization, authorization_id),
            session.get_one(Account, car.primary_id),
            now=later,
        )
    assert refused.value.reason == ended


def test_the_pin_checked_is_the_primary_users_and_three_wrong_lock_it(
    db: Database, settings: Settings
) -> None:
    car = make_car(db, settings)
    authorization_id, _, _ = start_login(db, settings, car, utcnow())
    _approve(db, car, authorization_id, car.secondary_id)
    outcomes = []
    for entered in ("1111", "2222", "3333", PIN):
        with transaction(db.factory) as session:
            authorization = session.get_one(DeviceAuthorization, authorization_id)
            result = device_approval.verify_pin(
                session, settings, authorization, entered, now=utcnow(), ip="192.0.2.1"
            )
            outcomes.append((result.outcome, result.tries_left))
    assert outcomes == [
        (pin.PinCheck.WRONG, 2),
        (pin.PinCheck.WRONG, 1),
        (pin.PinCheck.LOCKED, 0),
        (pin.PinCheck.LOCKED, 0),  # even the right PIN, until the primary user resets it
    ]
    with db.factory() as session:
        assert session.get_one(DeviceAuthorization, authorization_id).pin_verified_at is None
        assert pin.pin_locked(session, session.get_one(Account, car.primary_id))
    [locked] = _events(db, "pin_locked")
    assert locked.account_id == car.primary_id
    assert {e.account_id for e in _events(db, "incar_pin_checked")} == {car.secondary_id}


def test_the_right_pin_verifies_the_login(db: Database, settings: Settings) -> None:
    car = make_car(db, settings)
    authorization_id, _, _ = start_login(db, settings, car, utcnow())
    with transaction(db.factory) as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        with pytest.raises(device_approval.PinNotExpected):  # not approved yet
            device_approval.verify_pin(session, settings, authorization, PIN, now=utcnow(), ip=None)
    _approve(db, car, authorization_id, car.primary_id)
    with transaction(db.factory) as session:
        authorization = session.get_one(DeviceAuthorization, authorization_id)
        result = device_approval.verify_pin(session, settings, authorization, PIN, now=utcnow(), ip=None)
        assert result.outcome is pin.PinCheck.OK and authorization.pin_verified_at is not None


def _live(db: Database, token: str) -> bool:
    with db.factory() as session:
        return tokens.access_context(session, token, now=utcnow()) is not None


@pytest.mark.parametrize(
    "how", ["remove_secondary", "leave", "remove_car", "transfer", "sign_out_everywhere"]
)
def test_each_revocation_ends_the_secondary_users_grant(db: Database, settings: Settings, how: str) -> None:
    car = make_car(db, settings)
    now = utcnow()
    secondary_token = user_tokens(db, settings, car, car.secondary_id, now)["access_token"]
    primary_token = user_tokens(db, settings, car, car.primary_id, now)["access_token"]
    assert _live(db, secondary_token) and _live(db, primary_token)
    with transaction(db.factory) as session:
        vehicle = session.get_one(Vehicle, car.vehicle_id)
        primary = session.get_one(Account, car.primary_id)
        if how == "remove_secondary":
            [link] = secondary.secondary_links(session, vehicle.id)
            secondary.remove_secondary(session, vehicle, primary, link.id, now=now)
        elif how == "leave":
            secondary.leave(session, vehicle, session.get_one(Account, car.secondary_id), now=now)
        elif how == "remove_car":
            secondary.remove_car(session, vehicle, primary, now=now)
        elif how == "transfer":
            secondary.transfer(session, settings, car.vin, "mallory@example.com", now=now, actor="test")
        else:
            web_sessions.sign_out_everywhere(
                session, car.secondary_id, now=now, reason="signed_out_everywhere"
            )
    assert not _live(db, secondary_token)
    primary_keeps = how in ("remove_secondary", "leave", "sign_out_everywhere")
    assert _live(db, primary_token) is primary_keeps
