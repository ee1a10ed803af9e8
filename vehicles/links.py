"""Which IDs use which vehicle (SPEC §3.5): the vehicle made from its order, the primary user linked
when the VIN is known, secondary users, links ended by removal or transfer.

"A user's link to a car ended" is announced in one place, ``link_ended``: modules that hang something
on a user's use of a car (charging contracts, in-car tokens, in later issues) subscribe with
``on_link_ended`` and end their part in the same transaction.

Nothing here commits: the request or job that calls it owns the transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.identity import audit
from vehicles.models import Order, Vehicle, VehicleRole, VehicleUser
from vehicles.service import insert_once

# Why a link ended (``VehicleUser.ended_reason``).
REMOVED_BY_PRIMARY = "removed_by_primary"  # the primary user removed a secondary user
LEFT = "left"  # a secondary user left the car
CAR_REMOVED = "car_removed"  # the primary user removed the car from their ID
TRANSFERRED = "transferred"  # a new primary user (used car): everyone before them goes


@dataclass(frozen=True, slots=True)
class LinkEnded:
    vehicle_id: int
    vin: str | None
    account_id: int
    role: str
    reason: str
    at: datetime


LinkEndedHandler = Callable[[Session, LinkEnded], None]
_SUBSCRIBERS: list[LinkEndedHandler] = []


def on_link_ended(handler: LinkEndedHandler) -> LinkEndedHandler:
    """Subscribe ``handler`` (usable as a decorator): called, in the caller's transaction, for every
    ended link."""
    if handler not in _SUBSCRIBERS:
        _SUBSCRIBERS.append(handler)
    return handler


def vehicle_for_order(session: Session, order: Order, *, now: datetime) -> Vehicle:
    """The order's vehicle, made once (a racing request that made it first wins; its row is used)."""
    vehicle = session.scalar(select(Vehicle).where(Vehicle.order_id == order.id))
    if vehicle is not None:
        return vehicle
    vehicle = Vehicle(
        vin=order.vin, model_code=order.model_code, country=order.country, order_id=order.id, created_at=now
    )
    refused = insert_once(session, vehicle)
    if refused is None:
        return vehicle
    existing = session.scalar(select(Vehicle).where(Vehicle.order_id == order.id))
    if existing is None:
        # The VIN belongs to a vehicle from an earlier order (a used car's new order): that vehicle.
        existing = session.scalar(select(Vehicle).where(Vehicle.vin == order.vin)) if order.vin else None
        if existing is None:
            raise refused
    return existing


def live_links(session: Session, vehicle_id: int) -> list[VehicleUser]:
    return list(
        session.scalars(
            select(VehicleUser)
            .where(VehicleUser.vehicle_id == vehicle_id, VehicleUser.ended_at.is_(None))
            .order_by(VehicleUser.role, VehicleUser.linked_at)
        )
    )


def link_of(session: Session, vehicle_id: int, account_id: int) -> VehicleUser | None:
    """The ID's live link to the vehicle, if any."""
    return session.scalar(
        select(VehicleUser).where(
            VehicleUser.vehicle_id == vehicle_id,
            VehicleUser.account_id == account_id,
            VehicleUser.ended_at.is_(None),
        )
    )


def primary_of(session: Session, vehicle_id: int) -> VehicleUser | None:
    return session.scalar(
        select(VehicleUser).where(
            VehicleUser.vehicle_id == vehicle_id,
            VehicleUser.role == VehicleRole.PRIMARY,
            VehicleUser.ended_at.is_(None),
        )
    )


class PrimaryTaken(Exception):
    """The vehicle has another primary user (the database's one-primary index refused a second)."""


def link_user(
    session: Session, vehicle: Vehicle, account_id: int, role: VehicleRole, *, now: datetime, actor: str
) -> tuple[VehicleUser, bool]:
    """Links the ID to the vehicle; returns (link, created). Linking again is a no-op that returns the
    live link, so a repeated or racing submit links once. Raises ``PrimaryTaken`` when a primary link
    is asked for and someone else holds it."""
    existing = link_of(session, vehicle.id, account_id)
    if existing is not None:
        return existing, False
    link = VehicleUser(vehicle_id=vehicle.id, account_id=account_id, role=role, linked_at=now)
    refused = insert_once(session, link)
    if refused is not None:
        existing = link_of(session, vehicle.id, account_id)
        if existing is not None:
            return existing, False
        raise PrimaryTaken from refused
    audit.record(
        session,
        "vehicle_linked",
        account_id=account_id,
        actor=actor,
        now=now,
        vehicle_id=vehicle.id,
        vin=vehicle.vin,
        role=str(role),
    )
    return link, True


def end_link(session: Session, link: VehicleUser, *, reason: str, now: datetime, actor: str) -> None:
    """Ends one link (kept for the record) and announces it to the subscribers."""
    if link.ended_at is not None:
        return
    link.ended_at = now
    link.ended_reason = reason
    session.flush()
    vehicle = session.get(Vehicle, link.vehicle_id)
    vin = vehicle.vin if vehicle is not None else None
    audit.record(
        session,
        "vehicle_unlinked",
        account_id=link.account_id,
        actor=actor,
        now=now,
        vehicle_id=link.vehicle_id,
        vin=vin,
        role=link.role,
        reason=reason,
    )
    event = LinkEnded(link.vehicle_id, vin, link.account_id, link.role, reason, now)
    for handler in list(_SUBSCRIBERS):
        handler(session, event)
