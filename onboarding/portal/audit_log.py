"""The portal's audit log (SPEC §3.8): who did what, when and why, newest first, filtered by kind,
by who and by day, and scoped like everything else (``scope.scoped``: an entry belongs to the dealer
and market of what was done; platform admins see every entry, the IDs' own security events too)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.identity.models import AuditEvent
from onboarding.portal.models import StaffMember
from onboarding.portal.scope import scoped

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilters:
    kind: str | None = None
    who: str | None = None  # a part of the actor ("staff:12 ann@dealer.example", "cli", ...)
    since: date | None = None
    until: date | None = None

    def query(self) -> dict[str, str]:
        values = {
            "kind": self.kind,
            "who": self.who,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {name: value for name, value in values.items() if value}


def parse_filters(params: dict[str, str]) -> AuditFilters:
    errors: list[FieldError] = []

    def day(name: str) -> date | None:
        text = (params.get(name) or "").strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            errors.append(FieldError(name, N_("Enter a date as YYYY-MM-DD.")))
            return None

    kind = (params.get("kind") or "").strip() or None
    if kind is not None and (len(kind) > 40 or not kind.replace("_", "").isalnum()):
        errors.append(FieldError("kind", N_("A kind of entry, such as staff_signed_in.")))
    who = " ".join((params.get("who") or "").split()) or None
    if who is not None and len(who) > 120:
        errors.append(FieldError("who", N_("At most %(count)s characters.")))
    since, until = day("since"), day("until")
    if since and until and until < since:
        errors.append(FieldError("until", N_("The end of the period is before its start.")))
    if errors:
        raise ValidationFailed(errors)
    return AuditFilters(kind, who, since, until)


def entries(
    session: Session, staff: StaffMember, filters: AuditFilters, *, after: int | None
) -> tuple[list[AuditEvent], int | None]:
    """A page of the entries ``staff`` may see, newest first; and the keyset of the next page."""
    statement: Any = scoped(staff, select(AuditEvent), AuditEvent)
    if filters.kind:
        statement = statement.where(AuditEvent.kind == filters.kind)
    if filters.who:
        pattern = filters.who.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(AuditEvent.actor.ilike(f"%{pattern}%", escape="\\"))
    if filters.since:
        statement = statement.where(AuditEvent.at >= datetime.combine(filters.since, time.min, tzinfo=UTC))
    if filters.until:
        end = datetime.combine(filters.until + timedelta(days=1), time.min, tzinfo=UTC)
        statement = statement.where(AuditEvent.at < end)
    if after is not None:
        statement = statement.where(AuditEvent.id < after)
    found = list(session.scalars(statement.order_by(AuditEvent.id.desc()).limit(PAGE_SIZE + 1)))
    next_after = found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None
    return found[:PAGE_SIZE], next_after
