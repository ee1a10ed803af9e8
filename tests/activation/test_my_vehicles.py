"""My vehicles: the signed-in ID's cars with their services, PIN state and production timeline (where
order tracking is offered), the links to manage them, and activations still to finish."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.crypto import token_hash
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity import pin
from onboarding.identity.models import Account
from tests.account_support import log_in, make_account
from tests.conftest import Database
from tests.helpers import order_payload, put_order
from vehicles.catalogue import STANDARD_SERVICES
from vehicles.links import link_user, vehicle_for_order
from vehicles.models import Order, ProductionStatus, VehicleRole
from vehicles.service import set_status
from vehicles.subscriptions import activate_services, add_months

VIN = "YV1SW61R021234561"


def _car(
    db: Database, settings: Settings, number: str, account_id: int, role: VehicleRole, **order: object
) -> int:
    now = utcnow()
    put_order(db.factory, settings, number, now, **order_payload(now.date() + timedelta(days=20), **order))
    with transaction(db.factory) as session:
        found = session.scalar(select(Order).where(Order.order_number == number))
        assert found is not None
        vehicle = vehicle_for_order(session, found, now=now)
        activate_services(
            session,
            vehicle,
            [STANDARD_SERVICES["navigation"], STANDARD_SERVICES["remote_climate"]],
            account_id=account_id,
            now=now,
        )
        link_user(session, vehicle, account_id, role, now=now, actor="test")
        return vehicle.id


def test_signed_out_goes_to_the_login_and_back(db: Database, client: TestClient) -> None:
    answer = client.get("/vehicles", follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?next=/vehicles")


def test_an_id_without_cars_sees_the_empty_state(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    page = client.get("/vehicles")
    assert page.status_code == 200
    assert "No car linked yet." in page.text
    assert 'href="/vehicles" aria-current="page"' in page.text  # the account navigation


def test_the_primary_user_sees_the_car_services_pin_and_tracking(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    now = utcnow()
    account_id = make_account(db.factory, settings, now)
    vehicle_id = _car(db, settings, "SO-1", account_id, VehicleRole.PRIMARY, vin=VIN)
    with transaction(db.factory) as session:
        order = session.scalar(select(Order).where(Order.order_number == "SO-1"))
        assert order is not None
        set_status(session, order, ProductionStatus.IN_PRODUCTION, now=now, actor="test", lead_days=14)
        set_status(session, order, ProductionStatus.PRODUCED, now=now, actor="test", lead_days=14)
    log_in(client)
    page = client.get("/vehicles").text
    assert "Nordlicht E40 (2027)" in page and VIN in page
    assert "Primary user" in page
    # Services with the last day they are included (the ID's language is English).
    assert "Online navigation: included until" in page and "Remote climate control: included until" in page
    assert str(add_months(now.date(), 36).year) in page
    # The E40 needs a PIN: not set yet.
    assert "Security PIN" in page and "Not set" in page
    # Tracking (Sweden): ordered, in production and produced are reached, the rest not yet.
    assert page.count("<strong>") >= 3
    assert 'aria-current="step"><strong>Produced</strong>' in page
    assert "<li>At the dealer</li>" in page
    assert f'href="/vehicles/{vehicle_id}/users"' in page and f'href="/vehicles/{vehicle_id}/remove"' in page
    assert "/leave" not in page
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        pin.set_pin(session, settings, account, "7291", "7291", now=now, ip="127.0.0.1")
    assert "Not set" not in client.get("/vehicles").text


def test_a_secondary_user_without_tracking_leaves_the_car(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    now = utcnow()
    owner = make_account(db.factory, settings, now, email="owner@example.com")
    me = make_account(db.factory, settings, now)
    vehicle_id = _car(
        db,
        settings,
        "US-1",
        owner,
        VehicleRole.PRIMARY,
        dealer_code="US-01",
        country="US",
        language="en",
        buyer_phone="+1 617 555 0123",
        buyer_email="owner@example.com",
        model_code="S90",
    )
    with transaction(db.factory) as session:
        from vehicles.models import Vehicle

        vehicle = session.get(Vehicle, vehicle_id)
        assert vehicle is not None
        link_user(session, vehicle, me, VehicleRole.SECONDARY, now=now, actor="test")
    log_in(client)
    page = client.get("/vehicles").text
    assert "Nordlicht S90 (2026)" in page and "VIN not assigned yet" in page
    assert "Secondary user" in page
    assert f'href="/vehicles/{vehicle_id}/leave"' in page
    assert "/users" not in page and "/remove" not in page
    assert "Track your car" not in page  # not offered in the US
    assert "Security PIN" not in page  # the S90 needs none


def test_an_unfinished_activation_can_be_continued(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    now = utcnow()
    account_id = make_account(db.factory, settings, now)
    put_order(db.factory, settings, "SO-2", now, **order_payload(now.date() + timedelta(days=10)))
    with transaction(db.factory) as session:
        order = session.scalar(select(Order).where(Order.order_number == "SO-2"))
        assert order is not None
        session.add(
            Invitation(
                order_id=order.id,
                email=order.buyer_email,
                language="sv",
                token_hash=token_hash("continue-me"),
                created_at=now,
                sent_at=now,
                expires_at=now + timedelta(days=14),
                account_id=account_id,
                id_created_at=now,
            )
        )
    log_in(client)
    page = client.get("/vehicles").text
    assert "SO-2" in page and 'href="/activate"' in page
    assert "open the link in your invitation email on this device" in page
    client.cookies.set("onb_invite", "continue-me")
    assert "open the link in your invitation email on this device" not in client.get("/vehicles").text
    with transaction(db.factory) as session:
        invitation = session.scalar(select(Invitation))
        assert invitation is not None
        invitation.completed_at = now
    assert 'href="/activate"' not in client.get("/vehicles").text
