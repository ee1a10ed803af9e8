"""The audit log: security-relevant events as rows (lockouts, resets, second factors, the PIN, staff
corrections). Details never carry a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
) -> AuditEvent:
    event = AuditEvent(at=now, kind=kind, account_id=account_id, actor=actor, ip=ip, details=details or None)
    session.add(event)
    return event
