"""My vehicles (SPEC §3.5): the signed-in ID's cars, with their services, the security PIN's state, the
order's production timeline where order tracking is offered, and activations still to finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.activation.invitations import LinkState, link_state
from onboarding.activation.models import Invitation
from onboarding.activation.pages import INVITE_COOKIE, Db
from onboarding.core.clock import utcnow
from onboarding.core.i18n import N_, lazy_gettext
from onboarding.core.settings import Settings
from onboarding.identity import web_sessions
from onboarding.identity.dependencies import signed_in
from onboarding.identity.models import SecurityPin
from onboarding.web.app_state import settings_of
from onboarding.web.rendering import render
from vehicles.catalogue import ServiceOffer, services_for
from vehicles.charging import cards as charging_cards
from vehicles.charging import contracts as charging_contracts
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import (
    Order,
    OrderEvent,
    ProductionStatus,
    Vehicle,
    VehicleModel,
    VehicleRole,
    VehicleService,
    VehicleUser,
)
from vehicles.subscriptions import active_services

router = APIRouter(include_in_schema=False)
Me = Annotated[web_sessions.CurrentSession, Depends(signed_in)]

# The production timeline, first to last (a cancelled order shows its status instead).
TRACKED_STATUSES: tuple[tuple[ProductionStatus, str], ...] = (
    (ProductionStatus.ORDERED, N_("Ordered")),
    (ProductionStatus.IN_PRODUCTION, N_("In production")),
    (ProductionStatus.PRODUCED, N_("Produced")),
    (ProductionStatus.IN_TRANSIT, N_("On its way")),
    (ProductionStatus.AT_DEALER, N_("At the dealer")),
    (ProductionStatus.DELIVERED, N_("Delivered")),
)


@dataclass
class TrackingStep:
    label: object
    reached: bool
    current: bool
    on: date | None


@dataclass
class CarView:
    vehicle: Vehicle
    model: VehicleModel | None
    role: str
    services: list[tuple[VehicleService, ServiceOffer | None]] = field(default_factory=list)
    pin_state: str | None = None  # "set", "not_set", "locked"; None when the model needs none
    tracking: list[TrackingStep] | None = None
    cancelled: bool = False
    # The charging service (plug-in hybrids and electric cars): the live contract and its cards.
    plugs_in: bool = False
    charging: ChargingContract | None = None
    charging_cards: list[ChargingCard] = field(default_factory=list)

    @property
    def primary(self) -> bool:
        return self.role == VehicleRole.PRIMARY


def _pin_state(session: Session, account_id: int) -> str:
    row = session.get(SecurityPin, account_id)
    if row is None:
        return "not_set"
    return "locked" if row.locked_at is not None else "set"


def _tracking(session: Session, order: Order) -> list[TrackingStep]:
    """The statuses up to the order's current one, each dated by the timeline's status change to it
    (``vehicles.service.set_status`` records ``"previous -> new"``); "ordered" by the order's creation."""
    dated: dict[str, date] = {ProductionStatus.ORDERED.value: order.created_at.date()}
    for at, detail in session.execute(
        select(OrderEvent.at, OrderEvent.detail)
        .where(OrderEvent.order_id == order.id, OrderEvent.kind == "status")
        .order_by(OrderEvent.at, OrderEvent.id)
    ):
        _previous, _arrow, status = (detail or "").rpartition(" -> ")
        dated[status.strip()] = at.date()
    codes = [status.value for status, _label in TRACKED_STATUSES]
    current = codes.index(order.production_status) if order.production_status in codes else -1
    return [
        TrackingStep(
            lazy_gettext(label),
            index <= current,
            index == current,
            dated.get(status.value) if index <= current else None,
        )
        for index, (status, label) in enumerate(TRACKED_STATUSES)
    ]


def _cars(session: Session, settings: Settings, account_id: int, today: date) -> list[CarView]:
    rows = session.execute(
        select(VehicleUser, Vehicle, VehicleModel)
        .join(Vehicle, Vehicle.id == VehicleUser.vehicle_id)
        .outerjoin(VehicleModel, VehicleModel.code == Vehicle.model_code)
        .where(VehicleUser.account_id == account_id, VehicleUser.ended_at.is_(None))
        .order_by(VehicleUser.linked_at, VehicleUser.id)
    ).all()
    cars: list[CarView] = []
    for link, vehicle, model in rows:
        offers = {
            offer.code: offer for offer in services_for(model.services if model else None, vehicle.country)
        }
        car = CarView(vehicle, model, link.role)
        car.services = [
            (row, offers.get(row.service_code)) for row in active_services(session, vehicle.id, today)
        ]
        if model is not None and model.requires_security_pin:
            car.pin_state = _pin_state(session, account_id)
        car.plugs_in = model is not None and model.powertrain in charging_contracts.PLUG_IN_POWERTRAINS
        if car.plugs_in:
            car.charging = charging_contracts.live_contract(session, vehicle.id)
            if car.charging is not None:
                car.charging_cards = charging_cards.cards_of(session, car.charging.id)
        order = session.get(Order, vehicle.order_id) if vehicle.order_id is not None else None
        if order is not None and order.country in settings.order_tracking_countries:
            car.cancelled = order.production_status == ProductionStatus.CANCELLED
            car.tracking = _tracking(session, order)
        cars.append(car)
    return cars


def _open_activations(
    session: Session, account_id: int, now: datetime
) -> list[tuple[Invitation, Order, VehicleModel]]:
    """This ID's activations that are valid and not finished yet."""
    rows = session.execute(
        select(Invitation, Order, VehicleModel)
        .join(Order, Order.id == Invitation.order_id)
        .join(VehicleModel, VehicleModel.code == Order.model_code)
        .where(Invitation.account_id == account_id, Invitation.completed_at.is_(None))
        .order_by(Invitation.id)
    ).all()
    return [
        (invitation, order, model)
        for invitation, order, model in rows
        if link_state(invitation, order, now) is LinkState.VALID
    ]


@router.get("/vehicles")
def my_vehicles(request: Request, session: Db, me: Me) -> Response:
    now = utcnow()
    account = me.account
    return render(
        request,
        "activation/my_vehicles.html",
        {
            "cars": _cars(session, settings_of(request), account.id, now.date()),
            "activations": _open_activations(session, account.id, now),
            # /activate works only with the invitation's cookie (set when its emailed link was opened).
            "has_invite_cookie": bool(request.cookies.get(INVITE_COOKIE)),
            "signed_in_as": account.email,
            "card_states": {
                state: lazy_gettext(label) for state, label in charging_cards.STATE_LABELS.items()
            },
        },
        language=account.language,
    )
