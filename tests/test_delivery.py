"""Delivery guarantees: the mail server down loses nothing; four schedulers send each invitation once."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select

from notifications.models import OutboxMessage
from onboarding.models import Invitation
from onboarding.scheduler import run_due_jobs
from onboarding.settings import Settings
from tests.conftest import NOW, Database, SmtpServer
from tests.helpers import order_payload, put_order, run_jobs
from vehicles.models import Order

DAY = timedelta(days=1)


def test_smtp_down_loses_nothing_and_sends_once_when_back(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    for n in range(5):
        put_order(
            db.factory,
            smtp_settings,
            f"A{n}",
            NOW,
            **order_payload((NOW + 5 * DAY).date(), buyer_email=f"buyer{n}@example.com"),
        )
    smtp.stop()
    report = run_jobs(db.factory, smtp_settings, NOW)
    assert (report.invited, report.sent) == (5, 0) and report.failed > 0
    with db.factory() as session:
        rows = list(session.scalars(select(OutboxMessage)))
        assert len(rows) == 5
        assert all(r.state == "pending" and r.payload is not None for r in rows)
        failed = [r for r in rows if r.attempts == 1]
        assert failed and all(r.last_error for r in failed)
        assert all(r.next_attempt_at > NOW for r in failed)  # back-off
        # The link's 14 days have not started: nothing was sent.
        assert all(i.sent_at is None for i in session.scalars(select(Invitation)))

    # Still down a bit later: retried, still nothing lost.
    run_jobs(db.factory, smtp_settings, NOW + timedelta(minutes=5))
    smtp.start()
    # Back: before the back-off nothing is retried; after it everything arrives exactly once.
    report = run_jobs(db.factory, smtp_settings, NOW + timedelta(hours=2))
    assert report.sent == 5
    run_jobs(db.factory, smtp_settings, NOW + timedelta(hours=3))
    assert sorted(m["To"] for m in smtp.mailbox.messages) == [f"buyer{n}@example.com" for n in range(5)]
    with db.factory() as session:
        assert {r.state for r in session.scalars(select(OutboxMessage))} == {"sent"}
        sent_at = {i.sent_at for i in session.scalars(select(Invitation))}
        assert None not in sent_at


def test_a_pass_of_several_batches_ends_with_the_server_down_and_loses_nothing(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    """Rendering stays at most one batch ahead of delivery; when delivery stops (server down) the
    pass still ends, every invitation is stored, and each is sent once when the server is back."""
    settings = smtp_settings.model_copy(update={"scheduler_batch_size": 2})
    for n in range(7):
        put_order(
            db.factory,
            settings,
            f"A{n}",
            NOW,
            **order_payload((NOW + 5 * DAY).date(), buyer_email=f"buyer{n}@example.com"),
        )
    smtp.stop()
    report = asyncio.run(asyncio.wait_for(run_due_jobs(db.factory, settings, now=lambda: NOW), 30))
    assert (report.invited, report.sent) == (7, 0)
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 7
    smtp.start()
    after_lease = NOW + timedelta(seconds=settings.outbox_lease_seconds) + timedelta(hours=2)
    assert run_jobs(db.factory, settings, after_lease).sent == 7
    run_jobs(db.factory, settings, after_lease + timedelta(hours=2))
    assert sorted(m["To"] for m in smtp.mailbox.messages) == [f"buyer{n}@example.com" for n in range(7)]


def test_backoff_grows_and_is_capped() -> None:
    from notifications.outbox import backoff

    waits = [backoff(n).total_seconds() for n in range(1, 12)]
    assert 27 <= waits[0] <= 33
    assert all(later >= earlier * 0.8 for earlier, later in itertools.pairwise(waits))
    assert max(waits) <= 3600 * 1.1


def test_a_message_is_given_up_after_the_last_attempt(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    settings = smtp_settings.model_copy(update={"outbox_max_attempts": 2})
    put_order(db.factory, settings, "A", NOW, **order_payload((NOW + 5 * DAY).date()))
    smtp.stop()
    run_jobs(db.factory, settings, NOW)
    run_jobs(db.factory, settings, NOW + DAY)
    with db.factory() as session:
        message = session.scalars(select(OutboxMessage)).one()
        assert (message.state, message.attempts) == ("dead", 2)
        assert message.last_error


def _seed_due_orders(db: Database, count: int) -> None:
    today = date.today()
    rows = [
        {
            "order_number": f"P{n:05d}",
            "dealer_code": "SE-01",
            "model_code": "E40",
            "buyer_first_name": "Buyer",
            "buyer_last_name": f"No {n}",
            "buyer_email": f"buyer{n}@example.com",
            "buyer_phone": "+46701234567",
            "country": "SE",
            "language": "sv",
            "planned_delivery_date": today + 5 * DAY,
            "production_status": "ordered",
            "invite_after": today - 9 * DAY,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(count)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(Order), rows)


@pytest.mark.slow
def test_four_schedulers_at_once_send_each_invitation_exactly_once(
    db: Database, reference: None, smtp: SmtpServer
) -> None:
    due = 500
    _seed_due_orders(db, due)
    env = {
        **os.environ,
        "ONBOARDING_DATABASE_URL": db.url,
        "ONBOARDING_SECRET_KEY": "multi-process-test-secret-" + "y" * 30,
        "ONBOARDING_SMTP_HOST": "127.0.0.1",
        "ONBOARDING_SMTP_PORT": str(smtp.port),
        # Small batches make the four processes interleave their claims.
        "ONBOARDING_SCHEDULER_BATCH_SIZE": "25",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "onboarding.cli", "scheduler", "run-once"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    invited_per_process = [int(out.split("invited ")[1].split(",")[0]) for out, _ in outputs]
    print("invitations created per process:", invited_per_process)
    assert sum(invited_per_process) == due
    recipients = Counter(m["To"] for m in smtp.mailbox.messages)
    assert len(smtp.mailbox.messages) == due
    assert len(recipients) == due and max(recipients.values()) == 1
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Invitation)) == due
        assert session.scalar(select(func.count()).where(OutboxMessage.state == "sent")) == due


def test_emails_claimed_by_a_scheduler_that_died_are_sent_after_the_lease(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    from datetime import timedelta as td

    from onboarding import invitations as invitation_service
    from onboarding.db import transaction

    for n in range(3):
        put_order(
            db.factory,
            smtp_settings,
            f"A{n}",
            NOW,
            **order_payload((NOW + 5 * DAY).date(), buyer_email=f"buyer{n}@example.com"),
        )
    lease = td(seconds=smtp_settings.outbox_lease_seconds)
    # A scheduler stores a batch already claimed for sending, then dies before sending it.
    with transaction(db.factory) as session:
        rows = invitation_service.due_orders(session, today=NOW.date(), limit=10)
        prepared = [
            invitation_service.prepare_invitation(smtp_settings, o, d, m, now=NOW) for o, d, m in rows
        ]
    with transaction(db.factory) as session:
        batch = invitation_service.commit_prepared(
            session, smtp_settings, prepared, now=NOW, claim_lease=lease
        )
    assert batch.stored == 3 and len(batch.claimed) == 3
    # Within the lease nobody else sends them; nothing is invited twice either.
    assert run_jobs(db.factory, smtp_settings, NOW + lease / 2).sent == 0
    assert smtp.mailbox.messages == []
    # After it, the stored copies go out, once each.
    assert run_jobs(db.factory, smtp_settings, NOW + lease + td(seconds=1)).sent == 3
    run_jobs(db.factory, smtp_settings, NOW + 2 * lease)
    assert sorted(m["To"] for m in smtp.mailbox.messages) == [f"buyer{n}@example.com" for n in range(3)]
