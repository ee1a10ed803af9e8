"""The charging service on the web (SPEC §3.6): the activation's offer for plug-in hybrids and electric
cars (``/activate/charging``: book or not now), and later from My vehicles: booking, and blocking a
lost card (which orders a replacement). Primary-only routes depend on ``primary_user_of_vehicle``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from onboarding.activation import invitations, steps
from onboarding.activation.invitations import LinkView
from onboarding.activation.models import Invitation
from onboarding.activation.pages import Csrf, Db, _advance, at_step, step_page
from onboarding.activation.secondary_pages import VehicleAccess, primary_user_of_vehicle
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.identity.models import Account
from onboarding.web.app_state import settings_of
from onboarding.web.problems import error_page
from vehicles.charging import cards, contracts
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.links import vehicle_for_order
from vehicles.service import add_event

router = APIRouter(include_in_schema=False)

AtChargingStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.CHARGING))]
Primary = Annotated[VehicleAccess, Depends(primary_user_of_vehicle)]


# --- the activation's step ------------------------------------------------------------------------------


def _charging_page(
    request: Request,
    session: Db,
    view: LinkView,
    account: Account,
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    assert view.order is not None
    vehicle = vehicle_for_order(session, view.order, now=utcnow())
    context: dict[str, Any] = {
        # Booking needs the car linked to the ID as its primary user (the VIN may still be missing).
        "can_book": contracts.may_book(session, vehicle, account.id),
        "delivery_days": settings_of(request).charging_card_delivery_days,
    }
    return step_page(
        request, view, account, "activation/charging_step.html", context, errors=errors, status=status
    )


@router.get("/activate/charging")
def charging_step(request: Request, session: Db, at: AtChargingStep) -> Response:
    view, account = at
    return _charging_page(request, session, view, account)


@router.post("/activate/charging", dependencies=[Csrf])
def charging_submit(
    request: Request, session: Db, at: AtChargingStep, choice: Annotated[str, Form(max_length=10)] = ""
) -> Response:
    view, account = at
    assert view.order is not None
    if choice not in ("book", "decline"):
        error = FieldError("choice", N_("Choose whether to book the charging service now."))
        return _charging_page(request, session, view, account, errors=[error], status=422)
    now = utcnow()
    vehicle = vehicle_for_order(session, view.order, now=now)
    if choice == "book" and not contracts.may_book(session, vehicle, account.id):
        if contracts.live_contract(session, vehicle.id) is None:
            error = FieldError(
                "choice", N_("You can book the charging service once your car is linked to your ID.")
            )
            return _charging_page(request, session, view, account, errors=[error], status=409)
        choice = "decline"  # booked already (another tab): nothing more to book
    # Claim the step first: of two tabs only one books.
    if not invitations.mark_step_done(session, view, Invitation.charging_done_at, now):
        return _advance(session, view)
    if choice == "book":
        try:
            contract, created = contracts.book(session, settings_of(request), vehicle, account, now=now)
        except ValidationFailed as exc:
            session.rollback()
            return _charging_page(request, session, view, account, errors=exc.errors, status=409)
        if created:
            add_event(session, view.order, "charging_booked", "buyer", now, contract.emaid)
    return _advance(session, view)


# --- My vehicles: booking later, blocking a lost card ---------------------------------------------------


@router.post("/vehicles/{vehicle_id}/charging", dependencies=[Csrf])
def book_charging(request: Request, session: Db, access: Primary) -> Response:
    try:
        contracts.book(session, settings_of(request), access.vehicle, access.account, now=utcnow())
    except ValidationFailed as exc:
        session.rollback()
        return error_page(request, 409, exc.errors[0].message)
    session.commit()
    return RedirectResponse("/vehicles", status_code=303)


@router.post("/vehicles/{vehicle_id}/charging/cards/{card_id}/block", dependencies=[Csrf])
def block_card(request: Request, session: Db, access: Primary, card_id: int) -> Response:
    card = session.get(ChargingCard, card_id)
    contract = session.get(ChargingContract, card.contract_id) if card is not None else None
    if card is None or contract is None or contract.vehicle_id != access.vehicle.id:
        return error_page(request, 404)
    cards.block(
        session,
        settings_of(request),
        card,
        now=utcnow(),
        actor="self",
        account_id=access.account.id,
    )
    session.commit()
    return RedirectResponse("/vehicles", status_code=303)
