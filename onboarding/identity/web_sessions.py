"""Server-side web sessions: the cookie carries a random token, the database its hash.

A new session (and token) is issued at every change of privilege: password accepted, second factor
passed, password changed. The old one is ended, so a token seen before login is worthless after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, token_hash
from onboarding.core.settings import Settings
from onboarding.identity import audit
from onboarding.identity.models import Account, WebSession

FULL, SECOND_FACTOR, UNVERIFIED = "full", "second_factor", "unverified"
_SESSIONS = cast(Table, WebSession.__table__)
# The statements a login runs, built once: constructing a statement costs more than running a cached
# one, and at login these are most of the database work.
_SESSION_COLUMNS = (
    "token_hash",
    "account_id",
    "stage",
    "created_at",
    "last_seen_at",
    "expires_at",
    "ip",
    "user_agent",
)
_INSERT_SESSION = insert(_SESSIONS)
_END_BY_TOKEN = (
    update(_SESSIONS)
    .where(_SESSIONS.c.token_hash == bindparam("old_hash"), _SESSIONS.c.ended_at.is_(None))
    .values(ended_at=bindparam("rotated_at"), ended_reason=bindparam("rotated_reason"))
)
# Rotation on PostgreSQL: ending the old session, starting the new one and recording the event are
# one statement (data-modifying WITH clauses), so one round trip in autocommit instead of five. SQLite
# allows no INSERT or UPDATE inside WITH, and its statements cost no round trip.
# Every parameter is prefixed: a parameter named like a column would be taken as a value for that column
# by the UPDATE in the WITH clause too (SQLAlchemy's compiler matches parameter names to columns).
_START_BOUND = insert(_SESSIONS).values(
    {name: bindparam(f"session_{name}", type_=_SESSIONS.c[name].type) for name in _SESSION_COLUMNS}
)
_ROTATE = _START_BOUND.add_cte(_END_BY_TOKEN.cte("rotated"))
_ROTATE_AND_RECORD = _ROTATE.add_cte(audit.insert_bound("event_").cte("recorded"))

# Every signed-in page looks its session up: one query for the session and its account.
_SESSION_AND_ACCOUNT = (
    select(WebSession, Account)
    .join(Account, Account.id == WebSession.account_id)
    .where(WebSession.token_hash == bindparam("hash"))
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


def _new_session_row(
    settings: Settings,
    account: Account,
    token: str,
    *,
    stage: str,
    now: datetime,
    ip: str | None,
    user_agent: str | None,
) -> dict[str, Any]:
    lifetime = (
        timedelta(hours=settings.session_max_hours) if stage == FULL else timedelta(minutes=_PARTIAL_MINUTES)
    )
    return {
        "token_hash": token_hash(token),
        "account_id": account.id,
        "stage": stage,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + lifetime,
        "ip": ip,
        "user_agent": (user_agent or "")[:300] or None,
    }


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
    replaces (``end``), or calls ``rotate`` instead."""
    token = new_token()
    row = _new_session_row(settings, account, token, stage=stage, now=now, ip=ip, user_agent=user_agent)
    session.execute(_INSERT_SESSION, row)
    return token


def rotate(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    old_token: str | None,
    stage: str,
    now: datetime,
    ip: str | None,
    user_agent: str | None,
    event: dict[str, Any] | None = None,
) -> str:
    """A new session for ``account`` that ends the live one of the browser's ``old_token`` (if any),
    so a token seen before a login is worthless after it; records ``event`` (an ``audit.event_row``)
    too. Returns the new token.

    One statement on PostgreSQL: a caller with nothing else to write can run it in autocommit
    (``db.begin_single_statement``)."""
    token = new_token()
    row = _new_session_row(settings, account, token, stage=stage, now=now, ip=ip, user_agent=user_agent)
    old_hash = token_hash(old_token) if old_token and len(old_token) <= 100 else None
    ending = {"old_hash": old_hash, "rotated_at": now, "rotated_reason": "rotated"}
    if session.get_bind().dialect.name == "postgresql":
        params = {f"session_{name}": value for name, value in row.items()} | ending
        if event is None:
            session.execute(_ROTATE, params)
        else:
            session.execute(
                _ROTATE_AND_RECORD, params | {f"event_{name}": value for name, value in event.items()}
            )
        return token
    if old_hash is not None:
        session.execute(_END_BY_TOKEN, ending)
    session.execute(_INSERT_SESSION, row)
    if event is not None:
        audit.record_row(session, event)
    return token


def lookup(
    session: Session, settings: Settings, token: str | None, *, now: datetime
) -> CurrentSession | None:
    """The live session for a cookie token, or None (unknown, ended, expired or idle too long)."""
    if not token or len(token) > 100:
        return None
    found = session.execute(_SESSION_AND_ACCOUNT, {"hash": token_hash(token)}).one_or_none()
    if found is None:
        return None
    row, account = found
    if row.ended_at is not None or row.expires_at <= now:
        return None
    if row.stage == FULL and row.last_seen_at + timedelta(minutes=settings.session_idle_minutes) <= now:
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


# Called, in the caller's transaction, with (session, account_id, now) when an ID is signed out of all
# its devices: the in-car API subscribes (``vehicles.incar.revocation``) and ends the cars' grants;
# identity sits below it and cannot call it.
SignedOutEverywhere = Callable[[Session, int, datetime], None]
on_signed_out_everywhere: list[SignedOutEverywhere] = []


def sign_out_everywhere(session: Session, account_id: int, *, now: datetime, reason: str) -> int:
    """Every web session of the ID ends, and every subscriber (in-car logins) ends its part."""
    ended = end_all(session, account_id, now=now, reason=reason)
    for subscriber in list(on_signed_out_everywhere):
        subscriber(session, account_id, now)
    return ended


def sign_out_device(
    session: Session, account_id: int, session_id: int, *, now: datetime, ip: str | None
) -> WebSession | None:
    """End one of the ID's own sessions (a device on the security page), audited like the other
    sign-outs. None, and nothing changed, for a session that is not the ID's (or does not exist)."""
    row = session.scalar(
        select(WebSession).where(WebSession.id == session_id, WebSession.account_id == account_id)
    )
    if row is None:
        return None
    if row.ended_at is None:
        end(row, now=now, reason="signed_out_device")
        audit.record(session, "signed_out_device", now=now, account_id=account_id, ip=ip, session_id=row.id)
    return row


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
