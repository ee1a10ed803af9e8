"""A vehicle's connected services (SPEC §3.4, §3.5): the model's offer for the car's country activated
once, each included for its months from the day of activation.

Nothing here commits: the request that calls it owns the transaction."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from vehicles.catalogue import ServiceOffer
from vehicles.models import Vehicle, VehicleService
from vehicles.service import insert_once


def add_months(day: date, months: int) -> date:
    """``day`` moved ``months`` calendar months on; a day the target month lacks becomes its last day
    (31 January + 1 month = 28 or 29 February)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _service(session: Session, vehicle_id: int, code: str) -> VehicleService | None:
    return session.scalar(
        select(VehicleService).where(
            VehicleService.vehicle_id == vehicle_id, VehicleService.service_code == code
        )
    )


def activate_services(
    session: Session,
    vehicle: Vehicle,
    offers: Iterable[ServiceOffer],
    *,
    account_id: int | None,
    now: datetime,
) -> list[VehicleService]:
    """Activates each offered service for ``vehicle`` once, from today for its included months; a
    service already active keeps its period. Returns the vehicle's rows for ``offers``, in their order.

    Safe against a repeated or racing submit: the unique index (vehicle, service) takes one row per
    service; the loser's insert is rolled back to its savepoint and the winner's row is returned."""
    today = now.date()
    rows: list[VehicleService] = []
    for offer in offers:
        existing = _service(session, vehicle.id, offer.code)
        if existing is None:
            row = VehicleService(
                vehicle_id=vehicle.id,
                service_code=offer.code,
                activated_by=account_id,
                activated_at=now,
                starts_on=today,
                ends_on=add_months(today, offer.included_months),
            )
            refused = insert_once(session, row)
            if refused is None:
                existing = row
            else:
                existing = _service(session, vehicle.id, offer.code)
                if existing is None:
                    raise refused
        rows.append(existing)
    return rows


def active_services(session: Session, vehicle_id: int, today: date) -> list[VehicleService]:
    """The vehicle's services whose included period covers ``today`` (``ends_on`` is its last day), by
    code."""
    return list(
        session.scalars(
            select(VehicleService)
            .where(
                VehicleService.vehicle_id == vehicle_id,
                VehicleService.starts_on <= today,
                VehicleService.ends_on >= today,
            )
            .order_by(VehicleService.service_code)
        )
    )
