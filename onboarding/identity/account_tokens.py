"""One-time links sent by email: verify an email address, reset a password, confirm a new address.

Tokens are 256-bit random; only their SHA-256 is stored and looked up (an index lookup of a hash
reveals nothing about the token). Issuing a new link of one purpose revokes the earlier live ones."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, token_hash
from onboarding.identity.models import Account, AccountToken

VERIFY_EMAIL, PASSWORD_RESET, EMAIL_CHANGE = "verify_email", "password_reset", "email_change"


def issue(
    session: Session,
    *,
    purpose: str,
    account_id: int | None,
    email: str,
    now: datetime,
    valid: timedelta,
) -> tuple[AccountToken, str]:
    # Also for an unknown address (id 0 matches no row): both paths do the same statements.
    revoke(session, account_id or 0, purpose, now=now)
    token = new_token()
    row = AccountToken(
        purpose=purpose,
        token_hash=token_hash(token),
        account_id=account_id,
        email=email,
        created_at=now,
        expires_at=now + valid,
        identity_failures=0,
    )
    session.add(row)
    session.flush()
    return row, token


def revoke(session: Session, account_id: int, purpose: str, *, now: datetime) -> None:
    session.execute(
        update(AccountToken)
        .where(
            AccountToken.account_id == account_id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
            AccountToken.revoked_at.is_(None),
        )
        .values(revoked_at=now),
        execution_options={"synchronize_session": False},
    )


def find(session: Session, purpose: str, token: str | None) -> AccountToken | None:
    """The token's row whatever its state (callers explain expired or used links), or None."""
    if not token or len(token) > 100:
        return None
    return session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == token_hash(token), AccountToken.purpose == purpose
        )
    )


def open_link(
    session: Session, purpose: str, token: str | None, *, now: datetime
) -> tuple[AccountToken, Account] | None:
    """An emailed link's usable row and its ID, or None (unknown, used, replaced, expired, ID gone)."""
    row = find(session, purpose, token)
    if row is None or not usable(row, now):
        return None
    account = session.get(Account, row.account_id)
    return None if account is None else (row, account)


def usable(row: AccountToken | None, now: datetime) -> bool:
    return (
        row is not None
        and row.account_id is not None
        and row.used_at is None
        and row.revoked_at is None
        and row.expires_at > now
    )
