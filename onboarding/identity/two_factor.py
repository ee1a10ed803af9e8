"""Two-step verification (SPEC §3.2): TOTP (RFC 6238: 6 digits, 30 s) with QR enrolment, SMS as the
alternative factor, and 10 single-use backup codes.

The TOTP secret is sealed with the configured key. A code is accepted for the current time step or
one step either side (clock drift), and never for a step at or before the last accepted one, so a
code seen over someone's shoulder cannot be replayed. Backup codes carry 50 random bits each and are
kept as keyed hashes; using one is a conditional UPDATE, so two requests cannot both use it."""

from __future__ import annotations

import base64
import hmac
import secrets
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import keyed_digest, seal_text, unseal_text
from onboarding.core.settings import Settings
from onboarding.identity import audit, sms_codes
from onboarding.identity.accounts import require_password
from onboarding.identity.models import Account, BackupCode

TOTP_SEAL_PURPOSE = "totp-secret"
BACKUP_CODE_COUNT = 10
TOTP, SMS, BACKUP = "totp", "sms", "backup"


def _totp(settings: Settings, account: Account) -> pyotp.TOTP | None:
    if not account.totp_secret_sealed:
        return None
    return pyotp.TOTP(unseal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, account.totp_secret_sealed))


def begin_totp(settings: Settings, account: Account) -> str:
    """A new, unconfirmed secret (replacing an unconfirmed one); returns it for the manual entry."""
    secret = pyotp.random_base32()
    account.totp_secret_sealed = seal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, secret)
    account.totp_confirmed_at = None
    return secret


def pending_secret(settings: Settings, account: Account) -> str | None:
    if account.totp_confirmed_at is not None or not account.totp_secret_sealed:
        return None
    return unseal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, account.totp_secret_sealed)


def provisioning_uri(settings: Settings, account: Account, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=settings.brand_name)


def qr_svg_data_uri(uri: str) -> str:
    """The enrolment QR code as an SVG data URI (no JavaScript, no third party)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def matching_step(totp: pyotp.TOTP, code: str, last_step: int | None, *, now: datetime) -> int | None:
    """The time step a 6-digit code matches (the current one or one either side), never one at or
    before ``last_step`` (a code is used once); None when it matches none. Shared with the staff
    portal's authenticator."""
    cleaned = "".join(c for c in code if c.isdigit())
    if len(cleaned) != 6:
        return None
    current = totp.timecode(now)
    for step in (current, current - 1, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), cleaned):
            return step
    return None


def check_totp(settings: Settings, account: Account, code: str, *, now: datetime) -> bool:
    """True once per time step for a matching code; records the step."""
    totp = _totp(settings, account)
    step = matching_step(totp, code, account.totp_last_counter, now=now) if totp is not None else None
    if step is None:
        return False
    account.totp_last_counter = step
    return True


def confirm_totp(
    session: Session, settings: Settings, account: Account, code: str, *, now: datetime, ip: str | None
) -> list[str] | None:
    """Turn TOTP on once the first code matches; returns fresh backup codes (shown once)."""
    if pending_secret(settings, account) is None or not check_totp(settings, account, code, now=now):
        return None
    account.totp_confirmed_at = now
    account.two_factor = TOTP
    audit.record(session, "two_factor_enabled", now=now, account_id=account.id, ip=ip, method=TOTP)
    return new_backup_codes(session, settings, account, now=now)


def enable_sms(
    session: Session, settings: Settings, account: Account, *, now: datetime, ip: str | None
) -> list[str]:
    """SMS as the factor (it needs a verified mobile number); returns backup codes to show when the ID
    has none left, else an empty list."""
    if not account.has_verified_phone:
        raise ValueError("SMS as a second factor needs a verified mobile number")
    account.two_factor = SMS
    audit.record(session, "two_factor_enabled", now=now, account_id=account.id, ip=ip, method=SMS)
    if backup_codes_left(session, account.id):
        return []
    return new_backup_codes(session, settings, account, now=now)


def disable(session: Session, account: Account, *, password: str, now: datetime, ip: str | None) -> None:
    """Two-step verification off, after the password; raises ``ValidationFailed``."""
    require_password(account, password)
    account.two_factor = None
    account.totp_secret_sealed = None
    account.totp_confirmed_at = None
    account.totp_last_counter = None
    session.execute(delete(BackupCode).where(BackupCode.account_id == account.id))
    audit.record(session, "two_factor_disabled", now=now, account_id=account.id, ip=ip)


def backup_code_digest(settings: Settings, purpose: str, owner_id: int, code: str) -> str:
    """A backup code's keyed hash (spaces, dashes and case ignored), per owner and purpose."""
    normalised = "".join(c for c in code.lower() if c.isalnum())
    return keyed_digest(settings.secret_key_value(), purpose, owner_id, normalised)


def _backup_hash(settings: Settings, account_id: int, code: str) -> str:
    return backup_code_digest(settings, "backup-code", account_id, code)


def new_backup_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(7)).decode().lower()[:10]
    return f"{raw[:5]}-{raw[5:]}"


def new_backup_codes(session: Session, settings: Settings, account: Account, *, now: datetime) -> list[str]:
    """Ten new codes; earlier ones stop working. Only their hashes are stored."""
    session.execute(delete(BackupCode).where(BackupCode.account_id == account.id))
    codes = [new_backup_code() for _ in range(BACKUP_CODE_COUNT)]
    session.add_all(
        BackupCode(account_id=account.id, code_hash=_backup_hash(settings, account.id, c), created_at=now)
        for c in codes
    )
    audit.record(session, "backup_codes_issued", now=now, account_id=account.id)
    return codes


def use_backup_code(
    session: Session, settings: Settings, account: Account, code: str, *, now: datetime, ip: str | None
) -> bool:
    digest = _backup_hash(settings, account.id, code)
    result = session.execute(
        update(BackupCode)
        .where(
            BackupCode.account_id == account.id, BackupCode.code_hash == digest, BackupCode.used_at.is_(None)
        )
        .values(used_at=now),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    audit.record(session, "backup_code_used", now=now, account_id=account.id, ip=ip)
    return True


def regenerate_backup_codes(
    session: Session, settings: Settings, account: Account, *, password: str, now: datetime
) -> list[str] | None:
    """Ten new codes after the password (the old ones stop working); raises ``ValidationFailed``.
    None while two-step verification is off: backup codes are only a second factor's stand-in."""
    if not account.two_factor:
        return None
    require_password(account, password)
    return new_backup_codes(session, settings, account, now=now)


def backup_codes_left(session: Session, account_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(BackupCode)
            .where(BackupCode.account_id == account_id, BackupCode.used_at.is_(None))
        )
        or 0
    )


def login_methods(account: Account) -> list[str]:
    """The second factors an ID can use at login, its authenticator first; backup codes always."""
    methods = [TOTP] if account.totp_confirmed_at is not None else []
    if account.has_verified_phone:
        methods.append(SMS)
    return [*methods, BACKUP]


def check_login_factor(
    session: Session, settings: Settings, account: Account, *, method: str, code: str, now: datetime, ip: str
) -> bool:
    """The second factor at login: an authenticator code, an SMS code or a backup code."""
    if method not in login_methods(account):
        return False
    if method == TOTP:
        return check_totp(settings, account, code, now=now)
    if method == SMS and account.phone is not None:
        outcome = sms_codes.check_code(
            session,
            settings,
            account,
            purpose=sms_codes.LOGIN,
            phone=account.phone,
            code=code,
            now=now,
            ip=ip,
        )
        return outcome is sms_codes.CheckOutcome.OK
    if method == BACKUP:
        return use_backup_code(session, settings, account, code, now=now, ip=ip)
    return False
