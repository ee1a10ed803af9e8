"""Scheduled work: due invitations, reminders, the outbox. Every job claims rows in the database,
so any number of processes may run it (``serve``'s interval trigger, ``scheduler run-once``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox
from notifications.senders import default_senders
from onboarding import invitations
from onboarding.clock import utcnow
from onboarding.db import transaction
from onboarding.settings import Settings
from vehicles.models import Dealer, VehicleModel

log = structlog.get_logger(__name__)


@dataclass
class JobReport:
    invited: int = 0
    reminded: int = 0
    sent: int = 0
    failed: int = 0


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
) -> int:
    """Write every due invitation into the outbox. Emails are rendered outside any transaction,
    yielding now and then so that the SMTP connections keep moving, and each batch is stored in a
    short transaction (SQLite's single writer is not held while rendering). The batch's emails are
    stored already claimed by this process and put on ``written`` to be sent from memory."""
    invited = 0
    lease = timedelta(seconds=settings.outbox_lease_seconds)

    def due(limit: int) -> list[tuple[invitations.DueOrder, Dealer, VehicleModel]]:
        with transaction(factory) as session:
            return invitations.due_orders(session, today=now.date(), limit=limit)

    def store(prepared: list[invitations.PreparedInvitation]) -> invitations.StoredBatch:
        with transaction(factory) as session:
            return invitations.commit_prepared(session, settings, prepared, now=now, claim_lease=lease)

    # A small first batch: the SMTP connections start after a few dozen emails, not a thousand.
    limit = max(1, settings.scheduler_batch_size // 16)
    while True:
        rows = await asyncio.to_thread(due, limit)
        limit = settings.scheduler_batch_size
        if not rows:
            return invited
        prepared = []
        for n, (order, dealer, model) in enumerate(rows):
            prepared.append(invitations.prepare_invitation(settings, order, dealer, model, now=now))
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

    async def queue() -> None:
        try:
            report.invited = await queue_invitations_cooperatively(
                factory, settings, now=now(), written=written
            )
            report.reminded = await asyncio.to_thread(queue_due_reminders, factory, settings, now=now())
        finally:
            written.end()

    async def fresh_batches() -> AsyncGenerator[list[outbox.ClaimedMessage], None]:
        while (batch := await written.get()) is not None:
            yield batch

    async def deliver() -> None:
        fresh = await outbox.deliver_batches(
            factory, senders, fresh_batches(), max_attempts=settings.outbox_max_attempts, hooks=hooks, now=now
        )
        # Stopped early (server down): the remaining batches are taken unsent, so that queueing
        # can finish. They stay claimed until their lease runs out; then any scheduler sends them.
        while not written.ended:
            await written.get()
        report.sent, report.failed = fresh.sent, fresh.failed
        if fresh.failed and not fresh.sent:
            return  # the server is down: the back-off decides the retry
        drained = await outbox.drain(
            factory,
            senders,
            secret=settings.secret_key_value(),
            batch_size=settings.scheduler_batch_size,
            max_attempts=settings.outbox_max_attempts,
            lease=timedelta(seconds=settings.outbox_lease_seconds),
            hooks=hooks,
            now=now,
        )
        report.sent, report.failed = report.sent + drained.sent, report.failed + drained.failed

    try:
        await asyncio.gather(queue(), deliver())
    finally:
        for sender in senders.values():
            await sender.close()
    if report.invited or report.reminded or report.sent or report.failed:
        log.info("scheduler.pass", **vars(report))
    return report


def start_background(factory: sessionmaker[Session], settings: Settings) -> BackgroundScheduler:
    """APScheduler only triggers; the claims in the database make concurrent runs safe."""
    scheduler = BackgroundScheduler(timezone="UTC")

    def tick() -> None:
        try:
            asyncio.run(run_due_jobs(factory, settings))
        except Exception:
            log.exception("scheduler.failed")

    scheduler.add_job(
        tick,
        IntervalTrigger(seconds=settings.scheduler_interval_seconds),
        id="due-jobs",
        max_instances=1,
        coalesce=True,
        next_run_time=utcnow(),
    )
    scheduler.start()
    return scheduler
