"""Consents as records (SPEC §3.4, §3.10): which text version, when granted, when withdrawn, through
what. A consent is never deleted: withdrawing one sets its ``withdrawn_at``, so what the person agreed
to, and until when, stays on record. At most one record of a kind and subject is live at a time."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity.accounts import MARKETING_EMAIL, MARKETING_SMS
from onboarding.identity.models import Account, Consent

TERMS = "terms"
PRIVACY_NOTICE = "privacy_notice"
# Data shared with a partner (subject: the dealer's code), revocable at any time.
PARTNER_DATA_SHARING = "partner_data_sharing"
# ID data transferred to the Data Pass's network provider (subject: the provider's country).
DATA_PASS = "data_pass"  # noqa: S105 (a consent kind, not a password)
KINDS = (TERMS, PRIVACY_NOTICE, PARTNER_DATA_SHARING, MARKETING_EMAIL, MARKETING_SMS, DATA_PASS)
# The kinds whose record names whom it concerns.
_WITH_SUBJECT = frozenset({PARTNER_DATA_SHARING, DATA_PASS})
# The kinds a person can withdraw on their own (terms and privacy notice are the ID's basis: to end
# them, the ID is removed).
WITHDRAWABLE = (PARTNER_DATA_SHARING, MARKETING_EMAIL, MARKETING_SMS, DATA_PASS)

ACTIVATION = "activation"


def _check(kind: str, subject: str | None) -> None:
    # Callers pass constants: a wrong kind or a missing subject is a programming error, not input.
    if kind not in KINDS:
        raise ValueError(f"unknown consent kind {kind!r}")
    if (kind in _WITH_SUBJECT) != (subject is not None):
        raise ValueError(f"consent {kind!r} {'needs' if kind in _WITH_SUBJECT else 'takes no'} subject")


def text_version(settings: Settings, kind: str) -> str:
    """The version of the text a consent of this kind agrees to: the terms of use for the terms, the
    privacy notice (which describes marketing, partner sharing and the Data Pass transfer) otherwise."""
    return settings.terms_version if kind == TERMS else settings.privacy_version


def live(session: Session, account_id: int, kind: str, subject: str | None = None) -> Consent | None:
    """The live (not withdrawn) record of this kind and subject, if any."""
    query = select(Consent).where(
        Consent.account_id == account_id, Consent.kind == kind, Consent.withdrawn_at.is_(None)
    )
    query = query.where(Consent.subject.is_(None) if subject is None else Consent.subject == subject)
    return session.scalar(query.order_by(Consent.id.desc()).limit(1))


def live_consents(session: Session, account_id: int) -> list[Consent]:
    """Every live record of the ID, oldest first."""
    return list(
        session.scalars(
            select(Consent)
            .where(Consent.account_id == account_id, Consent.withdrawn_at.is_(None))
            .order_by(Consent.granted_at, Consent.id)
        )
    )


def grant(
    session: Session,
    account: Account,
    kind: str,
    *,
    version: str,
    source: str,
    now: datetime,
    subject: str | None = None,
) -> Consent:
    """Record the consent. Already live for this text version: that record stands (no duplicate).
    Live for an older text: that record ends (``withdrawn_at``) where the new one starts, so one record
    is live and each names the text it agreed to."""
    _check(kind, subject)
    current = live(session, account.id, kind, subject)
    if current is not None:
        if current.text_version == version:
            return current
        current.withdrawn_at = now
    record = Consent(
        account_id=account.id,
        kind=kind,
        subject=subject,
        text_version=version,
        granted_at=now,
        source=source,
    )
    session.add(record)
    session.flush()
    return record


def withdraw(
    session: Session, account_id: int, kind: str, subject: str | None = None, *, now: datetime
) -> Consent | None:
    """End the live record of this kind and subject (kept, with ``withdrawn_at``); the record, or None
    when there was none."""
    _check(kind, subject)
    current = live(session, account_id, kind, subject)
    if current is not None:
        current.withdrawn_at = now
    return current


def withdraw_record(session: Session, account_id: int, consent_id: int, *, now: datetime) -> Consent | None:
    """Withdraw one of the ID's own live, withdrawable records by its id; None when there is no such
    record (another ID's, already withdrawn, or one that cannot be withdrawn)."""
    record = session.get(Consent, consent_id)
    if (
        record is None
        or record.account_id != account_id
        or record.withdrawn_at is not None
        or record.kind not in WITHDRAWABLE
    ):
        return None
    record.withdrawn_at = now
    return record


@dataclass(frozen=True)
class TermsChoices:
    """What the buyer ticked on the activation's terms page."""

    accept_terms: bool
    accept_privacy: bool
    share_with_partner: bool
    partner: str
    marketing_email: bool
    marketing_sms: bool


def record_terms_step(
    session: Session,
    settings: Settings,
    account: Account,
    choices: TermsChoices,
    *,
    partners: Collection[str],
    now: datetime,
    source: str = ACTIVATION,
) -> None:
    """The terms page's consents: terms of use and privacy notice (both required), sharing data with
    one of ``partners`` (optional; unticked for a partner the ID shares with, it ends), marketing by
    email and SMS (opt-in; the form shows the live state, so unticked ends it). ``ValidationFailed``
    names every problem and nothing is recorded."""
    errors: list[FieldError] = []
    if not choices.accept_terms:
        errors.append(FieldError("accept_terms", N_("Accept the terms of use to continue."), "required"))
    if not choices.accept_privacy:
        errors.append(
            FieldError("accept_privacy", N_("Confirm that you have read the privacy notice."), "required")
        )
    partner = choices.partner.strip().upper()
    if choices.share_with_partner and partner not in partners:
        errors.append(FieldError("partner", N_("Choose one of the listed partners."), "unknown"))
    if errors:
        raise ValidationFailed(errors)

    for kind in (TERMS, PRIVACY_NOTICE):
        grant(session, account, kind, version=text_version(settings, kind), source=source, now=now)
    if choices.share_with_partner:
        grant(
            session,
            account,
            PARTNER_DATA_SHARING,
            version=text_version(settings, PARTNER_DATA_SHARING),
            source=source,
            now=now,
            subject=partner,
        )
    elif partner in partners:
        withdraw(session, account.id, PARTNER_DATA_SHARING, partner, now=now)
    for kind, wanted in ((MARKETING_EMAIL, choices.marketing_email), (MARKETING_SMS, choices.marketing_sms)):
        if wanted:
            grant(session, account, kind, version=text_version(settings, kind), source=source, now=now)
        else:
            withdraw(session, account.id, kind, now=now)
