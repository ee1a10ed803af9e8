"""Login, logout, two-step verification at login, self-registration and password reset pages."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from notifications.support import contact_for
from onboarding.core.clock import utcnow
from onboarding.core.db import begin_read, begin_single_statement
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import KNOWN_COUNTRIES
from onboarding.core.i18n import N_, Text, lazy_gettext
from onboarding.identity import (
    audit,
    login,
    password_reset,
    registration,
    sms_codes,
    two_factor,
    web_sessions,
)
from onboarding.identity.accounts import NewAccount
from onboarding.identity.dependencies import (
    PASSWORD_REQUESTS,
    SESSION_COOKIE,
    clear_session_cookie,
    rate_limits,
    session_of,
    set_session_cookie,
)
from onboarding.identity.models import Account, AccountToken
from onboarding.identity.ratelimit import TOO_MANY_ATTEMPTS, TooManyAttempts, refusal_status
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect, parse_date, safe_next
from onboarding.web.problems import AnsweredInstead
from onboarding.web.rendering import message_page, render
from onboarding.web.transactions import commit, db_session, in_one_thread

router = APIRouter(include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Csrf = Depends(csrf_protect)
RESET_COOKIE = "onb_reset"


def link_problem(request: Request, paragraphs: list[Text], action: tuple[str, Text]) -> Response:
    """The "This link no longer works" page (410) of an emailed link that is used, expired or
    unknown: why (``paragraphs``), and the one way on (``action``: where to get a new link)."""
    return message_page(request, lazy_gettext("This link no longer works"), paragraphs, [action], status=410)


# --- login -------------------------------------------------------------------------------------------


def _login_form(request: Request, *, next_url: str, status: int = 200, **context: Any) -> Response:
    return render(request, "identity/login.html", {"next": next_url, **context}, status=status)


FAILURES = {
    login.LoginOutcome.FAILED: (401, N_("The email address or password is not correct.")),
    login.LoginOutcome.LOCKED: (
        423,
        N_(
            "The maximum number of failed login attempts has been reached. Your ID is locked for "
            "%(minutes)s minutes to protect your security. You can reset your password to unlock it now."
        ),
    ),
    login.LoginOutcome.BLOCKED: (
        403,
        N_("This ID is blocked. Please contact customer support; the contact is at the bottom of the page."),
    ),
    login.LoginOutcome.RATE_LIMITED: (429, TOO_MANY_ATTEMPTS),
}


def password_login(
    request: Request,
    session: Session,
    *,
    email: str,
    password: str,
    next_url: str,
    form: dict[str, Any] | None = None,
) -> Response:
    """The password step of every login form: the login page and the invitation's "log in instead"."""
    settings = settings_of(request)
    now = utcnow()
    ip = client_ip(request)
    limits = rate_limits(request)
    # Read, hash, write: the lookup is a transaction of its own that ends before Argon2id's 30 ms or
    # so of CPU, so none is held while it hashes (on SQLite not even a lock, see begin_read). The
    # account stays loaded (expire_on_commit=False).
    begin_read(session)
    attempt = login.identify(session, settings, limits, email=email, ip=ip)
    session.commit()
    result = login.check_password(session, settings, limits, attempt, password=password, now=now, ip=ip)
    if result.outcome in FAILURES:
        session.commit()  # keeps the failure count, the lock and the audit events
        status, text = FAILURES[result.outcome]
        return _login_form(
            request,
            next_url=next_url,
            status=status,
            email=email,
            failure=lazy_gettext(text, minutes=settings.lockout_minutes),
            locked=result.outcome is login.LoginOutcome.LOCKED,
            **(form or {}),
        )
    account = result.account
    assert account is not None
    stage = {
        login.LoginOutcome.UNVERIFIED: web_sessions.UNVERIFIED,
        login.LoginOutcome.SECOND_FACTOR: web_sessions.SECOND_FACTOR,
    }.get(result.outcome, web_sessions.FULL)
    location = {
        web_sessions.UNVERIFIED: "/register/pending",
        web_sessions.SECOND_FACTOR: f"/login/verify?next={quote(next_url)}",
    }.get(stage, next_url)
    return start_session(request, session, account, stage=stage, location=location, method="password")


def start_session(
    request: Request, session: Session, account: Account, *, stage: str, location: str, method: str
) -> Response:
    """A new session (and cookie) for ``account``, ending the one the browser had: login rotates."""
    now = utcnow()
    ip = client_ip(request)
    begin_single_statement(session)  # when nothing else is pending: rotate is one statement there
    token = web_sessions.rotate(
        session,
        settings_of(request),
        account,
        old_token=request.cookies.get(SESSION_COOKIE),
        stage=stage,
        now=now,
        ip=ip,
        user_agent=request.headers.get("user-agent"),
        event=audit.event_row("login", now=now, account_id=account.id, ip=ip, method=method)
        if stage == web_sessions.FULL
        else None,
    )
    session.commit()
    response = RedirectResponse(location, status_code=303)
    set_session_cookie(request, response, token)
    return response


# The confirmation after signing out (``/login?signed_out=…``).
SIGNED_OUT = {
    "1": N_("You have logged out."),
    "all": N_("You have been signed out of all devices."),
}


@router.get("/login")
def login_page(request: Request, session: Db, next: str = "", signed_out: str = "") -> Response:
    next_url = safe_next(next)
    if session_of(request, session) is not None:
        return RedirectResponse(next_url, status_code=303)
    message = lazy_gettext(SIGNED_OUT[signed_out]) if signed_out in SIGNED_OUT else None
    return _login_form(request, next_url=next_url, message=message)


@router.post("/login", dependencies=[Csrf])
async def login_submit(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    # The busiest form: its database work and Argon2id run in one worker-thread call (in_one_thread),
    # one login per core at a time (PASSWORD_REQUESTS).
    return await in_one_thread(
        request,
        lambda session: password_login(
            request, session, email=email, password=password, next_url=safe_next(next)
        ),
        limiter=PASSWORD_REQUESTS,
    )


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request, session: Db) -> Response:
    current = session_of(
        request, session, stages=(web_sessions.FULL, web_sessions.SECOND_FACTOR, web_sessions.UNVERIFIED)
    )
    if current is not None:
        web_sessions.end(current.session, now=utcnow(), reason="logout")
        session.commit()
    response = RedirectResponse("/login?signed_out=1", status_code=303)
    clear_session_cookie(response)
    return response


# --- second factor at login ---------------------------------------------------------------------------


def _second_factor_page(
    request: Request,
    session: Session,
    current: web_sessions.CurrentSession,
    *,
    method: str,
    next_url: str,
    status: int = 200,
    failure: Text | None = None,
    message: Text | None = None,
) -> Response:
    account = current.account
    methods = two_factor.login_methods(account)
    if method not in methods:
        method = account.two_factor if account.two_factor in methods else methods[0]
    sms = None
    if method == two_factor.SMS:
        assert account.phone is not None
        sms = sms_codes.state(
            session, settings_of(request), account.id, sms_codes.LOGIN, account.phone, now=utcnow()
        )
    return render(
        request,
        "identity/second_factor.html",
        {
            "method": method,
            "alternatives": [m for m in methods if m != method],
            "next": next_url,
            "sms": sms,
            "failure": failure,
            "message": message,
        },
        status=status,
        language=account.language,
    )


def _pending_second_factor(request: Request, session: Session) -> web_sessions.CurrentSession | None:
    return session_of(request, session, stages=(web_sessions.SECOND_FACTOR,))


@router.get("/login/verify")
def second_factor_page(request: Request, session: Db, method: str = "", next: str = "") -> Response:
    current = _pending_second_factor(request, session)
    if current is None:
        return RedirectResponse("/login", status_code=303)
    return _second_factor_page(request, session, current, method=method, next_url=safe_next(next))


@router.post("/login/verify", dependencies=[Csrf])
def second_factor_submit(
    request: Request,
    session: Db,
    code: Annotated[str, Form(max_length=64)] = "",
    method: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    current = _pending_second_factor(request, session)
    if current is None:
        return RedirectResponse("/login", status_code=303)
    settings = settings_of(request)
    account = current.account
    next_url = safe_next(next)
    now = utcnow()
    ip = client_ip(request)
    outcome = login.check_second_factor(
        session, settings, rate_limits(request), account, method=method, code=code, now=now, ip=ip
    )
    if outcome is login.LoginOutcome.LOCKED:
        web_sessions.end(current.session, now=now, reason="locked")
        session.commit()
        response = _login_form(
            request,
            next_url=next_url,
            status=423,
            email=account.email,
            failure=lazy_gettext(FAILURES[outcome][1], minutes=settings.lockout_minutes),
            locked=True,
        )
        clear_session_cookie(response)
        return response
    if outcome is not login.LoginOutcome.SIGNED_IN:
        session.commit()  # keeps the failure count
        status, text = (
            FAILURES[outcome]
            if outcome is login.LoginOutcome.RATE_LIMITED
            else (401, N_("That code is not correct, or was already used."))
        )
        return _second_factor_page(
            request,
            session,
            current,
            method=method,
            next_url=next_url,
            status=status,
            failure=lazy_gettext(text),
        )
    return start_session(request, session, account, stage=web_sessions.FULL, location=next_url, method=method)


@router.post("/login/verify/sms", dependencies=[Csrf])
def second_factor_sms(
    request: Request, session: Db, background: BackgroundTasks, next: Annotated[str, Form()] = ""
) -> Response:
    current = _pending_second_factor(request, session)
    if current is None or not current.account.has_verified_phone or current.account.phone is None:
        return RedirectResponse("/login", status_code=303)
    message, status = send_sms_code(
        request, session, background, current.account, purpose=sms_codes.LOGIN, phone=current.account.phone
    )
    return _second_factor_page(
        request,
        session,
        current,
        method=two_factor.SMS,
        next_url=safe_next(next),
        status=status,
        message=message,
    )


def send_sms_code(
    request: Request,
    session: Session,
    background: BackgroundTasks,
    account: Account,
    *,
    purpose: str,
    phone: str,
) -> tuple[Text, int]:
    """A page's "send me a code": sends it (or not, within the limits), commits, and returns the
    message and HTTP status to show."""
    settings = settings_of(request)
    now = utcnow()
    first = sms_codes.current(session, account.id, purpose, phone) is None
    outcome = sms_codes.send_code(
        session,
        settings,
        account,
        purpose=purpose,
        phone=phone,
        now=now,
        ip=client_ip(request),
    )
    commit(request, session, background)
    # The wait left, as the page's "You can ask for a new code in … seconds" counts it.
    wait = (
        sms_codes.state(session, settings, account.id, purpose, phone, now=now).wait_seconds
        if outcome is sms_codes.SendOutcome.COOLDOWN
        else 0
    )
    minutes = settings.sms_code_valid_minutes
    message = {
        sms_codes.SendOutcome.SENT: lazy_gettext(
            "We sent a code. It is valid for %(minutes)s minutes.", minutes=minutes
        )
        if first
        else lazy_gettext("We sent a new code. It is valid for %(minutes)s minutes.", minutes=minutes),
        sms_codes.SendOutcome.COOLDOWN: lazy_gettext(
            "Wait %(seconds)s seconds before asking for another code.", seconds=wait
        ),
        sms_codes.SendOutcome.LIMIT: lazy_gettext(
            "You asked for %(count)s codes in the last hour. Try again later.",
            count=settings.sms_max_sends_per_hour,
        ),
        sms_codes.SendOutcome.LOCKED: lazy_gettext(
            "Too many wrong codes. Try again in an hour, or contact support."
        ),
    }[outcome]
    return message, 200 if outcome is sms_codes.SendOutcome.SENT else 429


# --- self-registration -----------------------------------------------------------------------------------


def _register_form(
    request: Request,
    *,
    errors: list[FieldError] | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "identity/register.html",
        {"errors": by_field(errors or []), "values": values or {}, "countries": sorted(KNOWN_COUNTRIES)},
        status=status,
    )


@router.get("/register")
def register_page(request: Request) -> Response:
    return _register_form(request, values={"language": None})


class IdForm(BaseModel):
    """The fields of the ID form (_id_fields.html), as the activation shows it."""

    password: str = Field("", max_length=1024)
    password_confirmation: str = Field("", max_length=1024)
    first_name: str = Field("", max_length=200)
    last_name: str = Field("", max_length=200)
    birth_date: str = Field("", max_length=20)
    country: str = Field("", max_length=8)
    language: str = Field("", max_length=8)
    accept_terms: bool = False
    accept_privacy: bool = False

    def new_account(self, *, email: str, phone: str | None = None) -> NewAccount:
        return NewAccount(email=email, phone=phone, **self.model_dump(exclude={"email"}))

    def shown_again(self) -> dict[str, Any]:
        """What the form shows again after an error: everything but the passwords."""
        return self.model_dump(exclude={"password", "password_confirmation"})


class RegistrationForm(IdForm):
    """Self-registration's ID form: the address too, and the optional marketing consent."""

    email: str = Field("", max_length=320)
    marketing_email: bool = False


@router.post("/register", dependencies=[Csrf])
def register_submit(
    request: Request, session: Db, background: BackgroundTasks, form: Annotated[RegistrationForm, Form()]
) -> Response:
    settings = settings_of(request)
    data = form.new_account(email=form.email)
    try:
        registration.register(
            session, settings, rate_limits(request), data, now=utcnow(), ip=client_ip(request)
        )
    except ValidationFailed as exc:
        return _register_form(
            request, errors=exc.errors, values=form.shown_again(), status=refusal_status(exc)
        )
    commit(request, session, background)
    return message_page(
        request,
        lazy_gettext("Check your email"),
        [
            lazy_gettext(
                "We sent a link to %(email)s. Open it within %(hours)s hours to activate your ID.",
                email=form.email.strip().lower(),
                hours=settings.email_verification_valid_hours,
            ),
            lazy_gettext("You cannot use your ID until your email address is confirmed."),
            lazy_gettext("No email? Look in your spam folder, or log in to send the link again."),
        ],
        [("/login", lazy_gettext("I have confirmed it: log in")), ("/", lazy_gettext("Do this later"))],
        language=form.language or None,
    )


@router.get("/register/verify/{token}")
def register_verify(token: str, request: Request, session: Db) -> Response:
    account = registration.verify(session, token, now=utcnow(), ip=client_ip(request))
    if account is None:
        return link_problem(
            request,
            [
                lazy_gettext(
                    "Activation links work once and for %(hours)s hours.",
                    hours=settings_of(request).email_verification_valid_hours,
                ),
                lazy_gettext("Log in with your email and password to get a new link."),
            ],
            ("/login", lazy_gettext("Log in")),
        )
    session.commit()
    return message_page(
        request,
        lazy_gettext("Your email address is confirmed"),
        [lazy_gettext("Your ID is active. Log in to continue.")],
        [("/login", lazy_gettext("Log in"))],
        language=account.language,
    )


@router.get("/register/pending")
def register_pending(request: Request, session: Db, sent: str = "") -> Response:
    current = session_of(request, session, stages=(web_sessions.UNVERIFIED,))
    if current is None:
        return RedirectResponse("/login", status_code=303)
    return render(
        request,
        "identity/register_pending.html",
        {
            "email": current.account.email,
            "hours": settings_of(request).email_verification_valid_hours,
            "message": lazy_gettext("We sent a new link.") if sent else None,
        },
        language=current.account.language,
    )


@router.post("/register/resend", dependencies=[Csrf])
def register_resend(request: Request, session: Db, background: BackgroundTasks) -> Response:
    current = session_of(request, session, stages=(web_sessions.UNVERIFIED,))
    if current is None:
        return RedirectResponse("/login", status_code=303)
    try:
        registration.resend_verification(
            session, settings_of(request), rate_limits(request), current.account, now=utcnow()
        )
    except TooManyAttempts:
        return render(
            request,
            "identity/register_pending.html",
            {
                "email": current.account.email,
                "hours": settings_of(request).email_verification_valid_hours,
                "message": lazy_gettext(TOO_MANY_ATTEMPTS),
            },
            status=429,
            language=current.account.language,
        )
    commit(request, session, background)
    return RedirectResponse("/register/pending?sent=1", status_code=303)


# --- password reset ----------------------------------------------------------------------------------


@router.get("/password/forgot")
def forgot_page(request: Request, email: str = "") -> Response:
    # Prefilled from the login form ("Forgot your password?" passes on the address it knows).
    shown = email.strip() if len(email) <= 320 and email.isprintable() else ""
    return render(request, "identity/forgot.html", {"errors": {}, "email": shown})


@router.post("/password/forgot", dependencies=[Csrf])
def forgot_submit(
    request: Request,
    session: Db,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    settings = settings_of(request)
    try:
        password_reset.request_reset(
            session, settings, rate_limits(request), email=email, now=utcnow(), ip=client_ip(request)
        )
    except ValidationFailed as exc:
        return render(
            request,
            "identity/forgot.html",
            {"errors": by_field(exc.errors), "email": email},
            status=refusal_status(exc),
        )
    commit(request, session, background)
    return message_page(
        request,
        lazy_gettext("Check your email"),
        [
            lazy_gettext(
                "If the address belongs to an ID, we have sent it a link to choose a new password. "
                "The link works once, for %(minutes)s minutes.",
                minutes=settings.password_reset_valid_minutes,
            ),
            lazy_gettext(
                "No email? Look in your spam folder, or check that you typed the address you log in with."
            ),
        ],
        [("/login", lazy_gettext("Back to login"))],
    )


def _reset_link_problem(request: Request) -> Response:
    response = link_problem(
        request,
        [
            lazy_gettext(
                "Password reset links work once and for %(minutes)s minutes. Ask for a new one.",
                minutes=settings_of(request).password_reset_valid_minutes,
            )
        ],
        ("/password/forgot", lazy_gettext("Reset your password")),
    )
    response.delete_cookie(RESET_COOKIE, path="/password")
    return response


@router.get("/password/reset/{token}")
def reset_link(token: str, request: Request, session: Db) -> Response:
    """The emailed link: checked, then moved into a cookie and out of the address bar."""
    if password_reset.open_link(session, token, now=utcnow()) is None:
        return _reset_link_problem(request)
    response = RedirectResponse("/password/reset", status_code=303)
    response.set_cookie(
        RESET_COOKIE,
        token,
        max_age=settings_of(request).password_reset_valid_minutes * 60,
        httponly=True,
        samesite="lax",
        secure=settings_of(request).secure_cookies,
        path="/password",
    )
    return response


def _reset_page(
    request: Request,
    session: Session,
    row: AccountToken,
    account: Account,
    *,
    errors: list[FieldError] | None = None,
    message: Text | None = None,
    status: int = 200,
) -> Response:
    """The reset page for an open link (``ResetLink``)."""
    sms = None
    if account.has_verified_phone:
        assert account.phone is not None
        sms = sms_codes.state(
            session, settings_of(request), account.id, sms_codes.RESET, account.phone, now=utcnow()
        )
    return render(
        request,
        "identity/reset.html",
        {
            "identity_checked": row.identity_checked_at is not None,
            "sms": sms,
            "errors": by_field(errors or []),
            "message": message,
        },
        status=status,
        language=account.language,
    )


def open_reset_link(request: Request, session: Db) -> tuple[AccountToken, Account]:
    """The reset link of the browser's cookie, or the "link no longer works" page instead."""
    found = password_reset.open_link(session, request.cookies.get(RESET_COOKIE), now=utcnow())
    if found is None:
        raise AnsweredInstead(_reset_link_problem(request))
    return found


ResetLink = Annotated[tuple[AccountToken, Account], Depends(open_reset_link)]


@router.get("/password/reset")
def reset_page(request: Request, session: Db, found: ResetLink) -> Response:
    return _reset_page(request, session, *found)


@router.post("/password/reset/birth-date", dependencies=[Csrf])
def reset_birth_date(
    request: Request, session: Db, found: ResetLink, birth_date: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    row, account = found
    outcome = password_reset.confirm_birth_date(
        session, row, account, parse_date(birth_date), now=utcnow(), ip=client_ip(request)
    )
    session.commit()
    if outcome is password_reset.IdentityCheck.OK:
        return RedirectResponse("/password/reset", status_code=303)
    if outcome is password_reset.IdentityCheck.BLOCKED:
        return message_page(
            request,
            lazy_gettext("We could not confirm who you are"),
            [
                lazy_gettext(
                    "Too many answers were wrong, so this link was cancelled. Contact support for help."
                )
            ],
            [("/password/forgot", lazy_gettext("Reset your password"))],
            status=403,
        )
    return _reset_page(
        request,
        session,
        row,
        account,
        errors=[FieldError("birth_date", N_("That does not match our records."))],
        status=422,
    )


@router.post("/password/reset/sms", dependencies=[Csrf])
def reset_send_sms(request: Request, session: Db, background: BackgroundTasks, found: ResetLink) -> Response:
    _row, account = found
    if not account.has_verified_phone or account.phone is None:
        return RedirectResponse("/password/reset", status_code=303)
    message, status = send_sms_code(
        request, session, background, account, purpose=sms_codes.RESET, phone=account.phone
    )
    return _reset_page(request, session, *found, message=message, status=status)


@router.post("/password/reset/sms-code", dependencies=[Csrf])
def reset_check_sms(
    request: Request, session: Db, found: ResetLink, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    row, account = found
    if not account.has_verified_phone or account.phone is None:
        return RedirectResponse("/password/reset", status_code=303)
    outcome = sms_codes.check_code(
        session,
        settings_of(request),
        account,
        purpose=sms_codes.RESET,
        phone=account.phone,
        code=code,
        now=utcnow(),
        ip=client_ip(request),
    )
    if outcome is sms_codes.CheckOutcome.OK:
        password_reset.sms_identity_passed(row, now=utcnow())
        session.commit()
        return RedirectResponse("/password/reset", status_code=303)
    session.commit()
    return _reset_page(
        request, session, row, account, errors=[FieldError("code", code_problem(outcome))], status=422
    )


def code_problem(outcome: sms_codes.CheckOutcome) -> str:
    return {
        sms_codes.CheckOutcome.WRONG: N_("That code is not correct."),
        sms_codes.CheckOutcome.EXPIRED: N_("That code has expired. Ask for a new one."),
        sms_codes.CheckOutcome.LOCKED: N_("Too many wrong codes. Try again in an hour, or contact support."),
        sms_codes.CheckOutcome.NO_CODE: N_("Ask for a code first."),
        sms_codes.CheckOutcome.OK: "",
    }[outcome]


@router.post("/password/reset/new", dependencies=[Csrf])
def reset_new_password(
    request: Request,
    session: Db,
    background: BackgroundTasks,
    found: ResetLink,
    password: Annotated[str, Form(max_length=1024)] = "",
    password_confirmation: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    row, account = found
    try:
        password_reset.complete_reset(
            session,
            settings_of(request),
            row,
            account,
            password=password,
            confirmation=password_confirmation,
            now=utcnow(),
            ip=client_ip(request),
        )
    except ValidationFailed as exc:
        session.rollback()
        return _reset_page(request, session, row, account, errors=exc.errors, status=422)
    commit(request, session, background)
    response = message_page(
        request,
        lazy_gettext("Your password was changed"),
        [
            lazy_gettext("Every device that was signed in to your ID has been signed out."),
            lazy_gettext("Log in with your new password."),
        ],
        [("/login", lazy_gettext("Log in"))],
        language=account.language,
    )
    response.delete_cookie(RESET_COOKIE, path="/password")
    clear_session_cookie(response)
    return response


# --- the texts an ID's consents refer to --------------------------------------------------------------


def _legal_text(request: Request, kind: str, version: str) -> Response:
    # The version shown is the one ``accounts.create_account`` records with the consent.
    settings = settings_of(request)
    context = {"kind": kind, "version": version, "support": contact_for(settings, None, None)}
    return render(request, "identity/legal.html", context)


@router.get("/terms")
def terms_page(request: Request) -> Response:
    return _legal_text(request, "terms", settings_of(request).terms_version)


@router.get("/privacy")
def privacy_page(request: Request) -> Response:
    return _legal_text(request, "privacy", settings_of(request).privacy_version)
