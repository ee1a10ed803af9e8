"""Staff web sessions: the cookie (``onb_staff``, apart from the buyers' ``onb_session``) carries a
random token, the database its hash. A new token at every change of privilege (password accepted,
second factor passed); the same idle and absolute limits as IDs' sessions, and 15 minutes for a
session waiting for its second factor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, token_hash
from onboarding.core.settings import Settings
from onboarding.portal.models import StaffMember, StaffSession

FULL, SECOND_FACTOR = "full", "second_factor"
_PARTIAL_MINUTES = 15


@dataclass(frozen=True)
class CurrentStaff:
    session: StaffSession
    staff: StaffMember

    @property
    def stage(self) -> str:
        return self.session.stage


def start(
    session: Session,
    settings: Settings,
    staff: StaffMember,
    *,
    stage: str,
    old_token: str | None,
    now: datetime,
    ip: str | None,
) -> str:
    """A new session (ending the browser's previous one); returns its token for the cookie."""
    if old_token and len(old_token) <= 100:
        session.execute(
            update(StaffSession)
            .where(StaffSession.token_hash == token_hash(old_token), StaffSession.ended_at.is_(None))
            .values(ended_at=now, ended_reason="rotated")
        )
    token = new_token()
    lifetime = (
        timedelta(hours=settings.session_max_hours) if stage == FULL else timedelta(minutes=_PARTIAL_MINUTES)
    )
    session.add(
        StaffSession(
            staff_id=staff.id,
            token_hash=token_hash(token),
            stage=stage,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
            ip=ip,
        )
    )
    session.flush()
    return token


def lookup(session: Session, settings: Settings, token: str | None, *, now: datetime) -> CurrentStaff | None:
    """The live session of a cookie token with its (active) staff member, or None."""
    if not token or len(token) > 100:
        return None
    found = session.execute(
        select(StaffSession, StaffMember)
        .join(StaffMember, StaffMember.id == StaffSession.staff_id)
        .where(StaffSession.token_hash == token_hash(token))
    ).one_or_none()
    if found is None:
        return None
    row, staff = found
    if row.ended_at is not None or row.expires_at <= now or staff.deactivated_at is not None:
        return None
    if row.stage == FULL and row.last_seen_at + timedelta(minutes=settings.session_idle_minutes) <= now:
        return None
    if now - row.last_seen_at >= timedelta(minutes=1):
        row.last_seen_at = now
    return CurrentStaff(row, staff)


def end(row: StaffSession, *, now: datetime, reason: str) -> None:
    if row.ended_at is None:
        row.ended_at = now
        row.ended_reason = reason


def end_all(session: Session, staff_id: int, *, now: datetime, reason: str) -> int:
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
