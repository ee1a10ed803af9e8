"""Blocking an ID (support: fraud, a stolen identity, a court order): it can no longer sign in, every
web session and in-car login ends at once, and every subscriber of ``on_account_deactivated`` ends
its part (the charging service blocks the ID's cards, which operators are told of). Unblocking lets
the ID sign in again; what ended stays ended (cards are booked again).

Deleting an ID (SPEC §3.10, not built yet) deactivates the same way: it is to call ``deactivate``
with its own reason before it archives anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from onboarding.identity import audit, web_sessions
from onboarding.identity.models import Account

BLOCKED = "account_blocked"
REASON_MAX = 200


@dataclass(frozen=True)
class AccountDeactivated:
    account_id: int
    reason: str  # BLOCKED, or the deletion's reason
    at: datetime


on_account_deactivated: list[Callable[[Session, AccountDeactivated], None]] = []


def deactivate(session: Session, event: AccountDeactivated) -> None:
    """Every web session and in-car login of the ID ends, and each subscriber ends its part (in the
    caller's transaction)."""
    web_sessions.sign_out_everywhere(session, event.account_id, now=event.at, reason=event.reason)
    for subscriber in list(on_account_deactivated):
        subscriber(session, event)


def block(session: Session, account: Account, *, reason: str, actor: str, now: datetime) -> bool:
    """Blocks the ID; False (nothing changed) when it is blocked already. ``reason`` is required
    (1 to 200 characters) and kept on the ID and in the audit log."""
    reason = " ".join(reason.split())
    if not reason or len(reason) > REASON_MAX:
        raise ValueError(f"reason: 1 to {REASON_MAX} characters")
    if account.blocked_at is not None:
        return False
    account.blocked_at = now
    account.blocked_reason = reason
    session.flush()
    audit.record(session, "account_blocked", now=now, account_id=account.id, actor=actor, reason=reason)
    deactivate(session, AccountDeactivated(account.id, BLOCKED, now))
    return True


def unblock(session: Session, account: Account, *, actor: str, now: datetime) -> bool:
    """The ID may sign in again; False when it was not blocked."""
    if account.blocked_at is None:
        return False
    account.blocked_at = None
    account.blocked_reason = None
    session.flush()
    audit.record(session, "account_unblocked", now=now, account_id=account.id, actor=actor)
    return True
