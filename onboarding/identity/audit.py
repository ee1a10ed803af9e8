"""The audit log: security-relevant events as rows (lockouts, resets, second factors, the PIN, staff
corrections). Details never carry a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert
from sqlalchemy.orm import Session

from onboarding.identity.models import AuditEvent


@dataclass(frozen=True)
class StaffContext:
    """A staff member's action: who did it, and the dealer and country of what it was done to."""

    staff_id: int | None
    dealer_code: str | None
    country: str | None


def event_row(
    kind: str,
    *,
    now: datetime,
    account_id: int | None,
    actor: str = "self",
    ip: str | None = None,
    staff: StaffContext | None = None,
    **details: Any,
) -> dict[str, Any]:
    """An event's column values (``record`` writes one; ``insert_bound`` writes one in another
    statement)."""
    return {
        "at": now,
        "kind": kind,
        "account_id": account_id,
        "actor": actor,
        "ip": ip,
        "details": details or None,
        "staff_id": staff.staff_id if staff else None,
        "dealer_code": staff.dealer_code if staff else None,
        "country": staff.country if staff else None,
    }


def record(
    session: Session,
    kind: str,
    *,
    now: datetime,
    account_id: int | None,
    actor: str = "self",
    ip: str | None = None,
    **details: Any,
) -> None:
    # One Core INSERT, sent at once: nothing reads an event back in the unit of work that records it,
    # and the ORM's flush bookkeeping for a new object costs more than the row (login is a hot path).
    record_row(session, event_row(kind, now=now, account_id=account_id, actor=actor, ip=ip, **details))


def record_row(session: Session, row: dict[str, Any]) -> None:
    session.execute(_INSERT_EVENT, row)


def insert_bound(prefix: str) -> Insert:
    """An INSERT of one event whose values are bind parameters named ``prefix`` + the keys of
    ``event_row``: for a statement that writes an event together with other rows."""
    return insert(_EVENTS).values(
        {name: bindparam(prefix + name, type_=_EVENTS.c[name].type) for name in _EVENT_COLUMNS}
    )


# Built once: constructing a statement costs more than running a cached one.
_EVENTS = cast(Table, AuditEvent.__table__)
_EVENT_COLUMNS = ("at", "kind", "account_id", "actor", "ip", "details", "staff_id", "dealer_code", "country")
_INSERT_EVENT = insert(_EVENTS)
