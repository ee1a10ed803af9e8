"""The transactional outbox: enqueue in the caller's transaction, claim, deliver, record.

Claims are rows: a conditional UPDATE moves a message from ``pending`` to ``sending`` with a lease,
so any number of processes may drain at once and none sends a message another has claimed. On
PostgreSQL the candidates are first picked with ``FOR UPDATE SKIP LOCKED`` so drainers do not queue
behind each other. A claim whose process died is taken over when its lease runs out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, cast

import structlog
from sqlalchemy import Table, and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from notifications.models import OutboxMessage
from onboarding.clock import utcnow
from onboarding.crypto import seal, unseal
from onboarding.db import transaction

log = structlog.get_logger(__name__)

PAYLOAD_PURPOSE = "outbox-payload"

PENDING, SENDING, SENT, DEAD, CANCELLED = "pending", "sending", "sent", "dead", "cancelled"

# What happens, in the same transaction as recording delivery, when messages of one purpose have
# been delivered: called with their reference ids. Lets the owner of a message (invitations, ...)
# react to delivery without this module knowing it.
DeliveryHook = Callable[[Session, list[int], datetime], None]


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    channel: str
    purpose: str
    reference_id: int | None
    recipient: str
    payload: bytes
    attempts: int


@dataclass(frozen=True)
class NewMessage:
    channel: str
    purpose: str
    recipient: str
    payload: bytes
    subject: str | None = None
    reference_id: int | None = None
    not_before: datetime | None = None


_OUTBOX = cast(Table, OutboxMessage.__table__)


def enqueue_many(
    session: Session,
    messages: Sequence[NewMessage],
    *,
    secret: str,
    now: datetime,
    claim_lease: timedelta | None = None,
) -> list[ClaimedMessage]:
    """Write messages into the outbox in the caller's transaction (one multi-row INSERT).

    With ``claim_lease`` they are written already claimed by the caller, who sends them from memory
    (no read-back) and records the outcome like any claim; should it die first, the lease runs out
    and another process sends them from the stored copy. Such messages need distinct reference ids.
    Returns the claimed messages (none without ``claim_lease``)."""
    if not messages:
        return []
    claimed = claim_lease is not None
    rows = [
        {
            "channel": m.channel,
            "purpose": m.purpose,
            "reference_id": m.reference_id,
            "recipient": m.recipient,
            "subject": m.subject,
            "payload": seal(secret, PAYLOAD_PURPOSE, m.payload),
            "state": SENDING if claimed else PENDING,
            "attempts": 1 if claimed else 0,
            "lease_expires_at": now + claim_lease if claim_lease is not None else None,
            "next_attempt_at": m.not_before or now,
            "created_at": now,
        }
        for m in messages
    ]
    # Into the table (Core), not through the ORM's bulk path: less Python per row.
    if not claimed:
        session.execute(insert(_OUTBOX), rows)
        return []
    # RETURNING without a guaranteed order keeps the INSERT batched; rows are matched by reference.
    ids = {
        (row.purpose, row.reference_id): row.id
        for row in session.execute(
            insert(_OUTBOX).returning(_OUTBOX.c.id, _OUTBOX.c.purpose, _OUTBOX.c.reference_id), rows
        )
    }
    return [
        ClaimedMessage(
            id=ids[(m.purpose, m.reference_id)],
            channel=m.channel,
            purpose=m.purpose,
            reference_id=m.reference_id,
            recipient=m.recipient,
            payload=m.payload,
            attempts=1,
        )
        for m in messages
    ]


def enqueue(session: Session, message: NewMessage, *, secret: str, now: datetime) -> None:
    enqueue_many(session, [message], secret=secret, now=now)


def _claimable(now: datetime, channels: Iterable[str]) -> object:
    return and_(
        OutboxMessage.channel.in_(list(channels)),
        or_(
            and_(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now),
            and_(OutboxMessage.state == SENDING, OutboxMessage.lease_expires_at < now),
        ),
    )


def claim(
    session: Session, *, secret: str, channels: Iterable[str], now: datetime, limit: int, lease: timedelta
) -> list[ClaimedMessage]:
    channels = list(channels)
    candidates = (
        select(OutboxMessage.id)
        .where(_claimable(now, channels))  # type: ignore[arg-type]
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    rows = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), _claimable(now, channels))  # type: ignore[arg-type]
        .values(state=SENDING, lease_expires_at=now + lease, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.channel,
            OutboxMessage.purpose,
            OutboxMessage.reference_id,
            OutboxMessage.recipient,
            OutboxMessage.payload,
            OutboxMessage.attempts,
        )
    ).all()
    claimed = []
    for row in rows:
        claimed.append(
            ClaimedMessage(
                id=row.id,
                channel=row.channel,
                purpose=row.purpose,
                reference_id=row.reference_id,
                recipient=row.recipient,
                payload=unseal(secret, PAYLOAD_PURPOSE, row.payload),
                attempts=row.attempts,
            )
        )
    claimed.sort(key=lambda m: m.id)
    return claimed


def release(session: Session, ids: Sequence[int]) -> None:
    """Hand claimed messages back unsent (a drain that stopped early), as if never attempted."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.state == SENDING)
        .values(state=PENDING, lease_expires_at=None, attempts=OutboxMessage.attempts - 1)
    )


def backoff(attempts: int) -> timedelta:
    """Exponential back-off from 30 s, capped at one hour, with jitter so retries spread out."""
    base = min(30 * 2 ** max(attempts - 1, 0), 3600)
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


def record_results(
    session: Session,
    claimed: Sequence[ClaimedMessage],
    errors: Mapping[int, str | None],
    *,
    now: datetime,
    max_attempts: int,
    hooks: Mapping[str, DeliveryHook] | None = None,
) -> tuple[int, int]:
    """Store each claimed message's outcome; returns (sent, failed)."""
    # Only an explicit None is a delivery; a message the sender did not report stays undelivered.
    outcome = {m.id: errors.get(m.id, "not reported by the sender") for m in claimed}
    sent_ids = [m.id for m in claimed if outcome[m.id] is None]
    if sent_ids:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(sent_ids), OutboxMessage.state == SENDING)
            .values(state=SENT, sent_at=now, payload=None, lease_expires_at=None, last_error=None)
        )
        by_purpose: dict[str, list[int]] = {}
        for m in claimed:
            if outcome[m.id] is None and m.reference_id is not None:
                by_purpose.setdefault(m.purpose, []).append(m.reference_id)
        for purpose, refs in by_purpose.items():
            hook = (hooks or {}).get(purpose)
            if hook is not None:
                hook(session, refs, now)
    failed = [m for m in claimed if outcome[m.id] is not None]
    for m in failed:
        error = (outcome[m.id] or "")[:2000]
        if m.attempts >= max_attempts:
            values: dict[str, object] = {"state": DEAD, "last_error": error, "lease_expires_at": None}
            log.error("outbox.dead", message_id=m.id, purpose=m.purpose, attempts=m.attempts, error=error)
        else:
            values = {
                "state": PENDING,
                "last_error": error,
                "lease_expires_at": None,
                "next_attempt_at": now + backoff(m.attempts),
            }
            log.warning("outbox.retry", message_id=m.id, purpose=m.purpose, attempts=m.attempts, error=error)
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == m.id, OutboxMessage.state == SENDING)
            .values(**values)
        )
    return len(sent_ids), len(failed)


class Sender(Protocol):
    channel: str

    async def deliver(self, messages: Sequence[ClaimedMessage]) -> dict[int, str | None]:
        """Deliver each message; map its id to None (accepted) or the error text."""
        ...

    async def close(self) -> None:
        """Release connections kept between batches."""
        ...


@dataclass
class DrainReport:
    sent: int = 0
    failed: int = 0


async def send(senders: Mapping[str, Sender], claimed: Sequence[ClaimedMessage]) -> dict[int, str | None]:
    """Hand each claimed message to its channel's sender; returns each one's error or None."""
    errors: dict[int, str | None] = {}
    for channel, sender in senders.items():
        subset = [m for m in claimed if m.channel == channel]
        if subset:
            errors.update(await sender.deliver(subset))
    return errors


async def deliver_batches(
    factory: sessionmaker[Session],
    senders: Mapping[str, Sender],
    batches: AsyncGenerator[list[ClaimedMessage], None],
    *,
    max_attempts: int,
    hooks: Mapping[str, DeliveryHook] | None = None,
    now: Callable[[], datetime] = utcnow,
) -> DrainReport:
    """Send claimed batches as they come, recording each outcome (a database write) while the next
    batch is sent. After a batch in which every message failed (the server is likely down) it stops
    and closes ``batches``: what was claimed but not sent waits for its lease or release, and the
    back-off decides when failed messages are tried again."""
    report = DrainReport()

    def record(claimed: list[ClaimedMessage], errors: dict[int, str | None]) -> tuple[int, int]:
        with transaction(factory) as session:
            return record_results(session, claimed, errors, now=now(), max_attempts=max_attempts, hooks=hooks)

    recording: asyncio.Task[tuple[int, int]] | None = None

    async def collect() -> None:
        nonlocal recording
        if recording is not None:
            task, recording = recording, None
            sent, failed = await task
            report.sent += sent
            report.failed += failed

    try:
        async for claimed in batches:
            errors = await send(senders, claimed)
            await collect()
            recording = asyncio.create_task(asyncio.to_thread(record, claimed, errors))
            if all(error is not None for error in errors.values()):
                break
    finally:
        await collect()
        await batches.aclose()
    return report


async def drain(
    factory: sessionmaker[Session],
    senders: Mapping[str, Sender],
    *,
    secret: str,
    batch_size: int,
    max_attempts: int,
    lease: timedelta,
    hooks: Mapping[str, DeliveryHook] | None = None,
    now: Callable[[], datetime] = utcnow,
) -> DrainReport:
    """Deliver every message due now, batch by batch, until none is left to claim; the next batch is
    claimed while one is sent. The caller closes the senders (their connections serve several
    drains)."""

    def claim_batch() -> list[ClaimedMessage]:
        with transaction(factory) as session:
            return claim(
                session, secret=secret, channels=senders.keys(), now=now(), limit=batch_size, lease=lease
            )

    def release_batch(claimed: list[ClaimedMessage]) -> None:
        if claimed:
            with transaction(factory) as session:
                release(session, [m.id for m in claimed])

    async def claimed_batches() -> AsyncGenerator[list[ClaimedMessage], None]:
        prefetch = asyncio.create_task(asyncio.to_thread(claim_batch))
        try:
            while claimed := await prefetch:
                prefetch = asyncio.create_task(asyncio.to_thread(claim_batch))
                yield claimed
        finally:
            # Stopped early (server down): hand back the batch claimed ahead, unsent.
            await asyncio.to_thread(release_batch, await prefetch)

    return await deliver_batches(
        factory, senders, claimed_batches(), max_attempts=max_attempts, hooks=hooks, now=now
    )
