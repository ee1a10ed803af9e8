"""The device login's web side (RFC 8628 §3.3, SPEC §3.7): ``/device`` takes the code the car shows
(typed, or in the address when the QR code was scanned), shows the car (model, last four of the VIN)
to the signed-in ID and asks it to confirm or cancel. ``/device/qr.svg`` is the QR code the car shows:
the address of this page with its code.

Refusals (an ID that does not use the car, a login that ended) answer a 403 page; the refusal is
audited (``device_approval``)."""

from __future__ import annotations

import io
from typing import Annotated
from urllib.parse import quote

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError
from onboarding.core.i18n import N_, lazy_gettext
from onboarding.identity import web_sessions
from onboarding.identity.dependencies import rate_limits, session_of
from onboarding.identity.ratelimit import TOO_MANY_ATTEMPTS
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect
from onboarding.web.problems import error_page
from onboarding.web.rendering import message_page, render
from onboarding.web.transactions import db_session
from vehicles.incar import device_approval, device_login
from vehicles.incar.models import DeviceAuthorization

router = APIRouter(include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Csrf = Depends(csrf_protect)

# Per address and per ID: 8 letters from 20 are not guessed at this pace within a code's ten minutes.
CODE_LIMIT = "10/minute;60/hour"
UNKNOWN_CODE = N_(
    "This code is unknown or has expired. Check the code on the car's screen, or start the login again."
)


def _login_redirect(user_code: str) -> Response:
    target = "/device" + (f"?user_code={quote(user_code)}" if user_code else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _enter_page(
    request: Request, user_code: str = "", errors: list[FieldError] | None = None, status: int = 200
) -> Response:
    context = {"user_code": user_code, "errors": by_field(errors or [])}
    return render(request, "incar/device_enter.html", context, status=status)


def _confirm_page(
    request: Request, session: Session, me: web_sessions.CurrentSession, authorization: DeviceAuthorization
) -> Response:
    car = device_approval.car_of(session, authorization)
    context = {
        "user_code": authorization.user_code,
        "model_name": car.model_name,
        "vin_end": car.vin_end,
        "signed_in_as": me.account.email,
        "pin_required": authorization.pin_required,
    }
    return render(request, "incar/device_confirm.html", context, language=me.account.language)


def _limited(request: Request, me: web_sessions.CurrentSession | None) -> bool:
    checks: list[tuple[str, str, str | None]] = [(CODE_LIMIT, "device-code-ip", client_ip(request))]
    if me is not None:
        checks.append((CODE_LIMIT, "device-code-account", str(me.account.id)))
    return not rate_limits(request).hit_all(*checks)


def _lookup(
    request: Request, session: Session, me: web_sessions.CurrentSession, user_code: str
) -> DeviceAuthorization | Response:
    """The open login of ``user_code``, or the entry page saying why not (rate limited: each wrong
    code counts)."""
    if _limited(request, me):
        return _enter_page(
            request, user_code, [FieldError("user_code", TOO_MANY_ATTEMPTS, "rate_limited")], 429
        )
    authorization = device_login.by_user_code(session, user_code, now=utcnow()) if user_code.strip() else None
    if authorization is None:
        return _enter_page(request, user_code, [FieldError("user_code", UNKNOWN_CODE, "invalid_code")], 422)
    return authorization


@router.get("/device")
def device_page(request: Request, session: Db, user_code: str = "") -> Response:
    user_code = user_code[:20]
    if not user_code:
        return _enter_page(request)
    me = session_of(request, session)
    if me is None:
        return _login_redirect(user_code)
    found = _lookup(request, session, me, user_code)
    if isinstance(found, Response):
        return found
    return _confirm_page(request, session, me, found)


@router.post("/device", dependencies=[Csrf])
def device_submit(
    request: Request, session: Db, user_code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    me = session_of(request, session)
    if me is None:
        return _login_redirect(user_code.strip())
    found = _lookup(request, session, me, user_code)
    if isinstance(found, Response):
        return found
    return _confirm_page(request, session, me, found)


def _decide(request: Request, session: Session, user_code: str, approving: bool) -> Response:
    me = session_of(request, session)
    if me is None:
        return _login_redirect(user_code.strip())
    found = _lookup(request, session, me, user_code)
    if isinstance(found, Response):
        return found
    now, ip = utcnow(), client_ip(request)
    try:
        if approving:
            device_approval.approve(session, found, me.account, now=now, ip=ip)
        else:
            device_approval.deny(session, found, me.account, now=now, ip=ip)
    except device_approval.ApprovalRefused as refused:
        session.commit()  # the refusal's audit event stays
        return error_page(request, 403, refused.text)
    pin_required = found.pin_required
    session.commit()
    if not approving:
        return message_page(
            request,
            lazy_gettext("Login cancelled"),
            [lazy_gettext("The car was not logged in to your ID.")],
            [("/account", lazy_gettext("My ID"))],
            language=me.account.language,
        )
    paragraphs = [lazy_gettext("Your car is being logged in to your ID.")]
    if pin_required:
        paragraphs.append(lazy_gettext("Now enter the car's security PIN in the car to finish."))
    return message_page(
        request,
        lazy_gettext("Confirmed"),
        paragraphs,
        [("/account", lazy_gettext("My ID"))],
        language=me.account.language,
    )


@router.post("/device/approve", dependencies=[Csrf])
def device_approve(
    request: Request, session: Db, user_code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    return _decide(request, session, user_code, approving=True)


@router.post("/device/deny", dependencies=[Csrf])
def device_deny(
    request: Request, session: Db, user_code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    return _decide(request, session, user_code, approving=False)


@router.get("/device/qr.svg")
def device_qr(request: Request, user_code: str = "") -> Response:
    """The QR code the car shows: ``verification_uri_complete`` (RFC 8628 §3.3.1). It holds only what
    the car shows beside it, so it needs no login."""
    code = device_login.normalise_user_code(user_code[:20])
    if len(code) != 9:
        return Response("Unknown code", status_code=404, media_type="text/plain")
    address = settings_of(request).public_url(f"/device?user_code={quote(code)}")
    svg = io.BytesIO()
    segno.make(address, error="m").save(svg, kind="svg", scale=5, border=2)
    return Response(svg.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
