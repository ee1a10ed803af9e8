"""Account settings pages: details, login email, password, communication preferences, security
(two-step verification, backup codes, mobile number, security PIN, sessions)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_phone
from onboarding.core.i18n import N_, lazy_gettext
from onboarding.identity import account_settings, audit, pin, sms_codes, two_factor, web_sessions
from onboarding.identity.dependencies import clear_session_cookie, set_session_cookie, signed_in
from onboarding.identity.devices import devices
from onboarding.identity.pages import code_problem, link_problem, send_sms_code
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect
from onboarding.web.rendering import message_page, render
from onboarding.web.transactions import commit, db_session

router = APIRouter(prefix="/account", include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Me = Annotated[web_sessions.CurrentSession, Depends(signed_in)]
Csrf = Depends(csrf_protect)

NOTICES = {
    "details": N_("Your details were saved."),
    "preferences": N_("Your communication preferences were saved."),
    "password": N_("Your password was changed. Every other device was signed out."),
    "email_sent": N_(
        "We sent a confirmation link to the new address. Your login email changes once you open it."
    ),
    "two_factor_off": N_("Two-step verification is off."),
    "two_factor_sms": N_("Two-step verification by SMS is on."),
    "pin": N_("Your security PIN was saved. If it was locked, it works again."),
    "phone": N_("Your mobile number is verified."),
    "device_signed_out": N_("The device was signed out."),
}


def _page(
    request: Request,
    template: str,
    me: web_sessions.CurrentSession,
    context: dict[str, Any],
    *,
    status: int = 200,
    notice: str = "",
) -> Response:
    return render(
        request,
        template,
        {
            "account": me.account,
            "signed_in_as": me.account.email,
            "notice": lazy_gettext(NOTICES[notice]) if notice in NOTICES else None,
            "errors": {},
            **context,
        },
        status=status,
        language=me.account.language,
    )


def _done(location: str, notice: str) -> Response:
    return RedirectResponse(f"{location}?notice={notice}", status_code=303)


# --- overview, details, preferences ------------------------------------------------------------------


@router.get("")
def overview(request: Request, session: Db, me: Me, notice: str = "") -> Response:
    return _page(
        request,
        "identity/account.html",
        me,
        {"preferences": account_settings.preferences(session, me.account.id), "values": {}},
        notice=notice,
    )


@router.post("/details", dependencies=[Csrf])
def save_details(
    request: Request,
    session: Db,
    me: Me,
    first_name: Annotated[str, Form(max_length=200)] = "",
    last_name: Annotated[str, Form(max_length=200)] = "",
    birth_date: Annotated[str, Form(max_length=20)] = "",
    language: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    try:
        account_settings.update_details(
            session,
            settings_of(request),
            me.account,
            first_name=first_name,
            last_name=last_name,
            birth_date=birth_date,
            language=language,
            now=utcnow(),
        )
    except ValidationFailed as exc:
        session.rollback()
        values = {
            "first_name": first_name,
            "last_name": last_name,
            "birth_date": birth_date,
            "language": language,
        }
        return _page(
            request,
            "identity/account.html",
            me,
            {
                "preferences": account_settings.preferences(session, me.account.id),
                "errors": by_field(exc.errors),
                "values": values,
            },
            status=422,
        )
    session.commit()
    return _done("/account", "details")


@router.post("/communication", dependencies=[Csrf])
def save_preferences(
    request: Request,
    session: Db,
    me: Me,
    marketing_email: Annotated[bool, Form()] = False,
    marketing_sms: Annotated[bool, Form()] = False,
) -> Response:
    account_settings.set_preferences(
        session,
        settings_of(request),
        me.account,
        account_settings.Preferences(marketing_email=marketing_email, marketing_sms=marketing_sms),
        now=utcnow(),
        source="settings",
    )
    session.commit()
    return _done("/account", "preferences")


# --- login email and password ----------------------------------------------------------------------------


@router.get("/email")
def email_form(request: Request, me: Me) -> Response:
    return _page(request, "identity/account_email.html", me, {"values": {}})


@router.post("/email", dependencies=[Csrf])
def email_submit(
    request: Request,
    session: Db,
    me: Me,
    background: BackgroundTasks,
    new_email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    try:
        account_settings.request_email_change(
            session, settings_of(request), me.account, new_email=new_email, password=password, now=utcnow()
        )
    except ValidationFailed as exc:
        session.rollback()
        return _page(
            request,
            "identity/account_email.html",
            me,
            {"errors": by_field(exc.errors), "values": {"new_email": new_email}},
            status=422,
        )
    commit(request, session, background)
    return _done("/account", "email_sent")


@router.get("/email/confirm/{token}", dependencies=[])
def email_confirm(token: str, request: Request, session: Db) -> Response:
    account = account_settings.confirm_email_change(session, token, now=utcnow())
    if account is None:
        return link_problem(
            request,
            [
                lazy_gettext(
                    "Confirmation links work once and for %(hours)s hours, "
                    "and not if the address has an ID meanwhile.",
                    hours=settings_of(request).email_change_valid_hours,
                )
            ],
            ("/account/email", lazy_gettext("Change your login email")),
        )
    session.commit()
    return message_page(
        request,
        lazy_gettext("Your login email was changed"),
        [lazy_gettext("From now on you log in with %(email)s.", email=account.email)],
        [("/account", lazy_gettext("My ID"))],
        language=account.language,
    )


@router.get("/password")
def password_form(request: Request, me: Me) -> Response:
    return _page(request, "identity/account_password.html", me, {})


@router.post("/password", dependencies=[Csrf])
def password_submit(
    request: Request,
    session: Db,
    me: Me,
    background: BackgroundTasks,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    password_confirmation: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    settings = settings_of(request)
    now = utcnow()
    try:
        account_settings.change_password(
            session,
            settings,
            me.account,
            current_password=current_password,
            password=password,
            confirmation=password_confirmation,
            now=now,
            keep=me.session,
        )
    except ValidationFailed as exc:
        session.rollback()
        return _page(
            request, "identity/account_password.html", me, {"errors": by_field(exc.errors)}, status=422
        )
    # A new session id for this browser too: privilege changed.
    web_sessions.end(me.session, now=now, reason="rotated")
    token = web_sessions.start(
        session,
        settings,
        me.account,
        stage=web_sessions.FULL,
        now=now,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    commit(request, session, background)
    response = _done("/account", "password")
    set_session_cookie(request, response, token)
    return response


# --- security -----------------------------------------------------------------------------------------


def _security(
    request: Request,
    session: Session,
    me: web_sessions.CurrentSession,
    *,
    status: int = 200,
    notice: str = "",
    **context: Any,
) -> Response:
    now = utcnow()
    return _page(
        request,
        "identity/account_security.html",
        me,
        {
            "backup_left": two_factor.backup_codes_left(session, me.account.id),
            "has_pin": pin.has_pin(session, me.account),
            "pin_locked": pin.pin_locked(session, me.account),
            "pin_max_failures": settings_of(request).pin_max_failures,
            "devices": devices(web_sessions.live_sessions(session, me.account.id, now=now), now=now),
            "current_session_id": me.session.id,
            "masked_phone": sms_codes.mask_phone(me.account.phone) if me.account.phone else None,
            **context,
        },
        status=status,
        notice=notice,
    )


@router.get("/security")
def security(request: Request, session: Db, me: Me, notice: str = "") -> Response:
    return _security(request, session, me, notice=notice)


@router.post("/security/totp/start", dependencies=[Csrf])
def totp_start(request: Request, session: Db, me: Me) -> Response:
    settings = settings_of(request)
    secret = two_factor.begin_totp(settings, me.account)
    session.commit()
    return _totp_page(request, me, secret)


def _totp_page(
    request: Request, me: web_sessions.CurrentSession, secret: str, *, failure: bool = False
) -> Response:
    uri = two_factor.provisioning_uri(settings_of(request), me.account, secret)
    return _page(
        request,
        "identity/totp_enrol.html",
        me,
        {
            "secret": secret,
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "qr": two_factor.qr_svg_data_uri(uri),
            # The same URI as the QR code: a tap opens the authenticator app on a phone.
            "otpauth": uri,
            "errors": by_field(
                [FieldError("code", N_("That code is not correct. Check the time on your phone."))]
            )
            if failure
            else {},
        },
        status=422 if failure else 200,
    )


@router.post("/security/totp/confirm", dependencies=[Csrf])
def totp_confirm(
    request: Request, session: Db, me: Me, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    settings = settings_of(request)
    codes = two_factor.confirm_totp(session, settings, me.account, code, now=utcnow(), ip=client_ip(request))
    if codes is None:
        secret = two_factor.pending_secret(settings, me.account)
        if secret is None:
            return RedirectResponse("/account/security", status_code=303)
        return _totp_page(request, me, secret, failure=True)
    session.commit()
    return _backup_codes_page(request, me, codes)


def _backup_codes_page(request: Request, me: web_sessions.CurrentSession, codes: list[str]) -> Response:
    text = "\n".join(codes) + "\n"
    return _page(request, "identity/backup_codes.html", me, {"codes": codes, "download": text})


@router.post("/security/backup-codes", dependencies=[Csrf])
def regenerate_backup_codes(
    request: Request, session: Db, me: Me, password: Annotated[str, Form(max_length=1024)] = ""
) -> Response:
    try:
        codes = two_factor.regenerate_backup_codes(
            session, settings_of(request), me.account, password=password, now=utcnow()
        )
    except ValidationFailed as exc:
        return _security(request, session, me, status=422, errors=by_field(exc.errors), form="backup")
    if codes is None:
        return RedirectResponse("/account/security", status_code=303)
    session.commit()
    return _backup_codes_page(request, me, codes)


@router.post("/security/sms-factor", dependencies=[Csrf])
def sms_factor(request: Request, session: Db, me: Me) -> Response:
    if not me.account.has_verified_phone:
        return RedirectResponse("/account/security", status_code=303)
    codes = two_factor.enable_sms(
        session, settings_of(request), me.account, now=utcnow(), ip=client_ip(request)
    )
    session.commit()
    if codes:
        return _backup_codes_page(request, me, codes)
    return _done("/account/security", "two_factor_sms")


@router.post("/security/two-factor/off", dependencies=[Csrf])
def two_factor_off(
    request: Request, session: Db, me: Me, password: Annotated[str, Form(max_length=1024)] = ""
) -> Response:
    try:
        two_factor.disable(session, me.account, password=password, now=utcnow(), ip=client_ip(request))
    except ValidationFailed as exc:
        return _security(request, session, me, status=422, errors=by_field(exc.errors), form="off")
    session.commit()
    return _done("/account/security", "two_factor_off")


def _pin_page(
    request: Request,
    me: web_sessions.CurrentSession,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    context = {"action": "/account/security/pin", "ask_password": True, "errors": by_field(errors or [])}
    return _page(request, "identity/pin.html", me, context, status=status)


@router.get("/security/pin")
def pin_form(request: Request, me: Me) -> Response:
    return _pin_page(request, me)


@router.post("/security/pin", dependencies=[Csrf])
def pin_reset(
    request: Request,
    session: Db,
    me: Me,
    password: Annotated[str, Form(max_length=1024)] = "",
    pin_value: Annotated[str, Form(alias="pin", max_length=20)] = "",
    pin_confirmation: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Set or reset the PIN (lifting a lock from the car) after re-entering the password."""
    try:
        pin.reset_pin(
            session,
            settings_of(request),
            me.account,
            password=password,
            pin=pin_value,
            confirmation=pin_confirmation,
            now=utcnow(),
            ip=client_ip(request),
        )
    except ValidationFailed as exc:
        session.rollback()
        return _pin_page(request, me, exc.errors, status=422)
    session.commit()
    return _done("/account/security", "pin")


@router.post("/security/phone", dependencies=[Csrf])
def phone_change(
    request: Request,
    session: Db,
    me: Me,
    background: BackgroundTasks,
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """A new mobile number: a code goes to it, and it replaces the old one once the code is entered."""
    errors: list[FieldError] = []
    number = clean_phone(phone, me.account.country, "phone", errors)
    if errors:
        return _security(request, session, me, status=422, errors=by_field(errors), phone_value=phone)
    message, status = send_sms_code(
        request, session, background, me.account, purpose=sms_codes.PHONE, phone=number
    )
    return _security(
        request,
        session,
        me,
        status=status,
        pending_phone=number,
        pending_masked=sms_codes.mask_phone(number),
        message=message,
    )


@router.post("/security/phone/verify", dependencies=[Csrf])
def phone_verify(
    request: Request,
    session: Db,
    me: Me,
    phone: Annotated[str, Form(max_length=40)] = "",
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    # ``phone`` is the number the code went to, echoed by the form; a code only matches that number.
    outcome = sms_codes.verify_phone(
        session, settings_of(request), me.account, phone=phone, code=code, now=utcnow(), ip=client_ip(request)
    )
    session.commit()
    if outcome is not sms_codes.CheckOutcome.OK:
        return _security(
            request,
            session,
            me,
            status=422,
            errors=by_field([FieldError("code", code_problem(outcome))]),
            pending_phone=phone,
            pending_masked=sms_codes.mask_phone(phone),
        )
    return _done("/account/security", "phone")


@router.post("/sign-out-everywhere", dependencies=[Csrf])
def sign_out_everywhere(request: Request, session: Db, me: Me) -> Response:
    """Every web session of the ID ends, this one included, and the cars' logins with it."""
    now = utcnow()
    ended = web_sessions.sign_out_everywhere(session, me.account.id, now=now, reason="signed_out_everywhere")
    audit.record(
        session,
        "signed_out_everywhere",
        now=now,
        account_id=me.account.id,
        ip=client_ip(request),
        sessions_ended=ended,
    )
    session.commit()
    response = RedirectResponse("/login?signed_out=all", status_code=303)
    clear_session_cookie(response)
    return response


# The largest id a session can have (PostgreSQL's integer): a larger one is no session either.
_MAX_ID = 2**31 - 1


@router.post("/security/sessions/{session_id}/sign-out", dependencies=[Csrf])
def sign_out_device(request: Request, session: Db, me: Me, session_id: str) -> Response:
    """Sign out one device of the ID. Any other id (another ID's session, none at all) is 404 and
    changes nothing; this device's own id logs out."""
    number = int(session_id) if session_id.isascii() and session_id.isdigit() and len(session_id) <= 10 else 0
    now = utcnow()
    ended = (
        web_sessions.sign_out_device(session, me.account.id, number, now=now, ip=client_ip(request))
        if 0 < number <= _MAX_ID
        else None
    )
    if ended is None:
        raise HTTPException(404, "Not found")
    session.commit()
    if ended.id == me.session.id:
        response = RedirectResponse("/login?signed_out=1", status_code=303)
        clear_session_cookie(response)
        return response
    return _done("/account/security", "device_signed_out")
