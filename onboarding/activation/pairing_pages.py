"""Pairing a car without an order on the web (SPEC §3.5): the signed-in ID enters the code the head unit
shows (``vehicles.incar.pairing``). A car without a live primary user gets this ID as its primary user;
a car that has one, or that no order names (its model unknown), goes to the market's support as a
support request: they check the registration papers and link it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from onboarding.activation import support_requests
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import lazy_gettext
from onboarding.identity import web_sessions
from onboarding.identity.dependencies import rate_limits, signed_in
from onboarding.identity.ratelimit import TooManyAttempts, refusal_status
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect
from onboarding.web.rendering import message_page, render
from onboarding.web.transactions import commit, db_session
from vehicles.incar import pairing
from vehicles.secondary import model_name

router = APIRouter(include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Me = Annotated[web_sessions.CurrentSession, Depends(signed_in)]
Csrf = Depends(csrf_protect)

# Per ID and per address: 20^8 codes, each living ten minutes, are not found at this pace.
PAIRING_LIMIT = "5/minute;20/hour"
SUPPORT_KIND = "vehicle_pairing"


def _form(
    request: Request,
    me: web_sessions.CurrentSession,
    *,
    code: str = "",
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    context = {
        "values": {"code": code},
        "errors": by_field(errors or []),
        "minutes": settings_of(request).pairing_code_valid_minutes,
    }
    return render(
        request, "activation/vehicle_pair.html", context, status=status, language=me.account.language
    )


@router.get("/vehicles/pair")
def pair_page(request: Request, me: Me) -> Response:
    return _form(request, me)


@router.post("/vehicles/pair", dependencies=[Csrf])
def pair_submit(
    request: Request,
    session: Db,
    me: Me,
    background: BackgroundTasks,
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    settings = settings_of(request)
    now, ip = utcnow(), client_ip(request)
    account = me.account
    try:
        rate_limits(request).require(
            "code", (PAIRING_LIMIT, "pairing-account", str(account.id)), (PAIRING_LIMIT, "pairing-ip", ip)
        )
        paired = pairing.redeem(session, code, account, now=now, ip=ip)
    except ValidationFailed as exc:
        if isinstance(exc, TooManyAttempts):
            session.rollback()
        else:
            commit(request, session)  # the refused code's audit event stays
        return _form(request, me, code=code, errors=exc.errors, status=refusal_status(exc))
    language = account.language
    if paired.outcome in (pairing.PairingOutcome.LINKED, pairing.PairingOutcome.ALREADY_PRIMARY):
        commit(request, session)
        name = model_name(session, paired.vehicle) if paired.vehicle is not None else paired.vin
        return message_page(
            request,
            lazy_gettext("The car was added to your ID"),
            [
                lazy_gettext(
                    "You are now the primary user of this %(model)s (VIN %(vin)s).",
                    model=name,
                    vin=paired.vin,
                )
            ],
            [("/vehicles", lazy_gettext("My vehicles"))],
            language=language,
        )
    situation = (
        "The car has another primary user"
        if paired.outcome is pairing.PairingOutcome.PRIMARY_TAKEN
        else "No order names this VIN"
    )
    country = paired.vehicle.country if paired.vehicle is not None else account.country
    request_row = support_requests.record_request(
        session,
        settings,
        kind=SUPPORT_KIND,
        now=now,
        country=country,
        contact_email=account.email,
        order=paired.order,
        message=f"Pairing code entered for VIN {paired.vin} by ID {account.id}: {situation}. "
        "Check the registration papers before linking the car.",
    )
    commit(request, session, background)
    return message_page(
        request,
        lazy_gettext("Support will check your papers"),
        [
            lazy_gettext(
                "This car cannot be added with a code alone. Your request (number %(id)s) went to %(email)s: "
                "they will ask for your ID document and the car's registration papers, then link the car.",
                id=request_row.id,
                email=request_row.routed_to,
            )
        ],
        [("/vehicles", lazy_gettext("My vehicles"))],
        language=language,
    )
