"""A vehicle's connected services: each offered service recorded once, included for its months from
the day of activation (a day the end month lacks becomes its last day), also when two requests race."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import make_account
from tests.conftest import Database
from tests.helpers import order_payload, put_order
from vehicles.catalogue import STANDARD_SERVICES, ServiceOffer
from vehicles.links import vehicle_for_order
from vehicles.models import Order, Vehicle, VehicleService
from vehicles.subscriptions import activate_services, active_services, add_months

NOW = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)


def test_months_are_calendar_months_clamped_to_the_last_day() -> None:
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2027, 3, 31), 1) == date(2027, 4, 30)
    assert add_months(date(2027, 11, 15), 2) == date(2028, 1, 15)
    assert add_months(date(2027, 12, 31), 12) == date(2028, 12, 31)
    assert add_months(date(2027, 5, 10), 36) == date(2030, 5, 10)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)


def _order_and_vehicle(db: Database, settings: Settings) -> tuple[int, int]:
    put_order(db.factory, settings, "SO-7", NOW, **order_payload(NOW.date() + timedelta(days=10)))
    account_id = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        order = session.scalar(select(Order).where(Order.order_number == "SO-7"))
        assert order is not None
        return vehicle_for_order(session, order, now=NOW).id, account_id


OFFERS = [STANDARD_SERVICES["navigation"], STANDARD_SERVICES["trip_log"], STANDARD_SERVICES["data_pass"]]


def test_each_service_is_recorded_once_with_its_period(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, account_id = _order_and_vehicle(db, settings)
    with transaction(db.factory) as session:
        vehicle = session.get(Vehicle, vehicle_id)
        assert vehicle is not None
        rows = activate_services(session, vehicle, OFFERS, account_id=account_id, now=NOW)
        assert [(r.service_code, r.starts_on, r.ends_on) for r in rows] == [
            ("navigation", date(2027, 1, 31), date(2030, 1, 31)),
            ("trip_log", date(2027, 1, 31), date(2028, 1, 31)),
            ("data_pass", date(2027, 1, 31), date(2027, 4, 30)),
        ]
        assert {r.activated_by for r in rows} == {account_id}
    # Again, a month later: nothing new, and the periods are those of the first activation.
    later = NOW + timedelta(days=30)
    with transaction(db.factory) as session:
        vehicle = session.get(Vehicle, vehicle_id)
        assert vehicle is not None
        again = activate_services(session, vehicle, OFFERS, account_id=account_id, now=later)
        assert [r.ends_on for r in again] == [date(2030, 1, 31), date(2028, 1, 31), date(2027, 4, 30)]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(VehicleService)) == 3
        # The Data Pass's three months end on 30 April: active that day, not the day after.
        assert [r.service_code for r in active_services(session, vehicle_id, date(2027, 4, 30))] == [
            "data_pass",
            "navigation",
            "trip_log",
        ]
        assert [r.service_code for r in active_services(session, vehicle_id, date(2027, 5, 1))] == [
            "navigation",
            "trip_log",
        ]
        assert active_services(session, vehicle_id, date(2027, 1, 30)) == []


def test_racing_activations_record_one_row_per_service(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, account_id = _order_and_vehicle(db, settings)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    results: list[list[str]] = []

    def activate() -> None:
        try:
            with transaction(db.factory) as session:
                # (SQLite's first statement takes the write lock: the threads meet before it.)
                barrier.wait(timeout=10)
                vehicle = session.get(Vehicle, vehicle_id)
                assert vehicle is not None
                rows = activate_services(session, vehicle, OFFERS, account_id=account_id, now=NOW)
                results.append([r.service_code for r in rows])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=activate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert results == [["navigation", "trip_log", "data_pass"]] * 2
    with db.factory() as session:
        codes = session.scalars(
            select(VehicleService.service_code).order_by(VehicleService.service_code)
        ).all()
        assert codes == ["data_pass", "navigation", "trip_log"]


def test_a_models_own_service_keeps_its_months(db: Database, settings: Settings, reference: None) -> None:
    vehicle_id, _account_id = _order_and_vehicle(db, settings)
    own = ServiceOffer("ferry_mode", {"en": "Ferry mode"}, {"en": "Quiet alarm on board."}, False, False, 13)
    with transaction(db.factory) as session:
        vehicle = session.get(Vehicle, vehicle_id)
        assert vehicle is not None
        [row] = activate_services(session, vehicle, [own], account_id=None, now=NOW)
        assert (row.ends_on, row.activated_by) == (date(2028, 2, 29), None)
