"""The outbox under a crash: four scheduler processes share 2,000 due invitations, the one sending
is killed (``kill -9``) a third of the way through, and later passes finish the work. Every buyer
gets the invitation; only the messages the killed process had in flight or sent but not yet
recorded (at most its SMTP connections) may arrive twice; and it is all done soon after the kill
(short leases, renewed while a sender works). With an address the mail server cannot take among
them, every other buyer is still invited and that one message has a stated outcome."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from notifications.models import OutboxMessage
from tests.conftest import NOW, Database, free_port
from vehicles.models import Order, OrderEvent

DUE = 2_000
CONNECTIONS = 4  # SMTP connections per scheduler process (ONBOARDING_SMTP_CONCURRENCY)
UNSENDABLE = "jörg@bücher.example"  # a non-ASCII local part, for a server without SMTPUTF8


@dataclass
class CountingSink:
    """Counts accepted messages per envelope recipient and remembers which client connection (its
    port) delivered the latest one. Each recipient is held up a little, like a real server, so
    that a pass takes a few seconds; the message counts once its content has arrived."""

    delay: float = 0.02
    received: Counter[str] = field(default_factory=Counter)
    last_client_port: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.update(envelope.rcpt_tos)
            self.last_client_port = session.peer[1]
        return "250 accepted"

    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())


@pytest.fixture
def sink() -> Iterator[tuple[CountingSink, int]]:
    handler, port = CountingSink(), free_port()
    # No SMTPUTF8: a non-ASCII local part cannot be delivered here.
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    yield handler, port
    controller.stop()


def _seed(db: Database, emails: list[str]) -> None:
    """Due orders as the order service stores them, bulk-inserted (as bench/invitations.py does)."""
    today = date.today()
    rows = [
        {
            "order_number": f"K{n:05d}",
            "dealer_code": "SE-01",
            "model_code": "E40",
            "buyer_first_name": "Buyer",
            "buyer_last_name": f"No {n}",
            "buyer_email": email,
            "buyer_phone": "+46701234567",
            "country": "SE",
            "language": "sv",
            "planned_delivery_date": today + timedelta(days=5),
            "production_status": "ordered",
            "invite_after": today - timedelta(days=9),
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n, email in enumerate(emails)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(Order), rows)


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "onboarding.ops.cli", "scheduler", "run-once"],
            env=env,
            stdout=out,
            stderr=out,
        )


def _holder_of(processes: list[subprocess.Popen[bytes]], client_port: int | None) -> subprocess.Popen[bytes]:
    """The scheduler process whose SMTP connection delivered the latest message."""
    for process in processes:
        try:
            ports = {c.laddr.port for c in psutil.Process(process.pid).net_connections(kind="tcp")}
        except psutil.NoSuchProcess:
            continue
        if client_port in ports:
            return process
    raise AssertionError("no running scheduler holds the connection that is sending")


@pytest.mark.slow
@pytest.mark.parametrize("with_unsendable", [False, True], ids=["ascii", "with-unsendable-address"])
def test_killing_the_sending_scheduler_mid_pass_loses_nothing_and_repeats_little(
    db: Database, reference: None, sink: tuple[CountingSink, int], tmp_path: Path, with_unsendable: bool
) -> None:
    handler, port = sink
    emails = [f"buyer{n}@example.com" for n in range(DUE)]
    if with_unsendable:
        emails[DUE // 2] = UNSENDABLE
    _seed(db, emails)
    expected = set(emails) - {UNSENDABLE}
    env = {
        **os.environ,
        "ONBOARDING_DATABASE_URL": db.url,
        "ONBOARDING_SECRET_KEY": "crash-test-secret-" + "y" * 30,
        "ONBOARDING_SMTP_HOST": "127.0.0.1",
        "ONBOARDING_SMTP_PORT": str(port),
        "ONBOARDING_SMTP_CONCURRENCY": str(CONNECTIONS),
        # Short, so the test ends soon after the kill; long enough that a living process stalled by
        # a busy machine (renewing every third of it) keeps its claims.
        "ONBOARDING_OUTBOX_LEASE_SECONDS": "15",
        "ONBOARDING_SCHEDULER_BATCH_SIZE": "200",
    }
    log = tmp_path / "schedulers.log"
    processes = [_scheduler(env, log) for _ in range(4)]
    started: list[subprocess.Popen[bytes]] = list(processes)
    try:
        deadline = time.monotonic() + 180
        while handler.total() < DUE // 3:
            assert time.monotonic() < deadline, "the schedulers did not get a third of the way"
            assert any(p.poll() is None for p in processes), "every scheduler ended before a third"
            time.sleep(0.01)
        victim = _holder_of(processes, handler.last_client_port)
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(10)
        received_at_kill = handler.total()
        for process in processes:
            if process is not victim:
                assert process.wait(180) == 0, log.read_text(errors="replace")[-3000:]
        # Further passes (as the in-process scheduler would run every 20 s) until every buyer has
        # the invitation; the killed process's claims are taken over once their lease runs out.
        while not expected <= set(handler.received):
            assert time.monotonic() - killed_at < 120, f"not done 2 minutes after the kill: {handler.total()}"
            follow_up = _scheduler(env, log)
            started.append(follow_up)
            assert follow_up.wait(120) == 0, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        done_after = time.monotonic() - killed_at
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    duplicates = {address: count for address, count in handler.received.items() if count > 1}
    print(
        f"{db.kind}: killed pid {victim.pid} at {received_at_kill} received; every buyer invited "
        f"{done_after:.1f} s after the kill; {sum(duplicates.values()) - len(duplicates)} duplicates"
    )
    assert set(handler.received) == expected  # every buyer, nobody else
    assert sum(duplicates.values()) - len(duplicates) <= CONNECTIONS
    assert done_after < 120
    with db.factory() as session:
        counted = select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        states = {state: count for state, count in session.execute(counted)}
        assert states == ({"sent": DUE - 1, "dead": 1} if with_unsendable else {"sent": DUE})
        if with_unsendable:
            dead = session.scalars(select(OutboxMessage).where(OutboxMessage.state == "dead")).one()
            # Dead when first tried, not after 20 attempts (its first claim may have died with the
            # killed process: then it was tried by the process that took it over).
            assert dead.recipient == UNSENDABLE and dead.attempts <= 2
            assert dead.last_error is not None and "SMTPUTF8" in dead.last_error
            [detail] = session.scalars(
                select(OrderEvent.detail)
                .join(Order, Order.id == OrderEvent.order_id)
                .where(Order.buyer_email == UNSENDABLE, OrderEvent.kind == "invitation_failed")
            )
            assert detail is not None and "SMTPUTF8" in detail
