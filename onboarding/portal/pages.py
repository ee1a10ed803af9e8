"""The staff portal's pages (SPEC §3.8): the invitation (choose a password), the login with its
mandatory authenticator (enrolled at the first login, with backup codes), the orders and what staff
do to them.

Every page but the login and invitation pages depends on ``staff_signed_in``, and every row it shows
comes through ``scope.scoped``: another dealer's order is a 404, exactly like one that does not exist."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.activation.models import SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_, lazy_gettext
from onboarding.identity.dependencies import rate_limits
from onboarding.identity.two_factor import qr_svg_data_uri
from onboarding.portal import (
    audit_log,
    imports,
    order_actions,
    orders,
    staff_sessions,
    statistics,
    support_inbox,
)
from onboarding.portal import staff as staff_service
from onboarding.portal.dependencies import (
    STAFF_COOKIE,
    current_staff,
    set_staff_cookie,
    staff_signed_in,
    staff_with_role,
)
from onboarding.portal.models import PortalImport, StaffMember, StaffRole, SupportRequestHandling
from onboarding.portal.scope import scoped
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect, safe_next
from onboarding.web.rendering import render
from onboarding.web.transactions import db_session
from vehicles.charging import cards as charging_cards
from vehicles.charging.models import ChargingCard
from vehicles.models import Order

router = APIRouter(include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Csrf = Depends(csrf_protect)
Staff = Annotated[StaffMember, Depends(staff_signed_in)]

LOGIN_FAILED = N_("The email address or password is not correct.")
LOGIN_LOCKED = N_(
    "The maximum number of failed login attempts has been reached. Your account is locked for "
    "%(minutes)s minutes to protect your security."
)
TOO_MANY = N_("Too many attempts. Wait a moment and try again.")
CODE_WRONG = N_("That code is not correct, or was already used.")


def _page(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> Response:
    staff = context.get("staff")
    language = staff.language if isinstance(staff, StaffMember) else None
    labels = {"stage_labels": orders.STAGE_LABELS, "status_labels": orders.STATUS_LABELS}
    return render(request, template, {"wide": True, **labels, **context}, status=status, language=language)


def _next(value: str | None) -> str:
    target = safe_next(value, "/portal/orders")
    return target if target.startswith("/portal/") else "/portal/orders"


# -- invitation: choose a password -----------------------------------------------------------------


@router.get("/portal/invite/{token}")
def invitation_page(request: Request, token: str, session: Db) -> Response:
    staff = staff_service.staff_for_invitation(session, token, now=utcnow())
    if staff is None:
        return _invitation_invalid(request)
    return _page(request, "portal/invite.html", {"invited": staff, "token": token, "errors": {}})


@router.post("/portal/invite/{token}", dependencies=[Csrf])
def accept_invitation(
    request: Request,
    token: str,
    session: Db,
    password: Annotated[str, Form(max_length=1000)] = "",
    password_confirmation: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    now = utcnow()
    staff = staff_service.staff_for_invitation(session, token, now=now)
    if staff is None:
        return _invitation_invalid(request)
    try:
        staff_service.accept_invitation(
            session,
            staff,
            password=password,
            confirmation=password_confirmation,
            now=now,
            ip=client_ip(request),
        )
    except ValidationFailed as exc:
        return _page(
            request,
            "portal/invite.html",
            {"invited": staff, "token": token, "errors": by_field(exc.errors)},
            status=422,
        )
    session.commit()
    return RedirectResponse("/portal/login?set=1", status_code=303)


def _invitation_invalid(request: Request) -> Response:
    return render(
        request,
        "web/message.html",
        {
            "title": lazy_gettext("This link no longer works"),
            "paragraphs": [
                lazy_gettext(
                    "The link is used, expired, or was replaced by a newer one. Ask the person who "
                    "invited you for a new invitation."
                )
            ],
        },
        status=410,
    )


# -- login ------------------------------------------------------------------------------------------


@router.get("/portal/login")
def login_page(request: Request, next: str | None = None, set: str | None = None) -> Response:
    message = lazy_gettext("Your password is set. Log in to continue.") if set else None
    return _page(request, "portal/login.html", {"next": _next(next), "message": message})


@router.post("/portal/login", dependencies=[Csrf])
def login(
    request: Request,
    session: Db,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    settings = settings_of(request)
    ip = client_ip(request)
    if not rate_limits(request).hit_all(
        (settings.rate_limit_login_per_ip, "staff-login-ip", ip),
        (settings.rate_limit_login_per_account, "staff-login-account", email.strip().lower()),
    ):
        failure = lazy_gettext(TOO_MANY)
        return _page(
            request,
            "portal/login.html",
            {"next": _next(next), "email": email, "failure": failure},
            status=429,
        )
    now = utcnow()
    result = staff_service.check_password(session, settings, email, password, now=now, ip=ip)
    if result.outcome is not staff_service.LoginOutcome.SECOND_FACTOR or result.staff is None:
        session.commit()  # the failure count and the audit entries
        locked = result.outcome is staff_service.LoginOutcome.LOCKED
        failure = lazy_gettext(LOGIN_LOCKED if locked else LOGIN_FAILED, minutes=settings.lockout_minutes)
        status = 423 if locked else 401
        return _page(
            request,
            "portal/login.html",
            {"next": _next(next), "email": email, "failure": failure},
            status=status,
        )
    token = staff_sessions.start(
        session,
        settings,
        result.staff,
        stage=staff_sessions.SECOND_FACTOR,
        old_token=request.cookies.get(STAFF_COOKIE),
        now=now,
        ip=ip,
    )
    session.commit()
    step = "/portal/login/verify" if staff_service.enrolled(result.staff) else "/portal/login/enrol"
    response = RedirectResponse(f"{step}?{urlencode({'next': _next(next)})}", status_code=303)
    set_staff_cookie(request, response, token)
    return response


def _halfway(request: Request, session: Session) -> StaffMember | None:
    """The staff member whose password was accepted in this browser, the second factor outstanding."""
    current = current_staff(request, session)
    if current is None or current.stage != staff_sessions.SECOND_FACTOR:
        return None
    return current.staff


def _to_login() -> Response:
    return RedirectResponse("/portal/login", status_code=303)


def _enrol_page(
    request: Request, session: Session, staff: StaffMember, *, next: str, failure: Any = None
) -> Response:
    settings = settings_of(request)
    secret = staff_service.enrolment_secret(settings, staff)
    session.commit()  # the pending secret, so the page shows the same one until it is confirmed
    uri = staff_service.provisioning_uri(settings, staff, secret)
    return _page(
        request,
        "portal/enrol.html",
        {
            "qr": qr_svg_data_uri(uri),
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "otpauth": uri,
            "next": next,
            "failure": failure,
        },
        status=401 if failure else 200,
    )


def _code_refused(request: Request, staff: StaffMember, *, now: datetime) -> Any:
    """The failure text and status when this staff member may not try a code now (too many tries,
    or locked): the same rule for the enrolment's first code as for every later login's."""
    settings = settings_of(request)
    if not rate_limits(request).hit(
        settings.rate_limit_login_per_account, "staff-second-factor", str(staff.id)
    ):
        return lazy_gettext(TOO_MANY), 429
    if staff_service.is_locked(staff, now):
        return lazy_gettext(LOGIN_LOCKED, minutes=settings.lockout_minutes), 423
    return None


@router.get("/portal/login/enrol")
def enrol_page(request: Request, session: Db, next: str | None = None) -> Response:
    staff = _halfway(request, session)
    if staff is None:
        return _to_login()
    if staff_service.enrolled(staff):
        return RedirectResponse("/portal/login/verify", status_code=303)
    return _enrol_page(request, session, staff, next=_next(next))


@router.post("/portal/login/enrol", dependencies=[Csrf])
def enrol(
    request: Request,
    session: Db,
    code: Annotated[str, Form(max_length=50)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    staff = _halfway(request, session)
    if staff is None:
        return _to_login()
    settings = settings_of(request)
    now = utcnow()
    refused = _code_refused(request, staff, now=now)
    if refused is not None:
        page = _enrol_page(request, session, staff, next=_next(next), failure=refused[0])
        page.status_code = refused[1]
        return page
    codes = staff_service.confirm_enrolment(session, settings, staff, code, now=now, ip=client_ip(request))
    if codes is None:
        staff_service.record_failure(
            session, settings, staff, now=now, ip=client_ip(request), factor="enrolment"
        )
        session.commit()
        return _enrol_page(request, session, staff, next=_next(next), failure=lazy_gettext(CODE_WRONG))
    response = _signed_in(request, session, staff, now=now)
    page = _page(
        request,
        "portal/backup_codes.html",
        {"codes": codes, "download": "\n".join(codes) + "\n", "next": _next(next), "staff": staff},
    )
    page.headers.append("set-cookie", response.headers["set-cookie"])
    return page


@router.get("/portal/login/verify")
def verify_page(request: Request, session: Db, next: str | None = None) -> Response:
    staff = _halfway(request, session)
    if staff is None:
        return _to_login()
    if not staff_service.enrolled(staff):
        return RedirectResponse("/portal/login/enrol", status_code=303)
    return _page(request, "portal/verify.html", {"next": _next(next)})


@router.post("/portal/login/verify", dependencies=[Csrf])
def verify(
    request: Request,
    session: Db,
    code: Annotated[str, Form(max_length=50)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    staff = _halfway(request, session)
    if staff is None:
        return _to_login()
    settings = settings_of(request)
    now = utcnow()
    refused = _code_refused(request, staff, now=now)
    if refused is not None:
        return _page(
            request, "portal/verify.html", {"next": _next(next), "failure": refused[0]}, status=refused[1]
        )
    if not staff_service.check_second_factor(session, settings, staff, code, now=now, ip=client_ip(request)):
        session.commit()
        return _page(
            request,
            "portal/verify.html",
            {"next": _next(next), "failure": lazy_gettext(CODE_WRONG)},
            status=401,
        )
    response = _signed_in(request, session, staff, now=now)
    response.headers["location"] = _next(next)
    return response


def _signed_in(request: Request, session: Session, staff: StaffMember, *, now: Any) -> Response:
    """Both factors passed: a new, full session (the half-way one ends) and the audit entry."""
    staff_service.passed(staff)
    token = staff_sessions.start(
        session,
        settings_of(request),
        staff,
        stage=staff_sessions.FULL,
        old_token=request.cookies.get(STAFF_COOKIE),
        now=now,
        ip=client_ip(request),
    )
    staff_service.record(session, "staff_signed_in", staff, now=now, ip=client_ip(request))
    session.commit()
    response = RedirectResponse("/portal/orders", status_code=303)
    set_staff_cookie(request, response, token)
    return response


@router.post("/portal/logout", dependencies=[Csrf])
def logout(request: Request, session: Db) -> Response:
    current = current_staff(request, session)
    if current is not None:
        staff_sessions.end(current.session, now=utcnow(), reason="signed_out")
        session.commit()
    response = RedirectResponse("/portal/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE, path="/portal")
    return response


# -- orders -----------------------------------------------------------------------------------------


@router.get("/portal")
def portal_home(staff: Staff) -> Response:
    return RedirectResponse("/portal/orders", status_code=303)


@router.get("/portal/orders")
def orders_page(request: Request, session: Db, staff: Staff) -> Response:
    params = dict(request.query_params)
    errors: dict[str, Any] = {}
    try:
        filters = orders.parse_filters(params)
    except ValidationFailed as exc:
        errors = by_field(exc.errors)
        filters = orders.OrderFilters()
    after_text = params.get("after", "")
    after = (
        int(after_text) if after_text.isascii() and after_text.isdigit() and len(after_text) <= 12 else None
    )
    page = orders.list_orders(session, staff, filters, after=after, today=utcnow().date())
    next_url = None
    if page.next_after is not None:
        next_url = "/portal/orders?" + urlencode({**filters.query(), "after": str(page.next_after)})
    return _page(
        request,
        "portal/orders.html",
        {
            "staff": staff,
            "page": page,
            "values": params,
            "errors": errors,
            "stages": orders.STAGES,
            "statuses": orders.STATUSES,
            "next_url": next_url,
            "first_url": "/portal/orders?" + urlencode(filters.query()) if after is not None else None,
        },
        status=422 if errors else 200,
    )


ACTION_DONE = {
    "resend": N_("A new invitation is on its way; the old link no longer works."),
    "email": N_("The email address is corrected and a new invitation is on its way."),
    "phone": N_("The mobile number is corrected; the buyer's next code goes there."),
    "cancel": N_("The order is cancelled."),
    "used_car": N_("The car is linked to its new owner; the previous users are told."),
}


def _order_page(
    request: Request,
    session: Session,
    staff: StaffMember,
    order: Order,
    *,
    done: str | None = None,
    failed: str | None = None,
    errors: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    now = utcnow()
    return _page(
        request,
        "portal/order.html",
        {
            "staff": staff,
            "order": order,
            "stage": orders.shown_stage(order.onboarding_stage, order.invite_after, now.date()),
            "timeline": orders.timeline(session, order, now=now),
            "message": lazy_gettext(ACTION_DONE[done]) if done in ACTION_DONE else None,
            "failed": failed,
            "errors": errors or {},
            "values": values or {},
        },
        status=422 if failed else 200,
    )


def _not_found(request: Request, staff: StaffMember) -> Response:
    return _page(request, "portal/not_found.html", {"staff": staff}, status=404)


@router.get("/portal/orders/{order_number}")
def order_page(
    request: Request, order_number: str, session: Db, staff: Staff, done: str | None = None
) -> Response:
    order = orders.order_in_scope(session, staff, order_number)
    if order is None:
        return _not_found(request, staff)
    return _order_page(request, session, staff, order, done=done)


@router.post("/portal/orders/{order_number}/{action}", dependencies=[Csrf])
def order_action(
    request: Request,
    order_number: str,
    action: str,
    session: Db,
    staff: Staff,
    reason: Annotated[str, Form(max_length=2000)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
    papers_checked: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    order = orders.order_in_scope(session, staff, order_number)
    if order is None or action not in ACTION_DONE:
        return _not_found(request, staff)
    now = utcnow()
    try:
        if action == "resend":
            order_actions.resend_invitation(session, staff, order, reason=reason, now=now)
        elif action == "email":
            order_actions.correct_email(session, staff, order, email=email, reason=reason, now=now)
        elif action == "phone":
            order_actions.correct_phone(session, staff, order, phone=phone, reason=reason, now=now)
        elif action == "used_car":
            order_actions.link_used_car(
                session,
                settings_of(request),
                staff,
                order,
                email=email,
                papers_checked=bool(papers_checked),
                reason=reason,
                now=now,
            )
        else:
            order_actions.cancel_order(session, staff, order, reason=reason, now=now)
    except ValidationFailed as exc:
        session.rollback()
        order = orders.order_in_scope(session, staff, order_number)
        assert order is not None
        values = {"reason": reason, "email": email, "phone": phone, "papers_checked": papers_checked}
        return _order_page(
            request, session, staff, order, failed=action, errors=by_field(exc.errors), values=values
        )
    session.commit()
    return RedirectResponse(f"/portal/orders/{quote(order.order_number)}?done={action}", status_code=303)


# -- support requests -------------------------------------------------------------------------------

REQUEST_DONE = {
    "take": N_("The request is yours now."),
    "note": N_("The note is saved."),
    "done": N_("The request is done."),
}


def _request_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


@router.get("/portal/requests")
def requests_page(request: Request, session: Db, staff: Staff, status: str | None = None) -> Response:
    rows = support_inbox.inbox(session, staff, status=status)
    return _page(
        request,
        "portal/requests.html",
        {
            "staff": staff,
            "rows": rows,
            "status": status if status in support_inbox.STATUSES else "",
            "statuses": support_inbox.STATUSES,
            "request_status_labels": support_inbox.STATUS_LABELS,
            "kind_labels": support_inbox.KIND_LABELS,
        },
    )


def _request_page(
    request: Request,
    session: Session,
    staff: StaffMember,
    support_request: SupportRequest,
    *,
    done: str | None = None,
    errors: dict[str, Any] | None = None,
    note: str = "",
) -> Response:
    order = session.get(Order, support_request.order_id) if support_request.order_id else None
    card = (
        session.get(ChargingCard, support_request.charging_card_id)
        if support_request.charging_card_id
        else None
    )
    handling = session.get(SupportRequestHandling, support_request.id)
    assignee = (
        session.get(StaffMember, handling.assigned_to_id) if handling and handling.assigned_to_id else None
    )
    return _page(
        request,
        "portal/request.html",
        {
            "staff": staff,
            "support_request": support_request,
            "order": order,
            "card": card,
            "card_states": charging_cards.STATE_LABELS,
            "assignee": assignee,
            "notes": support_inbox.notes_of(session, support_request),
            "message": lazy_gettext(REQUEST_DONE[done]) if done in REQUEST_DONE else None,
            "errors": errors or {},
            "note": note,
            "request_status_labels": support_inbox.STATUS_LABELS,
            "kind_labels": support_inbox.KIND_LABELS,
        },
        status=422 if errors else 200,
    )


@router.get("/portal/requests/{request_id}")
def request_page(
    request: Request, request_id: str, session: Db, staff: Staff, done: str | None = None
) -> Response:
    found = _request_id(request_id)
    support_request = support_inbox.request_in_scope(session, staff, found) if found is not None else None
    if support_request is None:
        return _not_found(request, staff)
    return _request_page(request, session, staff, support_request, done=done)


@router.post("/portal/requests/{request_id}/{action}", dependencies=[Csrf])
def request_action(
    request: Request,
    request_id: str,
    action: str,
    session: Db,
    staff: Staff,
    note: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    found = _request_id(request_id)
    support_request = support_inbox.request_in_scope(session, staff, found) if found is not None else None
    if support_request is None or action not in REQUEST_DONE:
        return _not_found(request, staff)
    now = utcnow()
    try:
        if action == "take":
            support_inbox.take(session, staff, support_request, now=now)
        elif action == "note":
            support_inbox.add_note(session, staff, support_request, note, now=now)
        else:
            support_inbox.finish(session, settings_of(request), staff, support_request, now=now)
    except ValidationFailed as exc:
        session.rollback()
        support_request = support_inbox.request_in_scope(session, staff, support_request.id)
        assert support_request is not None
        return _request_page(request, session, staff, support_request, errors=by_field(exc.errors), note=note)
    session.commit()
    return RedirectResponse(f"/portal/requests/{support_request.id}?done={action}", status_code=303)


# -- staff (dealer admins: their dealer's agents; platform admins: everyone) -------------------------

Managers = Annotated[StaffMember, Depends(staff_with_role(StaffRole.DEALER_ADMIN, StaffRole.PLATFORM_ADMIN))]
STAFF_DONE = {
    "created": N_("The account is created and its invitation is on its way."),
    "deactivated": N_("The account is deactivated."),
    "reinvited": N_("A new invitation is on its way. The old password and authenticator no longer work."),
}
STAFF_ACTIONS = {"deactivate": "deactivated", "reinvite": "reinvited"}


def _staff_page(
    request: Request,
    session: Session,
    staff: StaffMember,
    *,
    done: str | None = None,
    errors: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    members = session.scalars(
        scoped(staff, select(StaffMember), StaffMember).order_by(
            StaffMember.deactivated_at.is_not(None), StaffMember.email
        )
    ).all()
    return _page(
        request,
        "portal/staff.html",
        {
            "staff": staff,
            "members": members,
            "manageable": {m.id for m in members if staff_service.may_manage(staff, m)},
            "roles": [r.value for r in StaffRole],
            "role_labels": staff_service.ROLE_LABELS,
            "message": lazy_gettext(STAFF_DONE[done]) if done in STAFF_DONE else None,
            "errors": errors or {},
            "values": values or {},
        },
        status=422 if errors else 200,
    )


@router.get("/portal/staff")
def staff_page(request: Request, session: Db, staff: Managers, done: str | None = None) -> Response:
    return _staff_page(request, session, staff, done=done)


@router.post("/portal/staff", dependencies=[Csrf])
def create_staff(
    request: Request,
    session: Db,
    staff: Managers,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=20)] = StaffRole.DEALER_AGENT.value,
    dealer: Annotated[str, Form(max_length=32)] = "",
    country: Annotated[str, Form(max_length=2)] = "",
    language: Annotated[str, Form(max_length=8)] = "en",
) -> Response:
    if staff.role == StaffRole.DEALER_ADMIN:  # their own dealer's agents only, whatever the form says
        role, dealer, country = StaffRole.DEALER_AGENT.value, staff.dealer_code or "", ""
    now = utcnow()
    values = {
        "email": email,
        "name": name,
        "role": role,
        "dealer": dealer,
        "country": country,
        "language": language,
    }
    try:
        member, token = staff_service.create_staff(
            session,
            email=email,
            name=name,
            role=role,
            dealer_code=dealer.strip().upper() or None,
            country=country or None,
            language=language,
            creator=staff,
            now=now,
        )
    except ValidationFailed as exc:
        session.rollback()
        return _staff_page(request, session, staff, errors=by_field(exc.errors), values=values)
    except PermissionError:
        session.rollback()
        return _page(request, "portal/forbidden.html", {"staff": staff}, status=403)
    staff_service.send_invitation(session, settings_of(request), member, token, now=now)
    session.commit()
    return RedirectResponse("/portal/staff?done=created", status_code=303)


@router.post("/portal/staff/{staff_id}/{action}", dependencies=[Csrf])
def manage_staff(request: Request, staff_id: str, action: str, session: Db, staff: Managers) -> Response:
    """Deactivate a staff member, or send them a new invitation (a fresh start: password and
    authenticator set again; a deactivated member is active again)."""
    target = (
        session.scalar(scoped(staff, select(StaffMember).where(StaffMember.id == int(staff_id)), StaffMember))
        if staff_id.isascii() and staff_id.isdigit() and len(staff_id) <= 12 and action in STAFF_ACTIONS
        else None
    )
    if target is None:
        return _not_found(request, staff)
    if not staff_service.may_manage(staff, target):
        return _page(request, "portal/forbidden.html", {"staff": staff}, status=403)
    now = utcnow()
    if action == "deactivate":
        staff_service.deactivate(session, target, by=staff, now=now)
    else:
        token = staff_service.reinvite(session, target, by=staff, now=now)
        staff_service.send_invitation(session, settings_of(request), target, token, now=now)
    session.commit()
    return RedirectResponse(f"/portal/staff?done={STAFF_ACTIONS[action]}", status_code=303)


# -- activation statistics ---------------------------------------------------------------------------


@router.get("/portal/statistics")
def statistics_page(
    request: Request, session: Db, staff: Staff, since: str | None = None, until: str | None = None
) -> Response:
    now = utcnow()
    errors: dict[str, Any] = {}
    try:
        first, last = statistics.parse_period(since, until, today=now.date())
    except ValidationFailed as exc:
        errors = by_field(exc.errors)
        first, last = statistics.parse_period(None, None, today=now.date())
    figures = statistics.activation_statistics(session, staff, since=first, until=last, now=now)
    return _page(
        request,
        "portal/statistics.html",
        {"staff": staff, "figures": figures, "errors": errors, "values": {"since": since, "until": until}},
        status=422 if errors else 200,
    )


# -- audit log -------------------------------------------------------------------------------------


@router.get("/portal/audit")
def audit_page(request: Request, session: Db, staff: Staff) -> Response:
    params = dict(request.query_params)
    errors: dict[str, Any] = {}
    try:
        filters = audit_log.parse_filters(params)
    except ValidationFailed as exc:
        errors = by_field(exc.errors)
        filters = audit_log.AuditFilters()
    after_text = params.get("after", "")
    after = (
        int(after_text) if after_text.isascii() and after_text.isdigit() and len(after_text) <= 12 else None
    )
    rows, next_after = audit_log.entries(session, staff, filters, after=after)
    next_url = None
    if next_after is not None:
        next_url = "/portal/audit?" + urlencode({**filters.query(), "after": str(next_after)})
    return _page(
        request,
        "portal/audit.html",
        {"staff": staff, "rows": rows, "values": params, "errors": errors, "next_url": next_url},
        status=422 if errors else 200,
    )


# -- CSV import ------------------------------------------------------------------------------------

UPLOAD_PATH = "/portal/import"


@router.get(UPLOAD_PATH)
def import_page(request: Request, session: Db, staff: Staff) -> Response:
    return _page(
        request, "portal/import.html", {"staff": staff, "jobs": imports.recent(session, staff), "errors": {}}
    )


@router.post(UPLOAD_PATH, dependencies=[Csrf])
def upload_import(request: Request, session: Db, staff: Staff, file: UploadFile | None = None) -> Response:
    """Keeps the upload in a private directory and starts its check (a dry run)."""
    directory = Path(tempfile.mkdtemp(dir=imports.upload_dir()))
    target = directory / "upload.csv"
    size = 0
    if file is not None and file.filename:
        with open(target, "wb") as out:
            shutil.copyfileobj(file.file, out, 1024 * 1024)
            size = out.tell()
    if size == 0:
        shutil.rmtree(directory, ignore_errors=True)
        errors = {"file": [FieldError("file", N_("Choose a CSV file that is not empty."))]}
        context = {"staff": staff, "jobs": imports.recent(session, staff), "errors": errors}
        return _page(request, "portal/import.html", context, status=422)
    assert file is not None
    job = imports.create(
        session,
        staff,
        file_name=file.filename or "upload.csv",
        stored_path=str(target),
        dry_run=True,
        now=utcnow(),
    )
    session.commit()
    imports.start_in_background(request.app.state.session_factory, settings_of(request), job.id)
    return RedirectResponse(f"/portal/import/{job.id}", status_code=303)


def _job(session: Session, staff: StaffMember, import_id: str) -> PortalImport | None:
    if not (import_id.isascii() and import_id.isdigit()) or len(import_id) > 12:
        return None
    return imports.import_in_scope(session, staff, int(import_id))


@router.get("/portal/import/{import_id}")
def import_job_page(request: Request, import_id: str, session: Db, staff: Staff) -> Response:
    job = _job(session, staff, import_id)
    if job is None:
        return _not_found(request, staff)
    imports.refresh_stale(session, job, now=utcnow())
    session.commit()
    return _page(
        request,
        "portal/import_job.html",
        {"staff": staff, "job": job, "running": job.state in imports.RUNNING},
    )


@router.post("/portal/import/{import_id}/run", dependencies=[Csrf])
def run_import(request: Request, import_id: str, session: Db, staff: Staff) -> Response:
    checked = _job(session, staff, import_id)
    if checked is None:
        return _not_found(request, staff)
    job = imports.import_checked(session, staff, checked, now=utcnow())
    if job is None:
        session.rollback()
        return RedirectResponse(f"/portal/import/{checked.id}", status_code=303)
    session.commit()
    imports.start_in_background(request.app.state.session_factory, settings_of(request), job.id)
    return RedirectResponse(f"/portal/import/{job.id}", status_code=303)
