"""Password reset (SPEC §3.2): the same answer and the same work whether or not the address has an
ID; a single-use link valid one hour; a second identity check (SMS code to the verified phone, or
the birth date) before the new password; afterwards every session of the ID ends, a lock is lifted,
and the person logs in themselves."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_email
from onboarding.core.i18n import N_, Text
from onboarding.core.settings import Settings
from onboarding.identity import account_tokens, audit, login, web_sessions
from onboarding.identity.account_mail import (
    AccountEmail,
    email_account,
    render_account_email,
    send_account_email,
)
from onboarding.identity.accounts import find_account, set_password
from onboarding.identity.models import Account, AccountToken
from onboarding.identity.ratelimit import RateLimits

MAX_IDENTITY_FAILURES = 5


class IdentityCheck(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    BLOCKED = "blocked"


def reset_link(settings: Settings, token: str) -> str:
    return settings.public_url(f"/password/reset/{token}")


def request_reset(
    session: Session, settings: Settings, limits: RateLimits, *, email: str, now: datetime, ip: str | None
) -> None:
    """Issue a link if the address has an ID. Both paths record a request row, render the email and
    write an audit event; only a known address gets the email. ``TooManyAttempts`` beyond the email
    limits per IP and per address (the same for both paths)."""
    limits.require(
        "email",
        (settings.rate_limit_email_per_ip, "reset-ip", ip),
        (settings.rate_limit_email_per_address, "reset-address", email),
    )
    errors: list[FieldError] = []
    address = clean_email(email, "email", errors).lower()
    if errors:
        raise ValidationFailed(errors)
    account = find_account(session, address)
    _row, token = account_tokens.issue(
        session,
        purpose=account_tokens.PASSWORD_RESET,
        account_id=account.id if account else None,
        email=address,
        now=now,
        valid=timedelta(minutes=settings.password_reset_valid_minutes),
    )
    message = AccountEmail(
        subject=Text(N_("Reset your %(brand)s ID password"), {"brand": settings.brand_name}),
        paragraphs=[
            Text(N_("Someone, hopefully you, asked to reset the password of your ID.")),
            Text(
                N_("The link works once, for %(minutes)s minutes. You will be asked to confirm who you are."),
                {"minutes": settings.password_reset_valid_minutes},
            ),
        ],
        link=reset_link(settings, token),
        link_label=Text(N_("Choose a new password")),
    )
    rendered = render_account_email(settings, account, message)  # for an unknown address too: the same work
    audit.record(
        session, "password_reset_requested", now=now, account_id=account.id if account else None, ip=ip
    )
    if account is not None:
        send_account_email(session, settings, account, rendered, purpose="password_reset", now=now)


def open_link(session: Session, token: str | None, *, now: datetime) -> tuple[AccountToken, Account] | None:
    found = account_tokens.open_link(session, account_tokens.PASSWORD_RESET, token, now=now)
    if found is None or found[1].email != found[0].email:
        return None  # (also) the address changed since: the link belonged to the old one
    return found


def confirm_birth_date(
    session: Session,
    row: AccountToken,
    account: Account,
    birth_date: date | None,
    *,
    now: datetime,
    ip: str | None,
) -> IdentityCheck:
    if row.identity_failures >= MAX_IDENTITY_FAILURES:
        return IdentityCheck.BLOCKED
    if birth_date is not None and birth_date == account.birth_date:
        row.identity_checked_at = now
        return IdentityCheck.OK
    return _identity_failed(session, row, account, now=now, ip=ip)


def _identity_failed(
    session: Session, row: AccountToken, account: Account, *, now: datetime, ip: str | None
) -> IdentityCheck:
    row.identity_failures += 1
    audit.record(session, "password_reset_identity_failed", now=now, account_id=account.id, ip=ip)
    if row.identity_failures >= MAX_IDENTITY_FAILURES:
        row.revoked_at = now
        return IdentityCheck.BLOCKED
    return IdentityCheck.WRONG


def sms_identity_passed(row: AccountToken, *, now: datetime) -> None:
    row.identity_checked_at = now


def complete_reset(
    session: Session,
    settings: Settings,
    row: AccountToken,
    account: Account,
    *,
    password: str,
    confirmation: str,
    now: datetime,
    ip: str | None,
) -> None:
    """Set the new password; raises ``ValidationFailed``. The link is used up, every session ends."""
    if row.identity_checked_at is None:
        raise ValidationFailed([FieldError("identity", N_("Confirm who you are first."))])
    set_password(account, password, confirmation, now=now)
    row.used_at = now
    login.unlock(account)
    ended = web_sessions.sign_out_everywhere(session, account.id, now=now, reason="password_reset")
    audit.record(session, "password_reset", now=now, account_id=account.id, ip=ip, sessions_ended=ended)
    notify_password_changed(session, settings, account, now=now)


def notify_password_changed(session: Session, settings: Settings, account: Account, *, now: datetime) -> None:
    email = AccountEmail(
        subject=Text(N_("Your %(brand)s ID password was changed"), {"brand": settings.brand_name}),
        paragraphs=[
            Text(N_("The password of your ID was changed, and every device was signed out.")),
            Text(N_("If that was not you, reset your password now and contact support.")),
        ],
        ignorable=False,
    )
    email_account(session, settings, account, email, purpose="password_changed", now=now)
