"""Self-registration without an invitation (SPEC §3.2, seed 000): an email verification link valid
72 hours, resend, no access until verified.

The answer to a registration is the same whether or not the address has an ID, so the form cannot
be used to find out who is registered: the owner of an existing ID gets a notice instead. An
unverified registration whose last link has expired may be taken over by a new registration of the
same address (whoever verifies first owns it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.i18n import N_, Text
from onboarding.core.settings import Settings
from onboarding.identity import account_tokens, audit
from onboarding.identity.account_mail import AccountEmail, email_account
from onboarding.identity.accounts import NewAccount, add_account, find_account, validate_new_account
from onboarding.identity.models import Account, AccountToken
from onboarding.identity.ratelimit import RateLimits


def verification_link(settings: Settings, token: str) -> str:
    return settings.public_url(f"/register/verify/{token}")


def _abandoned(session: Session, account: Account, now: datetime) -> bool:
    """Unverified, and no verification link of it is still usable."""
    if account.email_verified_at is not None:
        return False
    live = session.scalar(
        select(AccountToken.id).where(
            AccountToken.account_id == account.id,
            AccountToken.purpose == account_tokens.VERIFY_EMAIL,
            AccountToken.used_at.is_(None),
            AccountToken.revoked_at.is_(None),
            AccountToken.expires_at > now,
        )
    )
    return live is None


def register(
    session: Session,
    settings: Settings,
    limits: RateLimits,
    data: NewAccount,
    *,
    now: datetime,
    ip: str | None,
) -> Account | None:
    """Create an unverified ID and send its verification link; raises ``ValidationFailed`` (and
    ``TooManyAttempts`` beyond the email limits per IP and per address).

    Returns None when the address already has an ID (its owner is told instead)."""
    limits.require(
        "email",
        (settings.rate_limit_email_per_ip, "register-ip", ip),
        (settings.rate_limit_email_per_address, "register-address", data.email),
    )
    data = validate_new_account(data, settings=settings, now=now)
    existing = find_account(session, data.email)
    if existing is not None and _abandoned(session, existing, now):
        audit.record(session, "registration_taken_over", now=now, account_id=None, ip=ip)
        session.delete(existing)
        session.flush()
        existing = None
    if existing is not None:
        _notify_existing(session, settings, existing, now=now)
        audit.record(session, "registration_for_existing_id", now=now, account_id=existing.id, ip=ip)
        return None
    account = add_account(session, data, settings=settings, now=now, via="registration", email_verified=False)
    send_verification(session, settings, account, now=now)
    audit.record(session, "registered", now=now, account_id=account.id, ip=ip)
    return account


def resend_verification(
    session: Session, settings: Settings, limits: RateLimits, account: Account, *, now: datetime
) -> None:
    """A new verification link for an unverified ID that asks for one (the old link stops working);
    ``TooManyAttempts`` beyond the email limit per address."""
    limits.require("email", (settings.rate_limit_email_per_address, "verify-resend", account.email))
    send_verification(session, settings, account, now=now)


def send_verification(session: Session, settings: Settings, account: Account, *, now: datetime) -> None:
    hours = settings.email_verification_valid_hours
    _row, token = account_tokens.issue(
        session,
        purpose=account_tokens.VERIFY_EMAIL,
        account_id=account.id,
        email=account.email,
        now=now,
        valid=timedelta(hours=hours),
    )
    email = AccountEmail(
        subject=Text(N_("Confirm your email address for your %(brand)s ID"), {"brand": settings.brand_name}),
        paragraphs=[
            Text(N_("Welcome! Confirm your email address to start using your ID.")),
            Text(N_("The link is valid for %(hours)s hours."), {"hours": hours}),
        ],
        link=verification_link(settings, token),
        link_label=Text(N_("Activate my ID")),
    )
    email_account(session, settings, account, email, purpose="verify_email", now=now)


def _notify_existing(session: Session, settings: Settings, account: Account, *, now: datetime) -> None:
    email = AccountEmail(
        subject=Text(
            N_("Someone tried to create a %(brand)s ID with your address"), {"brand": settings.brand_name}
        ),
        paragraphs=[
            Text(N_("Someone tried to create a new ID with this email address, which already has one.")),
            Text(N_("If it was you, log in with your password, or reset it if you have forgotten it.")),
        ],
        link=settings.public_url("/login"),
        link_label=Text(N_("Log in")),
    )
    email_account(session, settings, account, email, purpose="registration_notice", now=now)


def verify(session: Session, token: str | None, *, now: datetime, ip: str | None) -> Account | None:
    """Mark the address verified; None if the link is unknown, used, replaced or expired."""
    found = account_tokens.open_link(session, account_tokens.VERIFY_EMAIL, token, now=now)
    if found is None or found[1].email != found[0].email:
        return None
    row, account = found
    row.used_at = now
    if account.email_verified_at is None:
        account.email_verified_at = now
        audit.record(session, "email_verified", now=now, account_id=account.id, ip=ip)
    return account
