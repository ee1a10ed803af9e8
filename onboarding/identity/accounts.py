"""Brand IDs: creation, password hashing and checking, age gate, consent records."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_country, clean_email, clean_language, clean_name
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity.models import Account, Consent
from onboarding.identity.passwords import password_problems

MARKETING_EMAIL, MARKETING_SMS = "marketing_email", "marketing_sms"

# OWASP's Argon2id minimum: 19 MiB, 2 iterations, 1 lane.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
    )


# At most one Argon2id computation per core at a time. Each holds 19 MiB and a core for some 25 ms:
# more at once only share the cores and their caches (each gets slower, none finishes sooner) and
# multiply the memory a flood of logins can make the server allocate.
ARGON2_CONCURRENCY = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
)
_HASHING_SLOTS = threading.BoundedSemaphore(ARGON2_CONCURRENCY)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password("not a password: equalises timing for unknown emails")


def hash_password(password: str) -> str:
    with _HASHING_SLOTS:
        return password_hasher().hash(password)


def check_password_hash(stored: str | None, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches the ``stored`` Argon2id hash, and a new hash when the stored one's
    parameters are outdated. No stored hash (an unknown person) costs the same hashing work."""
    hasher = password_hasher()
    try:
        with _HASHING_SLOTS:
            ok = hasher.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored is None or not ok:
        return False, None
    return True, hash_password(password) if hasher.check_needs_rehash(stored) else None


def verify_password(account: Account | None, password: str) -> bool:
    """Check a password; an unknown account costs the same hashing work as a known one."""
    ok, rehashed = check_password_hash(account.password_hash if account else None, password)
    if ok and account is not None and rehashed is not None:
        account.password_hash = rehashed
    return ok


def _is_current(account: Account, password: str) -> bool:
    """Whether ``password`` is the ID's password now (no rehash: the caller replaces it)."""
    try:
        with _HASHING_SLOTS:
            return password_hasher().verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def require_password(account: Account, password: str, field: str = "password") -> None:
    """Sensitive changes ask for the password again; ``ValidationFailed`` names ``field`` if wrong."""
    if not verify_password(account, password):
        raise ValidationFailed([FieldError(field, N_("That password is not correct."))])


def find_account(session: Session, email: str) -> Account | None:
    return session.scalar(_BY_EMAIL, {"email": email.strip().lower()})


_BY_EMAIL = select(Account).where(Account.email == bindparam("email"))  # built once: login looks it up


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def minimum_age(settings: Settings, country: str) -> int:
    return settings.minimum_age_by_country.get(country, settings.minimum_age)


@dataclass
class NewAccount:
    email: str
    password: str
    password_confirmation: str
    first_name: str
    last_name: str
    birth_date: date | str | None  # a form's text (YYYY-MM-DD) until validated
    country: str
    language: str
    accept_terms: bool
    accept_privacy: bool
    phone: str | None = None
    marketing_email: bool = False


def check_birth_date(
    birth_date: date | str | None, country: str, settings: Settings, today: date, errors: list[FieldError]
) -> date | None:
    """The date of birth, or None with its problem added to ``errors``. A form's text must be in the
    form YYYY-MM-DD."""
    if isinstance(birth_date, str):
        text, birth_date = birth_date.strip(), None
        if text:
            try:
                birth_date = date.fromisoformat(text)
            except ValueError:
                errors.append(FieldError("birth_date", N_("Use the form YYYY-MM-DD.")))
                return None
    if birth_date is None:
        errors.append(FieldError("birth_date", N_("Enter your date of birth.")))
    elif birth_date > today or birth_date.year < 1900:
        errors.append(FieldError("birth_date", N_("Enter a real date of birth.")))
    elif age_on(birth_date, today) < minimum_age(settings, country):
        errors.append(
            FieldError(
                "birth_date",
                N_("You must be at least %(age)s to have an ID."),
                "age",
                {"age": minimum_age(settings, country)},
            )
        )
    else:
        return birth_date
    return None


def check_new_password(
    password: str, confirmation: str, personal: list[str], errors: list[FieldError]
) -> None:
    for problem in password_problems(password, personal):
        errors.append(FieldError("password", problem))
    if password != confirmation:
        errors.append(FieldError("password_confirmation", N_("The two passwords differ.")))


def validate_new_account(data: NewAccount, *, settings: Settings, now: datetime) -> NewAccount:
    """The cleaned data, or ``ValidationFailed`` naming every bad field (the address's owner is not
    checked here: invitations and self-registration answer that differently)."""
    errors: list[FieldError] = []
    email = clean_email(data.email, "email", errors).lower()
    first = clean_name(data.first_name, "first_name", errors)
    last = clean_name(data.last_name, "last_name", errors)
    country = clean_country(data.country, "country", errors)
    language = clean_language(data.language, "language", errors)
    check_new_password(data.password, data.password_confirmation, [email, first, last], errors)
    birth_date = check_birth_date(data.birth_date, country, settings, now.date(), errors)
    if not data.accept_terms:
        errors.append(FieldError("accept_terms", N_("Accept the terms of use to continue."), "required"))
    if not data.accept_privacy:
        errors.append(
            FieldError("accept_privacy", N_("Confirm that you have read the privacy notice."), "required")
        )
    if errors:
        raise ValidationFailed(errors)
    return replace(
        data,
        email=email,
        first_name=first,
        last_name=last,
        birth_date=birth_date,
        country=country,
        language=language,
    )


def create_account(
    session: Session, data: NewAccount, *, settings: Settings, now: datetime, via: str, email_verified: bool
) -> Account:
    """Validate and store a new ID with its consent records; raises ``ValidationFailed``."""
    data = validate_new_account(data, settings=settings, now=now)
    if find_account(session, data.email) is not None:
        raise ValidationFailed(
            [FieldError("email", N_("This email address has an ID already; log in instead."), "exists")]
        )
    return add_account(session, data, settings=settings, now=now, via=via, email_verified=email_verified)


def add_account(
    session: Session, data: NewAccount, *, settings: Settings, now: datetime, via: str, email_verified: bool
) -> Account:
    """Store an ID that ``validate_new_account`` returned, for an address that has none."""
    assert isinstance(data.birth_date, date)
    account = Account(
        email=data.email,
        password_hash=hash_password(data.password),
        first_name=data.first_name,
        last_name=data.last_name,
        birth_date=data.birth_date,
        country=data.country,
        language=data.language,
        phone=data.phone,
        email_verified_at=now if email_verified else None,
        created_via=via,
        created_at=now,
    )
    session.add(account)
    session.flush()
    session.add_all(
        [
            Consent(
                account_id=account.id,
                kind="terms",
                text_version=settings.terms_version,
                granted_at=now,
                source=via,
            ),
            Consent(
                account_id=account.id,
                kind="privacy_notice",
                text_version=settings.privacy_version,
                granted_at=now,
                source=via,
            ),
        ]
    )
    if data.marketing_email:
        session.add(
            Consent(
                account_id=account.id,
                kind=MARKETING_EMAIL,
                text_version=settings.privacy_version,
                granted_at=now,
                source=via,
            )
        )
    return account


def set_password(account: Account, password: str, confirmation: str, *, now: datetime) -> None:
    """Replace the password after the rules (length, common passwords, personal data, not the current
    one)."""
    errors: list[FieldError] = []
    check_new_password(password, confirmation, [account.email, account.first_name, account.last_name], errors)
    if not any(error.field == "password" for error in errors) and _is_current(account, password):
        errors.append(FieldError("password", N_("That is your current password. Choose a new one.")))
    if errors:
        raise ValidationFailed(errors)
    account.password_hash = hash_password(password)
    account.password_changed_at = now
