"""Account settings (SPEC §3.2, seed 000): details, login email (verified again, the old address
told), password (current one required, other sessions ended), communication preferences as consent
records, sign out of all devices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_email, clean_language, clean_name
from onboarding.core.i18n import N_, Text
from onboarding.core.settings import Settings
from onboarding.identity import account_tokens, audit, web_sessions
from onboarding.identity.account_mail import AccountEmail, email_account
from onboarding.identity.accounts import (
    MARKETING_EMAIL,
    MARKETING_SMS,
    check_birth_date,
    find_account,
    require_password,
    set_password,
)
from onboarding.identity.models import Account, Consent, WebSession
from onboarding.identity.password_reset import notify_password_changed

PREFERENCE_KINDS = (MARKETING_EMAIL, MARKETING_SMS)


def update_details(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    first_name: str,
    last_name: str,
    birth_date: date | str | None,
    language: str,
    now: datetime,
) -> None:
    errors: list[FieldError] = []
    first = clean_name(first_name, "first_name", errors)
    last = clean_name(last_name, "last_name", errors)
    lang = clean_language(language, "language", errors)
    birth = check_birth_date(birth_date, account.country, settings, now.date(), errors)
    if errors:
        raise ValidationFailed(errors)
    assert birth is not None
    account.first_name, account.last_name, account.birth_date, account.language = first, last, birth, lang
    audit.record(session, "details_changed", now=now, account_id=account.id)


def request_email_change(
    session: Session, settings: Settings, account: Account, *, new_email: str, password: str, now: datetime
) -> None:
    """Send a confirmation link to the new address and a notice to the current one. An address that
    has an ID already gets a notice instead, and the answer is the same."""
    errors: list[FieldError] = []
    address = clean_email(new_email, "new_email", errors).lower()
    if not errors and address == account.email:
        errors.append(FieldError("new_email", N_("That is your current address.")))
    if errors:
        raise ValidationFailed(errors)
    require_password(account, password, "current_password")
    hours = settings.email_change_valid_hours
    owner = find_account(session, address)
    _row, token = account_tokens.issue(
        session,
        purpose=account_tokens.EMAIL_CHANGE,
        account_id=account.id,
        email=address,
        now=now,
        valid=timedelta(hours=hours),
    )
    if owner is None:
        confirm = AccountEmail(
            subject=Text(N_("Confirm your new login email for %(brand)s"), {"brand": settings.brand_name}),
            paragraphs=[
                Text(N_("Confirm that this is the new login email of your ID.")),
                Text(N_("The link is valid for %(hours)s hours."), {"hours": hours}),
            ],
            link=settings.public_url(f"/account/email/confirm/{token}"),
            link_label=Text(N_("Confirm my new email")),
        )
    else:
        # The address's owner reads this one, in their language.
        confirm = AccountEmail(
            subject=Text(
                N_("Someone tried to use your address for another %(brand)s ID"),
                {"brand": settings.brand_name},
            ),
            paragraphs=[
                Text(
                    N_(
                        "Someone tried to move another ID to this email address, which already has an ID. "
                        "Nothing was changed."
                    )
                )
            ],
        )
    email_account(
        session, settings, owner or account, confirm, purpose="email_change_confirm", now=now, to=address
    )
    notice = AccountEmail(
        subject=Text(
            N_("A change of your %(brand)s login email was requested"), {"brand": settings.brand_name}
        ),
        paragraphs=[
            Text(
                N_("Someone signed in to your ID asked to change its login email to %(masked)s."),
                {"masked": mask_email(address)},
            ),
            Text(
                N_(
                    "Nothing changes until the new address is confirmed. "
                    "If it was not you, change your password now."
                )
            ),
        ],
        ignorable=False,
    )
    email_account(session, settings, account, notice, purpose="email_change_notice", now=now)
    audit.record(session, "email_change_requested", now=now, account_id=account.id)


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def confirm_email_change(session: Session, token: str | None, *, now: datetime) -> Account | None:
    found = account_tokens.open_link(session, account_tokens.EMAIL_CHANGE, token, now=now)
    if found is None or find_account(session, found[0].email) is not None:
        return None  # (also) the new address got an ID of its own meanwhile
    row, account = found
    old = account.email
    account.email = row.email
    account.email_verified_at = now
    row.used_at = now
    audit.record(
        session,
        "email_changed",
        now=now,
        account_id=account.id,
        old=mask_email(old),
        new=mask_email(row.email),
    )
    return account


def change_password(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    current_password: str,
    password: str,
    confirmation: str,
    now: datetime,
    keep: WebSession | None,
) -> None:
    """Needs the current password; ends every other session (the caller rotates its own)."""
    require_password(account, current_password, "current_password")
    set_password(account, password, confirmation, now=now)
    ended = web_sessions.end_all(session, account.id, now=now, reason="password_changed", keep=keep)
    audit.record(session, "password_changed", now=now, account_id=account.id, sessions_ended=ended)
    notify_password_changed(session, settings, account, now=now)


@dataclass(frozen=True)
class Preferences:
    marketing_email: bool
    marketing_sms: bool


def _live_consent(session: Session, account_id: int, kind: str) -> Consent | None:
    return session.scalar(
        select(Consent)
        .where(Consent.account_id == account_id, Consent.kind == kind, Consent.withdrawn_at.is_(None))
        .order_by(Consent.id.desc())
        .limit(1)
    )


def preferences(session: Session, account_id: int) -> Preferences:
    return Preferences(
        marketing_email=_live_consent(session, account_id, MARKETING_EMAIL) is not None,
        marketing_sms=_live_consent(session, account_id, MARKETING_SMS) is not None,
    )


def set_preferences(
    session: Session, settings: Settings, account: Account, wanted: Preferences, *, now: datetime, source: str
) -> list[str]:
    """Grant or withdraw each marketing consent as a record; returns the kinds that changed."""
    changed = []
    for kind, on in zip(PREFERENCE_KINDS, (wanted.marketing_email, wanted.marketing_sms), strict=True):
        live = _live_consent(session, account.id, kind)
        if on and live is None:
            session.add(
                Consent(
                    account_id=account.id,
                    kind=kind,
                    text_version=settings.privacy_version,
                    granted_at=now,
                    source=source,
                )
            )
            changed.append(kind)
        elif not on and live is not None:
            live.withdrawn_at = now
            changed.append(kind)
    if changed:
        audit.record(session, "preferences_changed", now=now, account_id=account.id, changed=changed)
    return changed
