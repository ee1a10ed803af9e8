"""Password login (SPEC §3.2): one generic failure, lockout after consecutive failures, rate limits
per IP and per account, and the same work for unknown addresses as for known ones.

Unknown addresses are "locked" too, with the same message after the same number of failures
(counted in the rate-limit storage), so the lock message does not reveal which addresses have an ID."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from onboarding.core.settings import Settings
from onboarding.identity import audit, two_factor
from onboarding.identity.accounts import find_account, verify_password
from onboarding.identity.models import Account
from onboarding.identity.ratelimit import RateLimits


class LoginOutcome(StrEnum):
    SIGNED_IN = "signed_in"
    SECOND_FACTOR = "second_factor"
    UNVERIFIED = "unverified"
    FAILED = "failed"
    LOCKED = "locked"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    account: Account | None = None


def is_locked(account: Account, now: datetime) -> bool:
    return account.locked_until is not None and account.locked_until > now


def unlock(account: Account) -> None:
    # Only written when set, so a routine login changes no account row.
    if account.locked_until is not None:
        account.locked_until = None
    if account.failed_logins:
        account.failed_logins = 0


@dataclass(frozen=True)
class LoginAttempt:
    """Whose login it is, read before the password is hashed; ``refused`` when the rate limits
    answered it without any hashing."""

    address: str
    account: Account | None
    refused: LoginOutcome | None = None


def identify(
    session: Session, settings: Settings, limits: RateLimits, *, email: str, ip: str
) -> LoginAttempt:
    """The first half of a password login: the rate limits, then the account (reads only, so the
    caller can end the transaction before Argon2id runs)."""
    address = email.strip().lower()
    if not limits.hit_all(
        (settings.rate_limit_login_per_ip, "login-ip", ip),
        (settings.rate_limit_login_per_account, "login-account", address),
    ):
        return LoginAttempt(address, None, LoginOutcome.RATE_LIMITED)
    return LoginAttempt(address, find_account(session, address) if address else None)


def check_password(
    session: Session,
    settings: Settings,
    limits: RateLimits,
    attempt: LoginAttempt,
    *,
    password: str,
    now: datetime,
    ip: str,
) -> LoginResult:
    """The second half: Argon2id first, before any statement (so no transaction is open while it
    runs), then the failure count, the lock and the audit events."""
    if attempt.refused is not None:
        return LoginResult(attempt.refused)
    account = attempt.account
    if account is None:
        verify_password(None, password)  # the same hashing work as for a known address
        unknown_lock = f"{settings.lockout_failures}/{settings.lockout_minutes} minutes"
        if not limits.hit(unknown_lock, "login-unknown", attempt.address) or not limits.allows(
            unknown_lock, "login-unknown", attempt.address
        ):
            return LoginResult(LoginOutcome.LOCKED)
        return LoginResult(LoginOutcome.FAILED)
    if is_locked(account, now):
        verify_password(None, password)
        audit.record(session, "login_refused_locked", now=now, account_id=account.id, ip=ip)
        return LoginResult(LoginOutcome.LOCKED, account)
    if not verify_password(account, password):
        locked = record_failure(session, settings, account, now=now, ip=ip, factor="password")
        return LoginResult(LoginOutcome.LOCKED if locked else LoginOutcome.FAILED, account)
    unlock(account)
    if account.blocked_at is not None:  # told only to whoever knows the password
        audit.record(session, "login_refused_blocked", now=now, account_id=account.id, ip=ip)
        return LoginResult(LoginOutcome.BLOCKED, account)
    if account.email_verified_at is None:
        return LoginResult(LoginOutcome.UNVERIFIED, account)
    if account.two_factor:
        return LoginResult(LoginOutcome.SECOND_FACTOR, account)
    return LoginResult(LoginOutcome.SIGNED_IN, account)


def check_second_factor(
    session: Session,
    settings: Settings,
    limits: RateLimits,
    account: Account,
    *,
    method: str,
    code: str,
    now: datetime,
    ip: str,
) -> LoginOutcome:
    """The second step of a login: ``SIGNED_IN``, ``FAILED``, ``LOCKED`` or ``RATE_LIMITED``. Wrong
    codes count towards the same lockout as wrong passwords, so codes cannot be guessed for long."""
    if not limits.hit(settings.rate_limit_login_per_account, "second-factor", str(account.id)):
        return LoginOutcome.RATE_LIMITED
    if two_factor.check_login_factor(session, settings, account, method=method, code=code, now=now, ip=ip):
        return LoginOutcome.SIGNED_IN
    locked = record_failure(session, settings, account, now=now, ip=ip, factor=method)
    return LoginOutcome.LOCKED if locked else LoginOutcome.FAILED


def record_failure(
    session: Session, settings: Settings, account: Account, *, now: datetime, ip: str, factor: str
) -> bool:
    """One more consecutive failure (a wrong password or second-factor code); True when it locks.

    Counted in SQL (``failed_logins + 1``), so failures that race each other all count: the account
    row may have been read before the password was hashed."""
    account.failed_logins = Account.failed_logins + 1
    session.flush()  # the UPDATE; reading the attribute below loads the counted value
    if account.failed_logins >= settings.lockout_failures:
        account.locked_until = now + timedelta(minutes=settings.lockout_minutes)
        audit.record(
            session,
            "account_locked",
            now=now,
            account_id=account.id,
            ip=ip,
            failures=account.failed_logins,
            factor=factor,
            until=account.locked_until.isoformat(),
        )
        account.failed_logins = 0
        return True
    audit.record(session, "login_failed", now=now, account_id=account.id, ip=ip, factor=factor)
    return False
