"""The audit log: security-relevant events as rows (lockouts, resets, second factors, the PIN, staff
corrections). Details never carry a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from onboarding.models import AuditEvent


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
    session.execute(
        _INSERT_EVENT,
        {
            "at": now,
            "kind": kind,
            "account_id": account_id,
            "actor": actor,
            "ip": ip,
            "details": details or None,
        },
    )


# Built once: constructing a statement costs more than running a cached one.
_INSERT_EVENT = insert(cast(Table, AuditEvent.__table__))
