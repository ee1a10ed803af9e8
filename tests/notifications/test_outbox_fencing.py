"""Fencing: a claim is identified by its attempt count, and a process acts only on claims it still
holds. A sender that stalls past its lease (a long GC, a busy machine, a slow database) does not
send what another process has claimed since, and does not overwrite that process's outcome; the
other process sends the message once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import SmtpSender
from notifications.models import OutboxMessage
from notifications.outbox import ClaimedMessage, NewMessage, Outcomes, Undeliverable
from notifications.sms import HttpSmsSender
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database, free_port
from tests.sms_gateway import Gateway

SECRET = "fencing-test-secret-" + "x" * 30
LEASE = timedelta(seconds=60)
PAYLOAD = b"Subject: hello\r\n\r\nhello\r\n"


@dataclass
class Sink:
    """A real SMTP server's handler: counts accepted messages per recipient and connections."""

    received: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.update(envelope.rcpt_tos)
        return "250 accepted"


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler, port = Sink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def _enqueue(db: Database, *recipients: str, channel: str = "email", not_before: datetime = NOW) -> None:
    with transaction(db.factory) as session:
        outbox.enqueue_many(
            session,
            [
                NewMessage(channel, "test", to, PAYLOAD, reference_id=n, not_before=not_before)
                for n, to in enumerate(recipients, start=1)
            ],
            secret=SECRET,
            now=not_before,
        )


def _claim(
    db: Database, *, now: datetime, lease: timedelta = LEASE, limit: int = 10, channel: str = "email"
) -> list[ClaimedMessage]:
    with transaction(db.factory) as session:
        return outbox.claim(session, secret=SECRET, channels=[channel], now=now, limit=limit, lease=lease)


def _rows(db: Database) -> dict[int, OutboxMessage]:
    with db.factory() as session:
        return {row.id: row for row in session.scalars(select(OutboxMessage))}


class HookCalls:
    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.given_up: list[tuple[int, str]] = []

    def on_delivery(self, session: Session, references: list[int], now: datetime) -> None:
        self.delivered.extend(references)

    def on_failure(self, session: Session, reasons: list[tuple[int, str]], now: datetime) -> None:
        self.given_up.extend(reasons)


def _record(
    db: Database, claimed: Sequence[ClaimedMessage], errors: dict[int, str | None], calls: HookCalls
) -> tuple[int, int]:
    with transaction(db.factory) as session:
        return outbox.record_results(
            session,
            claimed,
            errors,
            now=NOW + 3 * LEASE,
            max_attempts=1,
            hooks={"test": calls.on_delivery},
            failure_hooks={"test": calls.on_failure},
        )


def test_outcomes_of_claims_another_process_took_over_change_nothing_and_run_no_hook(db: Database) -> None:
    _enqueue(db, "a@example.com", "b@example.com", "c@example.com")
    stale = _claim(db, now=NOW)
    # Our lease ran out; another process claimed the three again (attempts 2) and is sending them.
    current = _claim(db, now=NOW + LEASE + timedelta(seconds=1))
    assert [m.attempts for m in current] == [2, 2, 2]
    before = {id: (r.state, r.attempts, r.lease_expires_at, r.last_error) for id, r in _rows(db).items()}

    # Delivered, failed (given up: max_attempts=1) and undeliverable: all under the old claim.
    a, b, c = stale
    calls = HookCalls()
    counts = _record(db, stale, {a.id: None, b.id: "451 try later", c.id: Undeliverable("bad")}, calls)

    assert counts == (0, 0)
    assert calls.delivered == [] and calls.given_up == []
    after = {id: (r.state, r.attempts, r.lease_expires_at, r.last_error) for id, r in _rows(db).items()}
    assert after == before
    assert all(row.payload is not None for row in _rows(db).values())

    # The process that holds the claims now stores its outcomes as usual.
    assert _record(db, current, dict.fromkeys((m.id for m in current), None), calls) == (3, 0)
    assert sorted(calls.delivered) == [1, 2, 3]
    assert {r.state for r in _rows(db).values()} == {"sent"}


def test_a_group_of_current_claims_and_claims_taken_over_stores_only_the_current(db: Database) -> None:
    _enqueue(db, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    stale = _claim(db, now=NOW)
    taken = {m.id for m in _claim(db, now=NOW + LEASE + timedelta(seconds=1), limit=2)}
    assert len(taken) == 2
    # This process's outcomes for all four: two delivered, two given up; one of each was taken over.
    sent_taken, failed_taken = [m for m in stale if m.id in taken]
    sent_kept, failed_kept = [m for m in stale if m.id not in taken]
    calls = HookCalls()
    errors: dict[int, str | None] = {
        sent_taken.id: None,
        sent_kept.id: None,
        failed_taken.id: "550 no such mailbox",
        failed_kept.id: "550 no such mailbox",
    }

    assert _record(db, stale, errors, calls) == (1, 1)

    assert calls.delivered == [sent_kept.reference_id]
    assert [reference for reference, _ in calls.given_up] == [failed_kept.reference_id]
    rows = _rows(db)
    assert (rows[sent_kept.id].state, rows[failed_kept.id].state) == ("sent", "dead")
    assert {(rows[id].state, rows[id].attempts) for id in taken} == {("sending", 2)}


def _smtp_settings(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_concurrency": 1})


async def _drain(db: Database, sender: outbox.Sender, *, lease: timedelta) -> outbox.DrainReport:
    """One drain, as a scheduler pass makes it (its leases renewed while it runs)."""
    try:
        return await outbox.drain(
            db.factory, {sender.channel: sender}, secret=SECRET, batch_size=10, max_attempts=3, lease=lease
        )
    finally:
        await sender.close()


class StallingSender(SmtpSender):
    """An SMTP sender whose whole process stalls (a long GC, a busy machine) between claiming and
    sending, until ``resume`` is set: no heartbeat renews its leases meanwhile."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stalled = threading.Event()
        self.resume = threading.Event()

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        self.stalled.set()
        self.resume.wait(60)  # blocks the event loop, as a stalled process does
        await super().deliver(messages, outcomes)


def test_a_sender_stalled_past_its_lease_leaves_the_message_to_the_process_that_took_it_over(
    db: Database, settings: Settings, sink: tuple[Sink, int]
) -> None:
    handler, port = sink
    settings = _smtp_settings(settings, port)
    _enqueue(db, "buyer@example.com", not_before=utcnow())
    stalling = StallingSender(settings)
    taken_over: list[outbox.DrainReport] = []

    def other_process() -> None:
        """Drains as another scheduler would, until the stalled process's lease has run out."""
        stalling.stalled.wait(60)
        deadline = time.monotonic() + 30
        try:
            while not taken_over and time.monotonic() < deadline:
                report = asyncio.run(_drain(db, SmtpSender(settings), lease=LEASE))
                if report.sent:
                    taken_over.append(report)
                time.sleep(0.05)
        finally:
            stalling.resume.set()

    other = threading.Thread(target=other_process)
    other.start()
    try:
        stalled_report = asyncio.run(_drain(db, stalling, lease=timedelta(seconds=1)))
    finally:
        other.join(60)

    assert [(r.sent, r.failed) for r in taken_over] == [(1, 0)]
    assert handler.received == Counter({"buyer@example.com": 1})  # once, by the other process
    assert (stalled_report.sent, stalled_report.failed) == (0, 0)  # skipped: neither sent nor failed
    [row] = _rows(db).values()
    assert (row.state, row.attempts, row.last_error) == ("sent", 2, None)


async def _one_batch(claimed: list[ClaimedMessage]) -> AsyncGenerator[list[ClaimedMessage], None]:
    yield claimed


async def _until_lost(held: outbox.Held, seconds: float = 30) -> None:
    """Until a heartbeat has found a claim taken over (the first beat comes after a third of a lease)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not held.lost():
        assert loop.time() < deadline, "no renewal noticed the claim taken over"
        await asyncio.sleep(0.02)


def test_renewing_claims_another_process_took_over_marks_them_lost(db: Database) -> None:
    lease, start = timedelta(seconds=3), utcnow()
    _enqueue(db, "a@example.com", "b@example.com", not_before=start)
    held = outbox.Held()
    ours = _claim(db, now=start, lease=lease)
    held.add(ours)
    # Another process whose clock says our lease has run out claims the first message (attempts 2).
    [taken] = _claim(db, now=start + 2 * lease, lease=lease, limit=1)
    [ours_taken] = [m for m in ours if m.id == taken.id]
    [kept] = [m for m in ours if m.id != taken.id]
    before = _rows(db)

    async def heartbeat() -> None:
        async with outbox.leases_kept(db.factory, held, lease=lease):
            await _until_lost(held)
            outcomes = Outcomes(held=held)
            with pytest.raises(outbox.LeaseLost):
                await outcomes.admit(ours_taken)
            await outcomes.admit(kept)  # renewed: still ours

    asyncio.run(heartbeat())

    assert held.lost() == {taken.id}
    assert held.snapshot() == {kept.id: 1}  # the lost claim is not renewed any more
    after = _rows(db)
    # The other process's claim and lease stand; ours was renewed.
    assert after[taken.id].attempts == 2
    assert after[taken.id].lease_expires_at == before[taken.id].lease_expires_at
    kept_lease, kept_lease_before = after[kept.id].lease_expires_at, before[kept.id].lease_expires_at
    assert kept_lease is not None and kept_lease_before is not None and kept_lease > kept_lease_before
    with transaction(db.factory) as session:
        renewed = outbox.renew_leases(session, {taken.id: 1, kept.id: 1}, now=utcnow(), lease=lease)
    assert renewed == {kept.id}


def test_a_message_taken_over_mid_connection_is_skipped_and_the_connection_carries_on(
    db: Database, settings: Settings, sink: tuple[Sink, int]
) -> None:
    """The SMTP sender has sent MAIL and RCPT when the outbox refuses the content: it resets the
    envelope, reports nothing for that message, and sends the next one on the same connection."""
    handler, port = sink
    settings = _smtp_settings(settings, port)  # one connection
    lease, start = timedelta(seconds=3), utcnow()
    with transaction(db.factory) as session:
        outbox.enqueue_many(
            session,
            [
                NewMessage("email", "test", "a@example.com", PAYLOAD, reference_id=1, not_before=start),
                # Due first, so that the other process's claim of one message takes this one.
                NewMessage(
                    "email", "test", "b@example.com", PAYLOAD, reference_id=2, not_before=start - LEASE
                ),
                NewMessage("email", "test", "c@example.com", PAYLOAD, reference_id=3, not_before=start),
            ],
            secret=SECRET,
            now=start,
        )
    held = outbox.Held()
    ours = sorted(_claim(db, now=start, lease=lease), key=lambda m: m.recipient)
    held.add(ours)
    [taken] = _claim(db, now=start + 2 * lease, lease=lease, limit=1)
    assert taken.recipient == "b@example.com"
    calls = HookCalls()

    async def send() -> outbox.DrainReport:
        sender = SmtpSender(settings)
        try:
            async with outbox.leases_kept(db.factory, held, lease=lease):
                await _until_lost(held)
                return await outbox.deliver_batches(
                    db.factory,
                    {"email": sender},
                    _one_batch(ours),
                    max_attempts=3,
                    hooks={"test": calls.on_delivery},
                    unrecorded_limit=1,  # b waits for a's outcome to be stored, then is refused
                    held=held,
                )
        finally:
            await sender.close()

    report = asyncio.run(asyncio.wait_for(send(), 60))

    assert (report.sent, report.failed, report.stopped) == (2, 0, False)
    assert handler.received == Counter({"a@example.com": 1, "c@example.com": 1})
    assert handler.connections == 1
    assert sorted(calls.delivered) == [1, 3]
    rows = _rows(db)
    assert {(r.recipient, r.state, r.attempts) for r in rows.values()} == {
        ("a@example.com", "sent", 1),
        ("b@example.com", "sending", 2),  # the other process's claim, untouched
        ("c@example.com", "sent", 1),
    }


def test_an_sms_whose_lease_may_have_run_out_is_not_posted_failed_or_recorded(
    db: Database, settings: Settings, sms_gateway: Gateway, log_capture: Path
) -> None:
    """No heartbeat ran (a stalled process): two thirds of the lease after the claim this process
    can no longer be sure of it, even though nobody has taken it over yet. The claim's time is the
    claim's, not when its batch reached the sender."""
    settings = settings.model_copy(update={"sms_backend": "http", "sms_http_url": sms_gateway.url})
    lease, start = timedelta(seconds=0.6), utcnow()
    _enqueue(db, "+46701234567", channel="sms", not_before=start)
    held = outbox.Held(lease)
    secured = time.monotonic()
    claimed = _claim(db, now=start, lease=lease, channel="sms")
    held.add(claimed, secured=secured)
    time.sleep(0.5)  # more than two thirds of the lease
    logged = log_capture.stat().st_size

    async def send() -> outbox.DrainReport:
        sender = HttpSmsSender(settings)
        try:
            return await outbox.deliver_batches(
                db.factory, {"sms": sender}, _one_batch(claimed), max_attempts=3, held=held
            )
        finally:
            await sender.close()

    report = asyncio.run(send())

    assert (report.sent, report.failed, report.stopped) == (0, 0, False)
    assert sms_gateway.received == []
    [row] = _rows(db).values()
    assert (row.state, row.attempts, row.last_error) == ("sending", 1, None)  # left to its lease
    assert held.lost() == {row.id} and held.snapshot() == {}  # not renewed any more
    with log_capture.open(encoding="utf-8") as log:
        log.seek(logged)
        lines = [line for line in log.read().splitlines() if "outbox.lease_lost" in line]
    assert len(lines) == 1 and str(row.id) in lines[0] and "+46701234567" not in lines[0]


def test_releasing_claims_leaves_one_another_process_took_over_to_it(db: Database) -> None:
    _enqueue(db, "a@example.com", "b@example.com")
    ours = _claim(db, now=NOW)
    [taken] = _claim(db, now=NOW + LEASE + timedelta(seconds=1), limit=1)
    with transaction(db.factory) as session:
        outbox.release(session, ours)
    rows = _rows(db)
    assert (rows[taken.id].state, rows[taken.id].attempts) == ("sending", 2)
    [released] = [r for r in rows.values() if r.id != taken.id]
    assert (released.state, released.attempts, released.lease_expires_at) == ("pending", 0, None)
