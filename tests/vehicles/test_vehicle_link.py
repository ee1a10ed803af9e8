"""The buyer's car linked to their ID as primary user: at the vehicle step when the VIN is known, or
when it arrives later, once, with one email; never two primary users of one car."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from notifications.models import OutboxMessage
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import make_account
from tests.conftest import Database
from tests.helpers import order_payload, put_order
from vehicles.links import vehicle_for_order
from vehicles.models import Order, OrderEvent, Vehicle, VehicleRole, VehicleUser
from vehicles.vehicle_link import LinkOutcome, link_primary_for_order, link_when_vin_known

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
VIN = "YV1SW61R021234561"


def _order(db: Database, settings: Settings, vin: str | None = None, number: str = "SO-7") -> None:
    put_order(db.factory, settings, number, NOW, **order_payload(NOW.date() + timedelta(days=10), vin=vin))


def _get(session: object, number: str = "SO-7") -> Order:
    order = session.scalar(select(Order).where(Order.order_number == number))  # type: ignore[attr-defined]
    assert isinstance(order, Order)
    return order


def _links(db: Database) -> list[tuple[int, str, str | None]]:
    with db.factory() as session:
        return [
            (link.account_id, link.role, vin)
            for link, vin in session.execute(
                select(VehicleUser, Vehicle.vin).join(Vehicle, Vehicle.id == VehicleUser.vehicle_id)
            )
        ]


def _emails(db: Database) -> int:
    with db.factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.purpose == "vehicle_linked")
            )
            or 0
        )


def test_without_a_vin_nothing_is_linked(db: Database, settings: Settings, reference: None) -> None:
    _order(db, settings)
    buyer = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        assert link_primary_for_order(session, _get(session), buyer, now=NOW) is LinkOutcome.NO_VIN
    assert _links(db) == []


def test_the_vin_goes_to_the_vehicle_and_linking_again_links_once(
    db: Database, settings: Settings, reference: None
) -> None:
    _order(db, settings, vin=VIN)
    buyer = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        assert link_primary_for_order(session, _get(session), buyer, now=NOW) is LinkOutcome.LINKED
    with transaction(db.factory) as session:
        assert link_primary_for_order(session, _get(session), buyer, now=NOW) is LinkOutcome.ALREADY
    assert _links(db) == [(buyer, VehicleRole.PRIMARY, VIN)]


def test_racing_links_of_one_order_make_one_link(db: Database, settings: Settings, reference: None) -> None:
    _order(db, settings, vin=VIN)
    buyer = make_account(db.factory, settings, NOW)
    barrier = threading.Barrier(2)
    outcomes: list[LinkOutcome] = []
    errors: list[BaseException] = []

    def link() -> None:
        try:
            with transaction(db.factory) as session:
                barrier.wait(timeout=10)
                outcomes.append(link_primary_for_order(session, _get(session), buyer, now=NOW))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=link) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(outcomes) == [LinkOutcome.ALREADY, LinkOutcome.LINKED]
    assert _links(db) == [(buyer, VehicleRole.PRIMARY, VIN)]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Vehicle)) == 1


def test_a_second_primary_user_is_refused(db: Database, settings: Settings, reference: None) -> None:
    _order(db, settings, vin=VIN)
    buyer = make_account(db.factory, settings, NOW)
    other = make_account(db.factory, settings, NOW, email="erik@example.com")
    with transaction(db.factory) as session:
        assert link_primary_for_order(session, _get(session), buyer, now=NOW) is LinkOutcome.LINKED
    with transaction(db.factory) as session:
        assert link_primary_for_order(session, _get(session), other, now=NOW) is LinkOutcome.PRIMARY_TAKEN
    # The database itself holds the rule, whatever the code above it does.
    with pytest.raises(IntegrityError), transaction(db.factory) as session:
        vehicle_id = session.scalar(select(Vehicle.id))
        session.add(
            VehicleUser(vehicle_id=vehicle_id, account_id=other, role=VehicleRole.PRIMARY, linked_at=NOW)
        )
        session.flush()
    assert _links(db) == [(buyer, VehicleRole.PRIMARY, VIN)]


def test_the_vin_update_links_a_waiting_buyer_once_with_one_email(
    db: Database, settings: Settings, reference: None
) -> None:
    _order(db, settings)
    buyer = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        order = _get(session)
        # The buyer has not reached the services step (no vehicle yet): the VIN alone links nothing.
        order.vin, order.account_id = VIN, buyer
        assert link_when_vin_known(session, order, settings=settings, now=NOW) is False
        order.vin = None
        vehicle_for_order(session, order, now=NOW)  # what the services step does
        assert link_when_vin_known(session, order, settings=settings, now=NOW) is False  # no VIN yet
    with transaction(db.factory) as session:
        order = _get(session)
        order.vin = VIN
        assert link_when_vin_known(session, order, settings=settings, now=NOW) is True
    with transaction(db.factory) as session:
        assert link_when_vin_known(session, _get(session), settings=settings, now=NOW) is False
    assert _links(db) == [(buyer, VehicleRole.PRIMARY, VIN)]
    assert _emails(db) == 1
    with db.factory() as session:
        kinds = session.scalars(select(OrderEvent.kind).where(OrderEvent.kind.like("vehicle_%"))).all()
        assert kinds == ["vehicle_linked"]


def test_a_vin_update_for_a_car_with_another_primary_is_an_outcome_not_an_error(
    db: Database, settings: Settings, reference: None
) -> None:
    _order(db, settings)
    buyer = make_account(db.factory, settings, NOW)
    other = make_account(db.factory, settings, NOW, email="erik@example.com")
    with transaction(db.factory) as session:
        order = _get(session)
        order.account_id = buyer
        vehicle = vehicle_for_order(session, order, now=NOW)
        session.flush()
        session.add(
            VehicleUser(vehicle_id=vehicle.id, account_id=other, role=VehicleRole.PRIMARY, linked_at=NOW)
        )
    with transaction(db.factory) as session:
        order = _get(session)
        order.vin = VIN
        assert link_when_vin_known(session, order, settings=settings, now=NOW) is False
    assert _links(db) == [(other, VehicleRole.PRIMARY, VIN)]
    assert _emails(db) == 0
    with db.factory() as session:
        assert session.scalars(
            select(OrderEvent.detail).where(OrderEvent.kind == "vehicle_link_refused")
        ).all() == ["primary_taken"]
