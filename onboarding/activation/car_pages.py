"""The activation's car steps (SPEC §3.4): the connected services of the model for the order's country,
activated for the car at once; then the car linked to the buyer's ID as its primary user, at once when
the order has a VIN, otherwise when the factory assigns it (``vehicles.vehicle_link``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from onboarding.activation import invitations, steps
from onboarding.activation.invitations import LinkView
from onboarding.activation.models import Invitation
from onboarding.activation.pages import Csrf, Db, _advance, _context, _language, at_step, step_page
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError
from onboarding.core.i18n import N_
from onboarding.identity.models import Account
from onboarding.web.rendering import render
from vehicles.catalogue import ServiceOffer, services_for
from vehicles.links import vehicle_for_order
from vehicles.service import add_event
from vehicles.subscriptions import activate_services
from vehicles.vehicle_link import LinkOutcome, link_primary_for_order

router = APIRouter(include_in_schema=False)

AtServicesStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.SERVICES))]
AtVehicleStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.VEHICLE))]


def _offers(view: LinkView) -> list[ServiceOffer]:
    assert view.order is not None
    return services_for(view.model.services if view.model else None, view.order.country)


# --- connected services -------------------------------------------------------------------------------


def _services_page(
    request: Request,
    view: LinkView,
    account: Account,
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    return step_page(
        request,
        view,
        account,
        "activation/services_step.html",
        {"offers": _offers(view)},
        errors=errors,
        status=status,
    )


@router.get("/activate/services")
def services_step(request: Request, at: AtServicesStep) -> Response:
    view, account = at
    return _services_page(request, view, account)


@router.post("/activate/services", dependencies=[Csrf])
def services_submit(
    request: Request, session: Db, at: AtServicesStep, confirm: Annotated[str, Form(max_length=10)] = ""
) -> Response:
    view, account = at
    assert view.order is not None
    offers = _offers(view)
    if offers and confirm != "yes":
        error = FieldError("confirm", N_("Confirm to activate the services."))
        return _services_page(request, view, account, errors=[error], status=422)
    now = utcnow()
    # The car is made now, also without services: its VIN, when the factory assigns it, then links it.
    vehicle = vehicle_for_order(session, view.order, now=now)
    activate_services(session, vehicle, offers, account_id=account.id, now=now)
    if invitations.mark_step_done(session, view, Invitation.services_done_at, now):
        add_event(
            session, view.order, "services_activated", "buyer", now, ", ".join(o.code for o in offers) or None
        )
    return _advance(session, view)


# --- the vehicle link --------------------------------------------------------------------------------


def _vehicle_page(
    request: Request, view: LinkView, account: Account, *, problem: LinkOutcome | None = None
) -> Response:
    context: dict[str, Any] = {**_context(request, view), "problem": problem, "signed_in_as": account.email}
    return render(
        request,
        "activation/vehicle_step.html",
        context,
        status=409 if problem is not None else 200,
        language=_language(view),
    )


def _link(request: Request, session: Session, view: LinkView, account: Account) -> Response | None:
    """With a VIN: the car linked to the ID as primary user and the step done (the redirect onwards),
    or the page that says why it could not be linked. Without a VIN: None."""
    assert view.order is not None
    now = utcnow()
    outcome = link_primary_for_order(session, view.order, account.id, now=now)
    if outcome is LinkOutcome.NO_VIN:
        return None
    if outcome in (LinkOutcome.LINKED, LinkOutcome.ALREADY):
        invitations.mark_step_done(session, view, Invitation.vehicle_done_at, now)
        if outcome is LinkOutcome.LINKED:  # a racing tab's link, or the VIN update's, is on record already
            add_event(session, view.order, "vehicle_linked", "buyer", now, view.order.vin)
        return _advance(session, view)
    session.commit()  # the vehicle made for the order, if this made it
    return _vehicle_page(request, view, account, problem=outcome)


@router.get("/activate/vehicle")
def vehicle_step(request: Request, session: Db, at: AtVehicleStep) -> Response:
    view, account = at
    assert view.order is not None
    linked = _link(request, session, view, account)
    if linked is not None:
        return linked
    return _vehicle_page(request, view, account)


@router.post("/activate/vehicle", dependencies=[Csrf])
def vehicle_continue(request: Request, session: Db, at: AtVehicleStep) -> Response:
    """The buyer has read that the link follows the VIN (or that support must help): the flow goes on.
    A VIN that arrived since the page was shown links now."""
    view, account = at
    assert view.order is not None
    now = utcnow()
    outcome = link_primary_for_order(session, view.order, account.id, now=now)
    # The car exists for ``vehicle_link.link_when_vin_known``, which links it when the VIN comes.
    vehicle_for_order(session, view.order, now=now)
    won = invitations.mark_step_done(session, view, Invitation.vehicle_done_at, now)
    if outcome is LinkOutcome.LINKED:
        add_event(session, view.order, "vehicle_linked", "buyer", now, view.order.vin)
    elif won and outcome is not LinkOutcome.ALREADY:
        add_event(session, view.order, "vehicle_link_pending", "buyer", now, str(outcome))
    return _advance(session, view)
