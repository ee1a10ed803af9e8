"""The vehicle security PIN (SPEC §3.3): exactly 4 digits, trivial ones refused with the reason,
stored hashed, 3 wrong entries at the car lock it until the owner resets it on the web after
re-entering the password. Only the primary user sets it (the activation flow and settings check).

Ten thousand PINs are searched in no time whatever the hash, so the PIN is first keyed with the
configured secret (HMAC) and then hashed with Argon2id: a stolen table alone reveals nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from itertools import pairwise

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from onboarding.core.crypto import keyed_digest
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import audit
from onboarding.identity.accounts import password_hasher, require_password
from onboarding.identity.models import Account, SecurityPin


class PinCheck(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"
    NOT_SET = "not_set"


@dataclass(frozen=True)
class PinResult:
    outcome: PinCheck
    tries_left: int = 0


def pin_problem(pin: str, birth_date: date | None) -> str | None:
    """Why a PIN is refused, or None."""
    if len(pin) != 4 or not pin.isascii() or not pin.isdigit():
        return N_("The PIN must be exactly 4 digits.")
    if len(set(pin)) == 1:
        return N_("All four digits are the same; choose a PIN that is harder to guess.")
    steps = {int(b) - int(a) for a, b in pairwise(pin)}
    if steps in ({1}, {-1}):
        return N_("The digits run in order (like 1234 or 4321); choose a PIN that is harder to guess.")
    if birth_date is not None:
        if pin == f"{birth_date.year:04d}":
            return N_("That is your birth year; choose a PIN that is harder to guess.")
        if pin in (
            f"{birth_date.day:02d}{birth_date.month:02d}",
            f"{birth_date.month:02d}{birth_date.day:02d}",
        ):
            return N_("That is your birthday; choose a PIN that is harder to guess.")
    return None


def _keyed(settings: Settings, account_id: int, pin: str) -> str:
    return keyed_digest(settings.secret_key_value(), "security-pin", account_id, pin)


def has_pin(session: Session, account: Account) -> bool:
    return session.get(SecurityPin, account.id) is not None


def set_pin(
    session: Session,
    settings: Settings,
    account: Account,
    pin: str,
    confirmation: str,
    *,
    now: datetime,
    ip: str | None,
    actor: str = "self",
) -> None:
    """Set or replace the PIN (and lift a lock); raises ``ValidationFailed`` with the reason."""
    pin, confirmation = pin.strip(), confirmation.strip()
    problem = pin_problem(pin, account.birth_date)
    if problem:
        raise ValidationFailed([FieldError("pin", problem)])
    if pin != confirmation:
        raise ValidationFailed([FieldError("pin_confirmation", N_("The two PINs differ."))])
    digest = password_hasher().hash(_keyed(settings, account.id, pin))
    row = session.get(SecurityPin, account.id)
    kind = "pin_set" if row is None else "pin_reset"
    if row is None:
        session.add(SecurityPin(account_id=account.id, pin_hash=digest, failures=0, set_at=now))
    else:
        was_locked = row.locked_at is not None
        row.pin_hash, row.failures, row.locked_at, row.set_at = digest, 0, None, now
        if was_locked:
            kind = "pin_unlocked"
    audit.record(session, kind, now=now, account_id=account.id, actor=actor, ip=ip)


def reset_pin(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    password: str,
    pin: str,
    confirmation: str,
    now: datetime,
    ip: str | None,
) -> None:
    """The web reset (it also lifts a lock from the car): only after the password is entered again."""
    require_password(account, password)
    set_pin(session, settings, account, pin, confirmation, now=now, ip=ip)


def check_pin(
    session: Session, settings: Settings, account: Account, pin: str, *, now: datetime, actor: str
) -> PinResult:
    """The check the car (in-car API) uses; the third wrong PIN in a row locks it."""
    row = session.get(SecurityPin, account.id, with_for_update=True)
    if row is None:
        return PinResult(PinCheck.NOT_SET)
    if row.locked_at is not None:
        return PinResult(PinCheck.LOCKED)
    try:
        ok: bool = password_hasher().verify(row.pin_hash, _keyed(settings, account.id, pin.strip()))
    except (VerificationError, InvalidHashError):
        ok = False
    if ok:
        row.failures = 0
        return PinResult(PinCheck.OK, settings.pin_max_failures)
    row.failures += 1
    if row.failures >= settings.pin_max_failures:
        row.locked_at = now
        audit.record(
            session, "pin_locked", now=now, account_id=account.id, actor=actor, failures=row.failures
        )
        return PinResult(PinCheck.LOCKED)
    audit.record(session, "pin_failed", now=now, account_id=account.id, actor=actor)
    return PinResult(PinCheck.WRONG, settings.pin_max_failures - row.failures)


def pin_locked(session: Session, account: Account) -> bool:
    row = session.get(SecurityPin, account.id)
    return row is not None and row.locked_at is not None
