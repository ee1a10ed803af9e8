"""CSV import in the portal (SPEC §3.8): the same rules as ``onboarding orders import``
(``vehicles.csv_import``), within the staff member's dealer or market (``scope_of``). An upload is
kept in a private directory and first checked (a dry run: the per-row report, nothing stored); a
clean check can then be imported from the same file. Both run in a background thread of the web
process, which records the progress (bytes checked, rows stored) on the job's row for the page to
show; the file is deleted once it is imported or given up.

A job whose process died stays "checking" or "importing": ``refresh_stale`` marks such a job failed
after ``STALE_MINUTES`` without progress, so the page does not wait forever."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.clock import utcnow
from onboarding.core.scope import ALL_MARKETS, Scope
from onboarding.core.settings import Settings
from onboarding.portal.models import DEALER_ROLES, PortalImport, StaffMember, StaffRole
from onboarding.portal.staff import record
from vehicles.csv_import import FileProblem, ImportProgress, import_orders_csv

QUEUED, CHECKING, IMPORTING, DONE, FAILED = "queued", "checking", "importing", "done", "failed"
RUNNING = (QUEUED, CHECKING, IMPORTING)
STALE_MINUTES = 30
# Progress is written at most this often: a row update per chunk would be a write per 1,000 rows.
PROGRESS_SECONDS = 1.0


def scope_of(staff: StaffMember) -> Scope:
    """The orders a staff member may import: their dealer's, their market's, or all."""
    if staff.role in DEALER_ROLES and staff.dealer_code:
        return Scope(dealers=frozenset({staff.dealer_code}))
    if staff.role == StaffRole.MARKET_AGENT and staff.country:
        return Scope(countries=frozenset({staff.country}))
    if staff.role == StaffRole.PLATFORM_ADMIN:
        return ALL_MARKETS
    return Scope(countries=frozenset())


def upload_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "onboarding-portal-imports"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def import_in_scope(session: Session, staff: StaffMember, import_id: int) -> PortalImport | None:
    """A staff member sees the imports they started (and a platform admin every one)."""
    job = session.get(PortalImport, import_id)
    if job is None:
        return None
    if job.staff_id != staff.id and staff.role != StaffRole.PLATFORM_ADMIN:
        return None
    return job


def recent(session: Session, staff: StaffMember, *, limit: int = 10) -> list[PortalImport]:
    return list(
        session.scalars(
            select(PortalImport)
            .where(PortalImport.staff_id == staff.id)
            .order_by(PortalImport.id.desc())
            .limit(limit)
        )
    )


def create(
    session: Session, staff: StaffMember, *, file_name: str, stored_path: str, dry_run: bool, now: datetime
) -> PortalImport:
    job = PortalImport(
        staff_id=staff.id,
        file_name=(os.path.basename(file_name) or "upload.csv")[:255],
        stored_path=stored_path,
        dry_run=dry_run,
        state=QUEUED,
        done=0,
        total=0,
        created_at=now,
    )
    session.add(job)
    session.flush()
    record(session, "staff_started_import", staff, now=now, file=job.file_name, dry_run=dry_run, job=job.id)
    return job


def import_checked(
    session: Session, staff: StaffMember, checked: PortalImport, *, now: datetime
) -> PortalImport | None:
    """An import of a clean dry run's file (None when it is not one: errors, not done, or already
    imported)."""
    report = checked.report or {}
    if not checked.dry_run or checked.state != DONE or report.get("error_count") or not checked.stored_path:
        return None
    # The file is claimed by a conditional update: of two clicks at once, one imports it.
    path = checked.stored_path
    claimed = session.execute(
        update(PortalImport)
        .where(PortalImport.id == checked.id, PortalImport.stored_path == path)
        .values(stored_path=None)
        .returning(PortalImport.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(checked)
    if claimed is None:
        return None
    return create(session, staff, file_name=checked.file_name, stored_path=path, dry_run=False, now=now)


def refresh_stale(session: Session, job: PortalImport, *, now: datetime) -> None:
    if (
        job.state in RUNNING
        and job.created_at + timedelta(minutes=STALE_MINUTES) < now
        and job.finished_at is None
    ):
        job.state = FAILED
        job.finished_at = now
        job.report = {"problem": "The import stopped (the server restarted); start it again."}


def start_in_background(factory: sessionmaker[Session], settings: Settings, job_id: int) -> threading.Thread:
    thread = threading.Thread(
        target=run, args=(factory, settings, job_id), name=f"portal-import-{job_id}", daemon=True
    )
    thread.start()
    return thread


def run(factory: sessionmaker[Session], settings: Settings, job_id: int) -> None:
    """Runs the job: the CSV import on its own session, the progress on another."""
    # Both sessions live in this thread: on SQLite each write takes the file's one write lock, so one
    # session always ends its transaction before the other writes (never both open at once).
    with factory() as progress_session, factory() as session:
        job = progress_session.get(PortalImport, job_id)
        staff = progress_session.get(StaffMember, job.staff_id) if job is not None else None
        if job is None or staff is None or job.state != QUEUED or not job.stored_path:
            return
        job.state = CHECKING
        progress_session.commit()
        last = [0.0]
        sqlite = session.get_bind().dialect.name == "sqlite"

        def after_chunk(step: ImportProgress) -> None:
            if step.may_commit:
                session.commit()
            elif sqlite:
                return  # the import holds SQLite's write lock until it may commit
            now = datetime.now().timestamp()
            if now - last[0] >= PROGRESS_SECONDS or step.done >= step.total:
                last[0] = now
                job.state = CHECKING if step.stage == "checking" else IMPORTING
                job.done, job.total = step.done, step.total
                progress_session.commit()

        path = job.stored_path
        try:
            with open(path, "rb") as source:
                report = import_orders_csv(
                    session,
                    source,
                    now=utcnow(),
                    actor=f"portal:{staff.id} {staff.email}"[:120],
                    lead_days=settings.invitation_lead_days,
                    dry_run=job.dry_run,
                    scope=scope_of(staff),
                    chunk_rows=settings.csv_import_chunk_rows,
                    after_chunk=after_chunk,
                )
            session.commit()
            summary = asdict(report)
            summary["error_count"] = report.error_count
            job.report = summary
            job.state = DONE
        except (FileProblem, OSError, UnicodeError) as exc:
            session.rollback()
            job.report = {"problem": str(exc)[:500]}
            job.state = FAILED
        except Exception:
            session.rollback()
            job.report = {"problem": "The import failed unexpectedly; nothing of it was kept."}
            job.state = FAILED
            progress_session.commit()
            raise
        finally:
            job.finished_at = utcnow()
            keep = job.dry_run and job.state == DONE and not (job.report or {}).get("error_count")
            if not keep:
                shutil.rmtree(Path(path).parent, ignore_errors=True)
                job.stored_path = None
            progress_session.commit()
