"""The buyer's pages: invitation link, activation steps, link problems, new-invitation requests."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from notifications.support import directory_countries
from onboarding import activation, invitations
from onboarding.accounts import NewAccount, create_account, find_account, verify_password
from onboarding.clock import utcnow
from onboarding.errors import FieldError, ValidationFailed
from onboarding.i18n import N_
from onboarding.invitations import LinkState, LinkView
from onboarding.support_requests import request_new_invitation
from onboarding.web import csrf_protect, db_session, render, settings_of
from vehicles.service import KNOWN_COUNTRIES

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
        "support": invitations.contact_for(settings, country, view.dealer),
    }


def _language(view: LinkView) -> str | None:
    return view.invitation.language if view.invitation else None


def _link_problem(request: Request, view: LinkView, token: str) -> Response:
    return render(
        request,
        "link_problem.html",
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
    return render(request, "home.html", {})


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


def _step_url(step: str | None) -> str:
    return {"id": "/activate/id", None: "/activate/done"}[step]


@router.get("/activate")
def landing(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is LinkState.USED:
        return RedirectResponse("/activate/done", status_code=303)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None
    step = activation.next_step(view.invitation)
    return render(
        request,
        "landing.html",
        {**_context(request, view), "next_url": _step_url(step)},
        language=_language(view),
    )


@router.get("/activate/id")
def id_step(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None
    if view.invitation.account_id is not None:
        return RedirectResponse(_step_url(activation.next_step(view.invitation)), status_code=303)
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
    defaults = {
        "first_name": order.buyer_first_name,
        "last_name": order.buyer_last_name,
        "country": order.country,
        "language": view.invitation.language,
    }
    return render(
        request,
        "login_existing.html" if existing else "create_id.html",
        {
            **_context(request, view),
            "email": view.invitation.email,
            "values": {**defaults, **(values or {})},
            "errors": _by_field(errors or []),
            "countries": sorted(KNOWN_COUNTRIES),
        },
        status=status,
        language=_language(view),
    )


def _by_field(errors: list[FieldError]) -> dict[str, list[FieldError]]:
    grouped: dict[str, list[FieldError]] = {}
    for error in errors:
        grouped.setdefault(error.field, []).append(error)
    return grouped


def _parse_date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return None


@router.post("/activate/id", dependencies=[Csrf])
def create_id(
    request: Request,
    session: Db,
    password: Annotated[str, Form()] = "",
    password_confirmation: Annotated[str, Form()] = "",
    first_name: Annotated[str, Form()] = "",
    last_name: Annotated[str, Form()] = "",
    birth_date: Annotated[str, Form()] = "",
    country: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "",
    accept_terms: Annotated[bool, Form()] = False,
    accept_privacy: Annotated[bool, Form()] = False,
) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None and view.order is not None
    if view.invitation.account_id is not None:
        return RedirectResponse(_step_url(activation.next_step(view.invitation)), status_code=303)
    settings = settings_of(request)
    now = utcnow()
    data = NewAccount(
        email=view.invitation.email,  # proven by the link; the form cannot change it
        password=password,
        password_confirmation=password_confirmation,
        first_name=first_name,
        last_name=last_name,
        birth_date=_parse_date(birth_date),
        country=country,
        language=language,
        accept_terms=accept_terms,
        accept_privacy=accept_privacy,
        phone=view.order.buyer_phone,
    )
    try:
        account = create_account(
            session, data, settings=settings, now=now, via="invitation", email_verified=True
        )
    except ValidationFailed as exc:
        errors = exc.errors
        if birth_date and data.birth_date is None:
            errors = [e for e in errors if e.field != "birth_date"]
            errors.append(FieldError("birth_date", N_("Use the form YYYY-MM-DD.")))
        values = {
            "accept_terms": accept_terms,
            "accept_privacy": accept_privacy,
            "first_name": first_name,
            "last_name": last_name,
            "birth_date": birth_date,
            "country": country,
            "language": language,
        }
        return _id_form(request, session, view, errors=errors, values=values, status=422)
    invitations.attach_account(session, view, account, now=now, created=True)
    return _advance(session, view)


@router.post("/activate/login", dependencies=[Csrf])
def login_existing(request: Request, session: Db, password: Annotated[str, Form()] = "") -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.VALID:
        return _link_problem(request, view, token)
    assert view.invitation is not None
    account = find_account(session, view.invitation.email)
    if not verify_password(account, password):
        session.rollback()
        return _id_form(
            request,
            session,
            view,
            status=401,
            errors=[FieldError("password", N_("That password is not correct."))],
        )
    assert account is not None
    invitations.attach_account(session, view, account, now=utcnow(), created=False)
    return _advance(session, view)


def _advance(session: Session, view: LinkView) -> Response:
    assert view.invitation is not None
    step = activation.next_step(view.invitation)
    if step is None:
        invitations.complete_activation(session, view, now=utcnow())
    session.commit()
    return RedirectResponse(_step_url(step), status_code=303)


@router.get("/activate/done")
def done(request: Request, session: Db) -> Response:
    view, token = _current(request, session)
    if view.state is not LinkState.USED:
        return (
            _link_problem(request, view, token)
            if view.state is not LinkState.VALID
            else RedirectResponse("/activate", status_code=303)
        )
    return render(request, "done.html", _context(request, view), language=_language(view))


@router.get("/invitation/request")
def request_form(request: Request) -> Response:
    return render(
        request,
        "request_invitation.html",
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
            "request_invitation.html",
            {
                "countries": directory_countries(),
                "errors": _by_field(exc.errors),
                "values": {"email": email, "country": country, "message": message},
                "support": None,
            },
            status=422,
        )
    session.commit()
    contact = invitations.contact_for(settings, support_request.country, view.dealer)
    return render(
        request,
        "request_received.html",
        {"support": contact, "request_id": support_request.id},
        language=_language(view),
    )
