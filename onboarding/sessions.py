"""Server-side web sessions: the cookie carries a random token, the database its hash.

A new session (and token) is issued at every change of privilege: password accepted, second factor
passed, password changed. The old one is ended, so a token seen before login is worthless after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from onboarding.crypto import new_token, token_hash
from onboarding.models import Account, WebSession
from onboarding.settings import Settings

FULL, SECOND_FACTOR, UNVERIFIED = "full", "second_factor", "unverified"
_SESSIONS = cast(Table, WebSession.__table__)
# The statements a login runs, built once: constructing a statement costs more than running a cached
# one, and at login these are most of the database work.
_INSERT_SESSION = insert(_SESSIONS)
_END_BY_TOKEN = (
    update(_SESSIONS)
    .where(_SESSIONS.c.token_hash == bindparam("hash"), _SESSIONS.c.ended_at.is_(None))
    .values(ended_at=bindparam("now"), ended_reason=bindparam("reason"))
)

# A session waiting for its second factor or for email verification is short-lived.
_PARTIAL_MINUTES = 15


@dataclass(frozen=True)
class CurrentSession:
    session: WebSession
    account: Account

    @property
    def stage(self) -> str:
        return self.session.stage


def start(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    stage: str,
    now: datetime,
    ip: str | None,
    user_agent: str | None,
) -> str:
    """A new session for ``account``; returns its token (for the cookie). The caller ends the one it
    replaces (``end`` or ``end_token``): rotation."""
    token = new_token()
    lifetime = (
        timedelta(hours=settings.session_max_hours) if stage == FULL else timedelta(minutes=_PARTIAL_MINUTES)
    )
    session.execute(
        _INSERT_SESSION,
        {
            "token_hash": token_hash(token),
            "account_id": account.id,
            "stage": stage,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + lifetime,
            "ip": ip,
            "user_agent": (user_agent or "")[:300] or None,
        },
    )
    return token


def end_token(session: Session, token: str | None, *, now: datetime, reason: str) -> None:
    """End the live session of a cookie token, if any (rotation at login)."""
    if not token or len(token) > 100:
        return
    session.execute(_END_BY_TOKEN, {"hash": token_hash(token), "now": now, "reason": reason})


def lookup(
    session: Session, settings: Settings, token: str | None, *, now: datetime
) -> CurrentSession | None:
    """The live session for a cookie token, or None (unknown, ended, expired or idle too long)."""
    if not token or len(token) > 100:
        return None
    row = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    if row.stage == FULL and row.last_seen_at + timedelta(minutes=settings.session_idle_minutes) <= now:
        return None
    account = session.get(Account, row.account_id)
    if account is None:
        return None
    # Written at most once a minute: a page view should not always be a database write.
    if now - row.last_seen_at >= timedelta(minutes=1):
        row.last_seen_at = now
    return CurrentSession(row, account)


def end(row: WebSession, *, now: datetime, reason: str) -> None:
    if row.ended_at is None:
        row.ended_at = now
        row.ended_reason = reason


def end_all(
    session: Session, account_id: int, *, now: datetime, reason: str, keep: WebSession | None = None
) -> int:
    """End every live session of an ID (sign out of all devices), except ``keep``."""
    statement = update(WebSession).where(WebSession.account_id == account_id, WebSession.ended_at.is_(None))
    if keep is not None:
        statement = statement.where(WebSession.id != keep.id)
    result = session.execute(statement.values(ended_at=now, ended_reason=reason))  # loaded rows follow
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def live_sessions(session: Session, account_id: int, *, now: datetime) -> list[WebSession]:
    return list(
        session.scalars(
            select(WebSession)
            .where(
                WebSession.account_id == account_id,
                WebSession.ended_at.is_(None),
                WebSession.expires_at > now,
                WebSession.stage == FULL,
            )
            .order_by(WebSession.last_seen_at.desc())
        )
    )
