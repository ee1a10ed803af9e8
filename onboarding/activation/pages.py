"""The buyer's pages: invitation link, activation steps, link problems, new-invitation requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from notifications.support import contact_for, directory_countries
from onboarding.activation import invitations, steps
from onboarding.activation.invitations import LinkState, LinkView
from onboarding.activation.support_requests import request_new_invitation, request_phone_help
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import KNOWN_COUNTRIES
from onboarding.core.i18n import Text
from onboarding.identity import pin, sms_codes, web_sessions
from onboarding.identity.accounts import create_account, find_account
from onboarding.identity.dependencies import PASSWORD_REQUESTS, session_of
from onboarding.identity.models import Account
from onboarding.identity.pages import IdForm, code_problem, password_login, send_sms_code, start_session
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect
from onboarding.web.problems import AnsweredInstead
from onboarding.web.rendering import render
from onboarding.web.transactions import commit, db_session, in_one_thread
from vehicles.catalogue import services_for
from vehicles.service import add_event

router = APIRouter(include_in_schema=False)

INVITE_COOKIE = "onb_invite"
Db = Annotated[Session, Depends(db_session)]
Csrf = Depends(csrf_protect)

_STATUS = {LinkState.UNKNOWN: 404, LinkState.EXPIRED: 410, LinkState.REVOKED: 410, LinkState.USED: 410}


def _current(request: Request, session: Session) -> tuple[LinkView, str]:
    token = request.cookies.get(INVITE_COOKIE, "")
    return invitations.resolve_link(session, token, now=utcnow()), token


def _context(request: Request, view: LinkView) -> dict[str, Any]:
    settings = settings_of(request)
    country = view.order.country if view.order else None
    return {
        "view": view,
        "order": view.order,
        "dealer": view.dealer,
        "model": view.model,
        "support": contact_for(settings, country, view.dealer),
    }


def _language(view: LinkView) -> str | None:
    return view.invitation.language if view.invitation else None


def step_page(
    request: Request,
    view: LinkView,
    account: Account,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    """A step of the activation for the signed-in ``account``: the link's context, the step's own
    ``context``, the field errors, in the invitation's language."""
    return render(
        request,
        template,
        {
            **_context(request, view),
            "errors": by_field(errors or []),
            "signed_in_as": account.email,
            **(context or {}),
        },
        status=status,
        language=_language(view),
    )


def _link_problem(request: Request, view: LinkView, token: str) -> Response:
    return render(
        request,
        "activation/link_problem.html",
        {
            **_context(request, view),
            "state": view.state.value,
            "token": token,
            "countries": directory_countries(),
        },
        status=_STATUS.get(view.state, 410),
        language=_language(view),
    )


@router.get("/")
def home(request: Request) -> Response:
    return render(request, "activation/home.html", {})


@router.get("/i/{token}")
def open_link(token: str, request: Request, session: Db) -> Response:
    """The email's link: check it, remember it in a cookie and move it out of the address bar."""
    view = invitations.resolve_link(session, token, now=utcnow())
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    invitations.mark_opened(session, view, now=utcnow())
    session.commit()
    response = RedirectResponse("/activate", status_code=303)
    max_age = None
    if view.invitation and view.invitation.expires_at:
        max_age = max(int((view.invitation.expires_at - utcnow()).total_seconds()), 0)
    response.set_cookie(
        INVITE_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=settings_of(request).secure_cookies,
        path="/",
    )
    return response


def _next_url(session: Session, view: LinkView) -> str:
    assert view.invitation is not None
    return steps.step_url(steps.next_step(session, view.invitation, view.model))


@router.get("/activate")
def landing(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is LinkState.USED:
        return RedirectResponse("/activate/done", status_code=303)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    return render(
        request,
        "activation/landing.html",
        {**_context(request, view), "next_url": _next_url(session, view)},
        language=_language(view),
    )


def _buyer(request: Request, session: Session, view: LinkView) -> Account | None:
    """The signed-in person, if they are the ID this invitation is activating."""
    current = session_of(request, session)
    if current is None or view.invitation is None or current.account.id != view.invitation.account_id:
        return None
    return current.account


@router.get("/activate/id")
def id_step(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None
    if view.invitation.account_id is not None:
        return RedirectResponse(_next_url(session, view), status_code=303)
    current = session_of(request, session)
    if current is not None and current.account.email == view.invitation.email:
        # Logged in (perhaps after two-step verification) as the invitation's ID: the car joins it.
        invitations.attach_account(session, view, current.account, now=utcnow(), created=False)
        return _advance(session, view)
    return _id_form(request, session, view)


def _id_form(
    request: Request,
    session: Session,
    view: LinkView,
    *,
    errors: list[FieldError] | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    assert view.invitation is not None and view.order is not None
    existing = find_account(session, view.invitation.email) is not None
    order = view.order
    if existing:
        return render(
            request,
            "activation/login_existing.html",
            {**_context(request, view), "email": view.invitation.email, "errors": by_field(errors or [])},
            status=status,
            language=_language(view),
        )
    defaults = {
        "first_name": order.buyer_first_name,
        "last_name": order.buyer_last_name,
        "country": order.country,
        "language": view.invitation.language,
    }
    return render(
        request,
        "activation/create_id.html",
        {
            **_context(request, view),
            "email": view.invitation.email,
            "values": {**defaults, **(values or {})},
            "errors": by_field(errors or []),
            "countries": sorted(KNOWN_COUNTRIES),
        },
        status=status,
        language=_language(view),
    )


@router.post("/activate/id", dependencies=[Csrf])
def create_id(request: Request, session: Db, form: Annotated[IdForm, Form()]) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None and view.order is not None
    if view.invitation.account_id is not None:
        return RedirectResponse(_next_url(session, view), status_code=303)
    settings = settings_of(request)
    now = utcnow()
    # The address is the invitation's, proven by the link: the form cannot change it.
    data = form.new_account(email=view.invitation.email, phone=view.order.buyer_phone)
    try:
        account = create_account(
            session, data, settings=settings, now=now, via="invitation", email_verified=True
        )
    except ValidationFailed as exc:
        return _id_form(request, session, view, errors=exc.errors, values=form.shown_again(), status=422)
    invitations.attach_account(session, view, account, now=now, created=True)
    step = steps.next_step(session, view.invitation, view.model)
    if step is None:
        invitations.complete_activation(session, view, now=now)
    # The new ID is signed in: its email is proven by the link and its password was just chosen.
    return start_session(
        request, session, account, stage=web_sessions.FULL, location=steps.step_url(step), method="new_id"
    )


@router.post("/activate/login", dependencies=[Csrf])
async def login_existing(request: Request, password: Annotated[str, Form(max_length=1024)] = "") -> Response:
    """The invitation's address has an ID: the same login as everywhere (lockout, rate limits, two-step
    verification, one per core like ``/login``), then back to the flow, which links the car to it."""

    def work(session: Session) -> Response:
        view, token = _current(request, session)
        if view.state is not LinkState.VALID:
            return _link_problem(request, view, token)
        assert view.invitation is not None
        return password_login(
            request,
            session,
            email=view.invitation.email,
            password=password,
            next_url="/activate/id",
            form={"email_fixed": True, "action": "/activate/login"},
        )

    return await in_one_thread(request, work, limiter=PASSWORD_REQUESTS)


def _advance(session: Session, view: LinkView) -> Response:
    assert view.invitation is not None
    step = steps.next_step(session, view.invitation, view.model)
    if step is None:
        invitations.complete_activation(session, view, now=utcnow())
    elif view.order is not None:
        invitations.record_stage(session, view.order, now=utcnow())
    session.commit()
    return RedirectResponse(steps.step_url(step), status_code=303)


def at_step(name: str) -> Callable[[Request, Session], tuple[LinkView, Account]]:
    """A dependency for the pages of a step after the ID: the link and its signed-in buyer, when the
    link is valid and this is the step due; otherwise the answer instead (``AnsweredInstead``)."""
    step = steps.step(name)

    def buyer_at_step(request: Request, session: Db) -> tuple[LinkView, Account]:
        view, token = _current(request, session)
        if view.state is not LinkState.VALID:
            if view.state is LinkState.USED:
                raise AnsweredInstead(RedirectResponse(steps.DONE_URL, status_code=303))
            raise AnsweredInstead(_link_problem(request, view, token))
        assert view.invitation is not None
        due = steps.next_step(session, view.invitation, view.model)
        if due == steps.ID:
            raise AnsweredInstead(RedirectResponse(steps.step_url(steps.ID), status_code=303))
        account = _buyer(request, session, view)
        if account is None:
            raise AnsweredInstead(RedirectResponse(f"/login?next={step.url}", status_code=303))
        if due != step.name:
            raise AnsweredInstead(RedirectResponse(steps.step_url(due), status_code=303))
        return view, account

    return buyer_at_step


AtPhoneStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.PHONE))]
AtPinStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.PIN))]


# --- mobile number ------------------------------------------------------------------------------------


def _number_to_verify(view: LinkView) -> str:
    """The activation verifies the number on the order, which the dealer (or support, on the buyer's
    request) can correct: also for an existing ID that has no number or an unverified one. Verified, it
    becomes the ID's number (``sms_codes.verify_phone``)."""
    assert view.order is not None
    return view.order.buyer_phone


def _phone_page(
    request: Request,
    session: Session,
    view: LinkView,
    account: Account,
    *,
    errors: list[FieldError] | None = None,
    message: Text | None = None,
    status: int = 200,
) -> Response:
    state = sms_codes.state(
        session, settings_of(request), account.id, sms_codes.PHONE, _number_to_verify(view), now=utcnow()
    )
    return step_page(
        request,
        view,
        account,
        "activation/phone_step.html",
        {"sms": state, "message": message},
        errors=errors,
        status=status,
    )


@router.get("/activate/phone")
def phone_step(request: Request, session: Db, at: AtPhoneStep) -> Response:
    view, account = at
    return _phone_page(request, session, view, account)


@router.post("/activate/phone/send", dependencies=[Csrf])
def phone_send(request: Request, session: Db, background: BackgroundTasks, at: AtPhoneStep) -> Response:
    view, account = at
    message, status = send_sms_code(
        request, session, background, account, purpose=sms_codes.PHONE, phone=_number_to_verify(view)
    )
    return _phone_page(request, session, view, account, message=message, status=status)


@router.post("/activate/phone", dependencies=[Csrf])
def phone_check(
    request: Request, session: Db, at: AtPhoneStep, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    view, account = at
    assert view.order is not None
    now = utcnow()
    outcome = sms_codes.verify_phone(
        session,
        settings_of(request),
        account,
        phone=_number_to_verify(view),
        code=code,
        now=now,
        ip=client_ip(request),
    )
    if outcome is not sms_codes.CheckOutcome.OK:
        session.commit()  # keeps the failure count
        return _phone_page(
            request, session, view, account, errors=[FieldError("code", code_problem(outcome))], status=422
        )
    add_event(session, view.order, "phone_verified", "buyer", now)
    return _advance(session, view)


@router.get("/activate/phone/wrong")
def wrong_number_form(request: Request, at: AtPhoneStep) -> Response:
    view, _account = at
    return render(
        request,
        "activation/wrong_number.html",
        {
            **_context(request, view),
            "masked": sms_codes.mask_phone(_number_to_verify(view)),
            "errors": {},
            "values": {},
        },
        language=_language(view),
    )


@router.post("/activate/phone/wrong", dependencies=[Csrf])
def wrong_number(
    request: Request,
    session: Db,
    background: BackgroundTasks,
    at: AtPhoneStep,
    kind: Annotated[str, Form(max_length=20)] = "wrong_phone",
    message: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """ "Wrong number?" or "no SMS?": a support request routed to the buyer's country or dealer, who can
    correct the number (audited)."""
    view, account = at
    support_request = request_phone_help(
        session,
        settings_of(request),
        now=utcnow(),
        view=view,
        contact_email=account.email,
        kind=kind,
        message=message,
    )
    commit(request, session, background)
    return render(
        request,
        "activation/request_received.html",
        {**_context(request, view), "request_id": support_request.id, "kind": support_request.kind},
        language=_language(view),
    )


# --- security PIN ------------------------------------------------------------------------------------


@router.get("/activate/pin")
def pin_step(request: Request, at: AtPinStep) -> Response:
    view, account = at
    return _pin_page(request, view, account)


def _pin_page(
    request: Request,
    view: LinkView,
    account: Account,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    return step_page(
        request, view, account, "identity/pin.html", {"action": "/activate/pin"}, errors=errors, status=status
    )


@router.post("/activate/pin", dependencies=[Csrf])
def pin_submit(
    request: Request,
    session: Db,
    at: AtPinStep,
    pin_value: Annotated[str, Form(alias="pin", max_length=20)] = "",
    pin_confirmation: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    view, account = at
    assert view.order is not None
    now = utcnow()
    try:
        pin.set_pin(
            session,
            settings_of(request),
            account,
            pin_value,
            pin_confirmation,
            now=now,
            ip=client_ip(request),
        )
    except ValidationFailed as exc:
        return _pin_page(request, view, account, exc.errors, status=422)
    add_event(session, view.order, "pin_set", "buyer", now)
    return _advance(session, view)


@router.get("/activate/done")
def done(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.USED:
        return (
            _link_problem(request, view, token)
            if view.state is not LinkState.VALID
            else RedirectResponse("/activate", status_code=303)
        )
    assert view.order is not None
    offers = services_for(view.model.services if view.model else None, view.order.country)
    return render(
        request,
        "activation/done.html",
        # Without a login in the car only the anonymous set works (e.g. navigation): named from the offer.
        {
            **_context(request, view),
            "anonymous_services": [offer for offer in offers if offer.works_without_login],
        },
        language=_language(view),
    )


@router.get("/invitation/request")
def request_form(request: Request) -> Response:
    return render(
        request,
        "activation/request_invitation.html",
        {"countries": directory_countries(), "errors": {}, "values": {}, "support": None},
    )


@router.post("/invitation/request", dependencies=[Csrf])
def request_invitation(
    request: Request,
    session: Db,
    token: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    country: Annotated[str, Form()] = "",
    message: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """A new invitation is asked for: recorded as a support request routed by the directory."""
    settings = settings_of(request)
    now = utcnow()
    view = invitations.resolve_link(session, token, now=now) if token else LinkView(LinkState.UNKNOWN)
    try:
        support_request = request_new_invitation(
            session, settings, now=now, view=view, email=email, country=country, message=message
        )
    except ValidationFailed as exc:
        return render(
            request,
            "activation/request_invitation.html",
            {
                "countries": directory_countries(),
                "errors": by_field(exc.errors),
                "values": {"email": email, "country": country, "message": message},
                "support": None,
            },
            status=422,
        )
    session.commit()
    contact = contact_for(settings, support_request.country, view.dealer)
    return render(
        request,
        "activation/request_received.html",
        {"support": contact, "request_id": support_request.id},
        language=_language(view),
    )
