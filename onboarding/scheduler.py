"""Scheduled work: due invitations, reminders, the outbox. Every job claims rows in the database,
so any number of processes may run it (``serve``'s interval trigger, ``scheduler run-once``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox
from notifications.email import email_sender
from onboarding import invitations
from onboarding.clock import utcnow
from onboarding.db import transaction
from onboarding.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class JobReport:
    invited: int = 0
    reminded: int = 0
    sent: int = 0
    failed: int = 0


def default_senders(settings: Settings, factory: sessionmaker[Session]) -> dict[str, outbox.Sender]:
    return {"email": email_sender(settings, factory)}


def queue_due_work(factory: sessionmaker[Session], settings: Settings, *, now: datetime) -> JobReport:
    """Write every due invitation and reminder into the outbox, one batch per transaction."""
    report = JobReport()
    while True:
        with transaction(factory) as session:
            count = invitations.create_due_invitations(
                session, settings, now=now, limit=settings.scheduler_batch_size
            )
        report.invited += count
        if count == 0:
            break
    while True:
        with transaction(factory) as session:
            claimed, queued = invitations.queue_due_reminders(
                session, settings, now=now, limit=settings.scheduler_batch_size
            )
        report.reminded += queued
        if claimed == 0:
            break
    return report


async def deliver_outbox(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: Callable[[], datetime] = utcnow,
    senders: Mapping[str, outbox.Sender] | None = None,
) -> outbox.DrainReport:
    return await outbox.drain(
        factory,
        senders if senders is not None else default_senders(settings, factory),
        secret=settings.secret_key_value(),
        batch_size=settings.scheduler_batch_size,
        max_attempts=settings.outbox_max_attempts,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
        hooks=invitations.delivery_hooks(settings),
        now=now,
    )


async def run_due_jobs(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: Callable[[], datetime] = utcnow,
    senders: Mapping[str, outbox.Sender] | None = None,
) -> JobReport:
    """Queue due invitations and reminders and deliver the outbox.

    Queueing runs in a worker thread while this loop already delivers what it has written, so the
    mail server is kept busy from the first batch on."""
    senders = senders if senders is not None else default_senders(settings, factory)
    queueing = asyncio.create_task(asyncio.to_thread(queue_due_work, factory, settings, now=now()))
    sent = failed = 0
    while True:
        queued_all = queueing.done()
        drained = await deliver_outbox(factory, settings, now=now, senders=senders)
        sent, failed = sent + drained.sent, failed + drained.failed
        if queued_all:
            break
        if drained.failed and not drained.sent:
            await asyncio.wait({queueing})  # the server is down: no retry in this pass
            break
        if not drained.sent:
            await asyncio.wait({queueing}, timeout=0.02)
    report = queueing.result()
    report.sent, report.failed = sent, failed
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
