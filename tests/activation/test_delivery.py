"""Delivery guarantees: the mail server down loses nothing; four schedulers send each invitation once;
one bad message fails alone with its reason on the order; leases are renewed while a sender works."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select, update

from notifications import outbox
from notifications.models import OutboxMessage
from notifications.outbox import ClaimedMessage, NewMessage, Outcomes
from onboarding.activation.invitations import funnel
from onboarding.activation.jobs import run_due_jobs
from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database, Mailbox, SmtpServer, free_port
from tests.helpers import order_payload, put_order, run_jobs
from vehicles.models import Order, OrderEvent

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
            [sys.executable, "-m", "onboarding.ops.cli", "scheduler", "run-once"],
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

    from onboarding.activation import invitations as invitation_service
    from onboarding.core.db import transaction

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


# --- one bad message fails alone, with its reason where staff see it -------------------------------


@pytest.fixture
def ascii_smtp() -> Iterator[SmtpServer]:
    """A real SMTP server without SMTPUTF8 (RFC 6531): it takes only ASCII addresses."""
    server = SmtpServer(Mailbox(), free_port())
    server.controller = Controller(
        server.mailbox, hostname="127.0.0.1", port=server.port, enable_SMTPUTF8=False
    )
    server.controller.start()
    yield server
    server.stop()


def _events(db: Database, kind: str) -> list[tuple[str, str | None]]:
    with db.factory() as session:
        rows = session.execute(
            select(Order.order_number, OrderEvent.detail)
            .join(Order, Order.id == OrderEvent.order_id)
            .where(OrderEvent.kind == kind)
        )
        return [(number, detail) for number, detail in rows]


def _funnel_failure(db: Database, number: str) -> str | None:
    with db.factory() as session:
        order = session.scalars(select(Order).where(Order.order_number == number)).one()
        return funnel(session, order, now=NOW).invitation_failure


def test_an_address_without_smtputf8_is_dead_at_once_and_shown_on_the_order(
    db: Database, reference: None, settings: Settings, ascii_smtp: SmtpServer
) -> None:
    settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": ascii_smtp.port})
    buyers = {"A0": "astrid@example.com", "A1": "jörg@bücher.example", "A2": "anna@xn--bcher-kva.example"}
    for number, email in buyers.items():
        put_order(
            db.factory, settings, number, NOW, **order_payload((NOW + 5 * DAY).date(), buyer_email=email)
        )
    report = run_jobs(db.factory, settings, NOW)
    assert (report.invited, report.sent, report.failed) == (3, 2, 1)
    # The IDNA domain arrives (stored by the API as anna@bücher.example, sent as punycode).
    assert sorted(rcpt for _, [rcpt] in ascii_smtp.mailbox.envelopes) == [
        "anna@xn--bcher-kva.example",
        "astrid@example.com",
    ]
    with db.factory() as session:
        dead = session.scalars(select(OutboxMessage).where(OutboxMessage.state == "dead")).one()
        assert (dead.recipient, dead.attempts) == ("jörg@bücher.example", 1)  # not retried 20 times
        assert dead.last_error is not None and "SMTPUTF8" in dead.last_error
    [(number, detail)] = _events(db, "invitation_failed")
    assert number == "A1" and detail is not None and "SMTPUTF8" in detail
    failure = _funnel_failure(db, "A1")
    assert failure is not None and "SMTPUTF8" in failure
    assert _funnel_failure(db, "A0") is None
    # Later passes leave it alone: one stated outcome, no retry storm.
    assert run_jobs(db.factory, settings, NOW + timedelta(days=1)).failed == 0


def test_an_order_whose_email_cannot_be_built_fails_alone_and_the_cli_pass_exits_0(
    db: Database, reference: None, smtp: SmtpServer
) -> None:
    _seed_due_orders(db, 3)
    with db.engine.begin() as conn:  # bad data that did not come through the order service
        conn.execute(update(Order).where(Order.order_number == "P00001").values(buyer_email="no address"))
    env = {
        **os.environ,
        "ONBOARDING_DATABASE_URL": db.url,
        "ONBOARDING_SECRET_KEY": "cli-test-secret-" + "y" * 30,
        "ONBOARDING_SMTP_HOST": "127.0.0.1",
        "ONBOARDING_SMTP_PORT": str(smtp.port),
    }
    done = subprocess.run(
        [sys.executable, "-m", "onboarding.ops.cli", "scheduler", "run-once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "invited 2, reminders 0, sent 2, failed 0" in done.stdout
    assert sorted(m["To"] for m in smtp.mailbox.messages) == ["buyer0@example.com", "buyer2@example.com"]
    [(number, detail)] = _events(db, "invitation_failed")
    assert number == "P00001" and detail is not None and "could not be built" in detail
    with db.factory() as session:
        order = session.scalars(select(Order).where(Order.order_number == "P00001")).one()
        assert (order.invite_after, order.invited_at) == (None, None)  # not retried every pass
        assert funnel(session, order, now=NOW).invitation_failure == detail


def test_a_stored_message_that_cannot_be_decrypted_fails_alone(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    secret = smtp_settings.secret_key_value()
    with transaction(db.factory) as session:
        for n, key in enumerate((secret, "another-key-" + "z" * 40, secret)):
            message = NewMessage("email", "test", f"r{n}@example.com", b"Subject: hi\r\n\r\nhello\r\n")
            outbox.enqueue(session, message, secret=key, now=NOW)
    report = run_jobs(db.factory, smtp_settings, NOW)
    assert (report.sent, report.failed) == (2, 0)
    assert sorted(rcpt for _, [rcpt] in smtp.mailbox.envelopes) == ["r0@example.com", "r2@example.com"]
    with db.factory() as session:
        dead = session.scalars(select(OutboxMessage).where(OutboxMessage.state == "dead")).one()
        assert dead.recipient == "r1@example.com" and "cannot be decrypted" in (dead.last_error or "")


def test_a_message_given_up_after_the_last_attempt_is_on_the_order_timeline(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    settings = smtp_settings.model_copy(update={"outbox_max_attempts": 1})
    put_order(db.factory, settings, "A", NOW, **order_payload((NOW + 5 * DAY).date()))
    smtp.stop()
    run_jobs(db.factory, settings, NOW)
    [(number, detail)] = _events(db, "invitation_failed")
    assert number == "A" and detail is not None and detail.startswith("given up after 1 attempts")
    assert _funnel_failure(db, "A") == detail


# --- leases: short, and renewed while the sender works ----------------------------------------------


@dataclass
class SlowSender:
    """Accepts each message after ``seconds``, like a slow mail server."""

    seconds: float
    channel: str = "email"
    delivered: list[int] = field(default_factory=list)

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        for m in messages:
            await outcomes.admit(m)
            await asyncio.sleep(self.seconds)
            self.delivered.append(m.id)
            outcomes.report(m, None)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("renewed", [True, False])
def test_lease_renewal_keeps_a_slow_senders_claim(db: Database, renewed: bool) -> None:
    """A sender slower than the lease keeps its claim while it renews it; without renewal another
    drainer would take the message over and send it a second time."""
    secret, lease = "lease-test-secret-" + "x" * 30, timedelta(seconds=0.9)
    with transaction(db.factory) as session:
        outbox.enqueue(
            session, NewMessage("email", "test", "slow@example.com", b"x"), secret=secret, now=utcnow()
        )
    slow = SlowSender(seconds=2.5)

    def claim_other() -> list[ClaimedMessage]:
        with transaction(db.factory) as session:
            return outbox.claim(
                session, secret=secret, channels=["email"], now=utcnow(), limit=10, lease=lease
            )

    async def scenario() -> list[ClaimedMessage]:
        sending: Coroutine[Any, Any, object]
        if renewed:  # the outbox's drain renews its claims' leases while it works
            sending = outbox.drain(
                db.factory, {"email": slow}, secret=secret, batch_size=10, max_attempts=3, lease=lease
            )
        else:
            sending = _drain_without_renewal(db, slow, secret, lease)
        task = asyncio.create_task(sending)
        await asyncio.sleep(1.8)  # two leases
        taken = await asyncio.to_thread(claim_other)
        await task
        return taken

    taken = asyncio.run(scenario())
    with db.factory() as session:
        message = session.scalars(select(OutboxMessage)).one()
    if renewed:
        assert taken == [] and slow.delivered == [message.id]
        assert (message.state, message.attempts) == ("sent", 1)
    else:
        assert [m.id for m in taken] == [message.id]  # taken over: it would go out twice


async def _drain_without_renewal(db: Database, sender: SlowSender, secret: str, lease: timedelta) -> None:
    """One claim with ``lease`` and no heartbeat: what a sender without renewal does."""

    def claim_batch() -> list[ClaimedMessage]:
        with transaction(db.factory) as session:
            return outbox.claim(
                session, secret=secret, channels=["email"], now=utcnow(), limit=10, lease=lease
            )

    claimed = await asyncio.to_thread(claim_batch)
    outcomes = Outcomes()
    await sender.deliver(claimed, outcomes)


def test_each_stored_batch_of_invitations_gets_a_lease_from_when_it_is_stored(
    db: Database, reference: None, settings: Settings
) -> None:
    """A pass longer than a lease must not store its later batches with leases already run out
    (another scheduler could take them over while this one sends them)."""
    from onboarding.activation.jobs import Handover, queue_invitations_cooperatively

    _seed_due_orders(db, 3)
    settings = settings.model_copy(update={"scheduler_batch_size": 16})  # first batch: 1 order
    start = utcnow()  # the seeded orders are due by today's date
    times = iter([start + timedelta(minutes=m) for m in (0, 10, 20, 30)])
    held = outbox.Held()

    async def queue() -> int:
        written = Handover()

        async def take() -> None:
            while (batch := await written.get()) is not None:
                assert batch

        taker = asyncio.create_task(take())
        try:
            return await queue_invitations_cooperatively(
                db.factory, settings, now=start, written=written, held=held, clock=lambda: next(times)
            )
        finally:
            written.end()
            await taker

    assert asyncio.run(queue()) == 3
    lease = timedelta(seconds=settings.outbox_lease_seconds)
    with db.factory() as session:
        leases = sorted(at for at in session.scalars(select(OutboxMessage.lease_expires_at)) if at)
    assert leases == [start + lease] + [start + timedelta(minutes=10) + lease] * 2
    assert len(held.snapshot()) == 3
