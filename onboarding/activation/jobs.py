"""Scheduled work: due invitations, reminders, the outbox. Every job claims rows in the database,
so any number of processes may run it (``serve``'s interval trigger, ``scheduler run-once``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox
from notifications.senders import default_senders
from onboarding.activation import invitations, support_requests
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from vehicles.models import Dealer, VehicleModel

log = structlog.get_logger(__name__)


@dataclass
class JobReport:
    invited: int = 0
    reminded: int = 0
    sent: int = 0
    failed: int = 0
    cards_overdue: int = 0


def queue_due_reminders(factory: sessionmaker[Session], settings: Settings, *, now: datetime) -> int:
    reminded = 0
    while True:
        with transaction(factory) as session:
            claimed, queued = invitations.queue_due_reminders(
                session, settings, now=now, limit=settings.scheduler_batch_size
            )
        reminded += queued
        if claimed == 0:
            return reminded


def flag_overdue_cards(factory: sessionmaker[Session], settings: Settings, *, now: datetime) -> int:
    """Charging cards not delivered in time: one support request per card (its own transaction; the
    emails go with this pass's drain)."""
    with transaction(factory) as session:
        return support_requests.report_overdue_cards(session, settings, now=now)


class Handover:
    """Stored batches of claimed emails, from the side that writes them to the side that sends
    them, with at most one batch waiting: writing stays one batch ahead of sending and shares the
    event loop with it all along (rather than finishing first and leaving the SMTP connections to
    catch up alone), and no batch waits long with its lease running."""

    def __init__(self) -> None:
        self._batches: asyncio.Queue[list[outbox.ClaimedMessage] | None] = asyncio.Queue()
        self._room = asyncio.Semaphore(1)
        self.ended = False  # the end was taken: nothing more will come

    async def put(self, batch: list[outbox.ClaimedMessage]) -> None:
        await self._room.acquire()
        self._batches.put_nowait(batch)

    def end(self) -> None:
        self._batches.put_nowait(None)  # never waits, even when cancelled

    async def get(self) -> list[outbox.ClaimedMessage] | None:
        batch = await self._batches.get()
        if batch is None:
            self.ended = True
        else:
            self._room.release()
        return batch


async def queue_invitations_cooperatively(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: datetime,
    written: Handover,
    held: outbox.Held | None = None,
    clock: Callable[[], datetime] | None = None,
) -> int:
    """Write every due invitation into the outbox. Emails are rendered outside any transaction,
    yielding now and then so that the SMTP connections keep moving, and each batch is stored in a
    short transaction (SQLite's single writer is not held while rendering). The batch's emails are
    stored already claimed by this process (added to ``held``, whose leases the pass renews) and
    put on ``written`` to be sent from memory. An order whose email cannot be built fails alone:
    it is claimed with the reason on its timeline, and the others go on. ``now`` is the pass's
    time (today, the invitations' timestamps); ``clock`` the current time, from which each batch's
    lease runs (a long pass would otherwise store later batches with leases already run out)."""
    invited = 0
    lease = timedelta(seconds=settings.outbox_lease_seconds)

    def due(limit: int) -> list[tuple[invitations.DueOrder, Dealer, VehicleModel]]:
        with transaction(factory) as session:
            return invitations.due_orders(session, today=now.date(), limit=limit)

    def store(prepared: list[invitations.PreparedInvitation]) -> invitations.StoredBatch:
        secured = time.monotonic()
        claim_lease = lease + (clock() - now if clock is not None else timedelta(0))
        with transaction(factory) as session:
            batch = invitations.commit_prepared(session, settings, prepared, now=now, claim_lease=claim_lease)
        if held is not None:
            held.add(batch.claimed, secured=secured)
        return batch

    # A small first batch: the SMTP connections start after a few dozen emails, not a thousand.
    limit = max(1, settings.scheduler_batch_size // 16)
    while True:
        rows = await asyncio.to_thread(due, limit)
        limit = settings.scheduler_batch_size
        if not rows:
            return invited
        prepared = []
        for n, (order, dealer, model) in enumerate(rows):
            try:
                prepared.append(invitations.prepare_invitation(settings, order, dealer, model, now=now))
            except Exception as exc:  # this order's data (an address, a value a template cannot take)
                log.warning("scheduler.invitation_unbuildable", order_id=order.id, error=repr(exc))
                prepared.append(invitations.unpreparable(order, invitations.build_failure(exc)))
            if n % 4 == 3:
                await asyncio.sleep(0)
        # In a thread: the database's own work does not hold up the SMTP connections.
        batch = await asyncio.to_thread(store, prepared)
        invited += batch.stored
        if batch.claimed:
            await written.put(batch.claimed)


async def run_due_jobs(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: Callable[[], datetime] = utcnow,
    senders: Mapping[str, outbox.Sender] | None = None,
) -> JobReport:
    """Queue due invitations and reminders and deliver the outbox, the two at once: each stored
    batch of invitations is sent while the next one is rendered; then everything else due in the
    outbox (reminders, retries, other messages) is drained."""
    senders = senders if senders is not None else default_senders(settings, factory)
    written = Handover()
    report = JobReport()
    hooks = invitations.delivery_hooks(settings)
    failure_hooks = invitations.failure_hooks()
    lease = timedelta(seconds=settings.outbox_lease_seconds)
    held = outbox.Held()  # every claim of this pass, its lease renewed until its outcome is stored
    # At most this many messages sent (or being sent) and not yet recorded: what a crash can repeat.
    unrecorded_limit = settings.unrecorded_limit

    async def queue() -> None:
        try:
            report.invited = await queue_invitations_cooperatively(
                factory, settings, now=now(), written=written, held=held, clock=now
            )
            report.reminded = await asyncio.to_thread(queue_due_reminders, factory, settings, now=now())
            report.cards_overdue = await asyncio.to_thread(flag_overdue_cards, factory, settings, now=now())
        finally:
            written.end()

    async def fresh_batches() -> AsyncGenerator[list[outbox.ClaimedMessage], None]:
        while (batch := await written.get()) is not None:
            yield batch

    async def deliver() -> None:
        try:
            fresh = await outbox.deliver_batches(
                factory,
                senders,
                fresh_batches(),
                max_attempts=settings.outbox_max_attempts,
                hooks=hooks,
                failure_hooks=failure_hooks,
                now=now,
                unrecorded_limit=unrecorded_limit,
                held=held,
            )
        finally:
            # Stopped early (server down, or failed): the remaining batches are taken unsent, so
            # that queueing can finish. They stay claimed until their lease runs out (no longer
            # renewed); then any scheduler sends them.
            while not written.ended:
                if (batch := await written.get()) is not None:
                    held.discard(m.id for m in batch)
        report.sent, report.failed = fresh.sent, fresh.failed
        if fresh.stopped and not fresh.sent:
            return  # the server is down: the back-off decides the retry
        drained = await outbox.drain(
            factory,
            senders,
            secret=settings.secret_key_value(),
            batch_size=settings.scheduler_batch_size,
            max_attempts=settings.outbox_max_attempts,
            lease=lease,
            hooks=hooks,
            failure_hooks=failure_hooks,
            now=now,
            unrecorded_limit=unrecorded_limit,
            held=held,
        )
        report.sent, report.failed = report.sent + drained.sent, report.failed + drained.failed

    try:
        async with outbox.leases_kept(factory, held, lease=lease, now=now):
            # Both run to their end even when one fails, so that what was sent is recorded.
            outcomes = await asyncio.gather(queue(), deliver(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        for sender in senders.values():
            await sender.close()
    if report.invited or report.reminded or report.sent or report.failed or report.cards_overdue:
        log.info("scheduler.pass", **vars(report))
    return report
