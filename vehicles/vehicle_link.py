"""The buyer's car linked to their ID as its primary user (SPEC §3.4, §3.5): at the activation's vehicle
step when the order has a VIN, or later, when the factory assigns it (``PUT /api/v1/orders/{n}/vin``),
for a buyer who already went through the activation, with an email saying so.

The order's vehicle is made at the activation's services step (``vehicle_for_order``), so a vehicle
made from the order means that its buyer (``Order.account_id``, the ID the activation attached) has
reached the vehicle step: this layer cannot read the activation's invitations, and needs not.

Nothing here commits: the request that calls it owns the transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.support import contact_for
from onboarding.core.branding import brand
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from vehicles.links import PrimaryTaken, link_user, vehicle_for_order
from vehicles.models import Dealer, Order, Vehicle, VehicleModel, VehicleRole
from vehicles.service import add_event

PURPOSE_LINKED = "vehicle_linked"


class LinkOutcome(StrEnum):
    LINKED = "linked"  # linked now
    ALREADY = "already"  # the ID was the car's primary user before
    NO_VIN = "no_vin"  # the order has no VIN yet: the link follows it
    PRIMARY_TAKEN = "primary_taken"  # another ID is the car's primary user (the database refused a second)
    VIN_TAKEN = "vin_taken"  # another vehicle (e.g. from an earlier order of a used car) has this VIN


def _give_vin(session: Session, vehicle: Vehicle, vin: str) -> bool:
    """The vehicle gets the order's VIN; False when another vehicle has it (the unique index)."""
    if vehicle.vin == vin:
        return True
    try:
        with session.begin_nested():
            vehicle.vin = vin
    except IntegrityError:
        return False
    return True


def link_primary_for_order(
    session: Session, order: Order, account_id: int, *, now: datetime, actor: str = "buyer"
) -> LinkOutcome:
    """Links the ID to the order's vehicle as its primary user, once the order has a VIN. Idempotent: a
    repeated or racing call links once (``link_user``). Another primary user is an outcome, not an
    error: the database's one-primary index holds it against racing writers."""
    if not order.vin:
        return LinkOutcome.NO_VIN
    vehicle = vehicle_for_order(session, order, now=now)
    if vehicle.order_id == order.id and not _give_vin(session, vehicle, order.vin):
        return LinkOutcome.VIN_TAKEN
    try:
        _link, created = link_user(session, vehicle, account_id, VehicleRole.PRIMARY, now=now, actor=actor)
    except PrimaryTaken:
        return LinkOutcome.PRIMARY_TAKEN
    return LinkOutcome.LINKED if created else LinkOutcome.ALREADY


# Told when an order's car is linked to its buyer after the VIN arrived (the activation's funnel).
on_linked_for_order: list[Callable[[Session, Order, datetime], None]] = []


def link_when_vin_known(session: Session, order: Order, *, settings: Settings, now: datetime) -> bool:
    """After the order's VIN was stored: if its buyer has reached the activation's vehicle step (the
    order's vehicle exists), links the car to their ID and queues the "your car is linked" email.
    Returns whether it linked now; a second VIN update, or a racing one, links and emails once."""
    if not order.vin or order.account_id is None:
        return False
    waiting = session.scalar(select(Vehicle.id).where(Vehicle.order_id == order.id))
    if waiting is None:
        return False
    outcome = link_primary_for_order(session, order, order.account_id, now=now, actor="order_system")
    if outcome is LinkOutcome.LINKED:
        add_event(session, order, "vehicle_linked", "order_system", now, order.vin)
        _queue_linked_email(session, settings, order, order.account_id, now=now)
        for subscriber in list(on_linked_for_order):
            subscriber(session, order, now)
        return True
    if outcome in (LinkOutcome.PRIMARY_TAKEN, LinkOutcome.VIN_TAKEN):
        # For support: the buyer is not linked and must be helped (a dealer check of the papers).
        add_event(session, order, "vehicle_link_refused", "order_system", now, str(outcome))
    return False


def _queue_linked_email(
    session: Session, settings: Settings, order: Order, account_id: int, *, now: datetime
) -> None:
    reader = session.get(Account, account_id)
    if reader is None:
        return
    model = session.get(VehicleModel, order.model_code)
    dealer = session.get(Dealer, order.dealer_code)
    rendered = render_email(
        "vehicle_linked",
        reader.language,
        {
            "brand": brand(settings),
            "support": contact_for(settings, order.country, dealer),
            "first_name": reader.first_name,
            "model_name": model.name if model else order.model_code,
            "vin": order.vin,
            "link": settings.public_url("/vehicles"),
        },
    )
    outbox.enqueue(
        session,
        outbox_email(
            settings,
            rendered,
            to=reader.email,
            language=reader.language,
            purpose=PURPOSE_LINKED,
            reference_id=order.id,
        ),
        secret=settings.secret_key_value(),
        now=now,
    )
