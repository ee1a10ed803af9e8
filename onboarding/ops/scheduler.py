"""The in-process scheduler runner (APScheduler triggers; the claims are rows in the database)."""

from __future__ import annotations

import asyncio

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.orm import Session, sessionmaker

from onboarding.activation.jobs import log, run_due_jobs
from onboarding.core.clock import utcnow
from onboarding.core.db import engine_of, make_session_factory, sibling_engine
from onboarding.core.settings import Settings


class BackgroundJobs:
    """The in-process scheduler and the engine it alone uses (``start_background``)."""

    def __init__(self, scheduler: BackgroundScheduler, factory: sessionmaker[Session]) -> None:
        self.scheduler = scheduler
        self.session_factory = factory

    def shutdown(self, wait: bool = True) -> None:
        self.scheduler.shutdown(wait=wait)
        # A pass still running keeps the connections it has checked out; they close when it ends.
        engine_of(self.session_factory).dispose()


def start_background(factory: sessionmaker[Session], settings: Settings) -> BackgroundJobs:
    """APScheduler only triggers; the claims in the database make concurrent runs safe.

    The jobs run with capacity of their own, so that a burst of requests never starves them: their
    own thread (APScheduler's) and event loop with its threads, and their own engine and pool on
    ``factory``'s database (``scheduler_db_pool_size`` connections, as many again for a moment's
    need), never the requests' pool. On SQLite they wait for the write lock as long as jobs do."""
    engine = sibling_engine(
        engine_of(factory),
        pool_size=settings.scheduler_db_pool_size,
        max_overflow=settings.scheduler_db_pool_size,
    )
    jobs_factory = make_session_factory(engine)
    scheduler = BackgroundScheduler(timezone="UTC")

    def tick() -> None:
        try:
            asyncio.run(run_due_jobs(jobs_factory, settings))
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
    return BackgroundJobs(scheduler, jobs_factory)
