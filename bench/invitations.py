"""Invitation throughput and scheduler scaling benchmark (acceptance criterion of the invitations issue).

Run from the repository root::

    .venv/bin/python bench/invitations.py [--orders 10000] [--concurrency 8] [--database-url URL] [--quick]

Method
------
*SMTP sink.* An aiosmtpd ``Controller`` on 127.0.0.1 runs in a separate process (multiprocessing,
``spawn``) with a handler that only counts messages per envelope recipient. The sink's CPU therefore
does not compete with the GIL of the code under test. The parent asks it for its counts over a pipe.

*Database.* A fresh SQLite file in a temporary directory (migrated with ``onboarding.ops.migrations``), or,
with ``--database-url postgresql+psycopg://user@host:port/db``, fresh databases ``bench_…`` created on
that server and dropped at the end. Reference data (dealers, models) is written through the service,
as in ``tests/conftest.py``; orders are bulk-inserted with SQLAlchemy Core ``insert(Order)`` in chunks of
20,000 rows, with the values the order service would store (E.164 phones, normalised emails, known
dealer/model codes, ``invite_after = planned_delivery_date - 14 days`` or NULL, tz-aware UTC
timestamps). A sample of the generated orders is run through ``vehicles.service.validate_order`` to
prove it. Non-due orders are a mix of already invited (``invite_after`` NULL), delivered/cancelled
(NULL) and far-future orders (``invite_after`` after today, as the service stores them).

*Part 1: end to end.* N due orders (plus N non-due ones). Before timing, N messages are pre-built
with the application's own ``render_email``/``build_email`` for the same orders. The raw baseline is
an aiosmtplib loop: ``concurrency`` workers, each with one persistent connection, sending from a
shared queue. It runs before and after the application pass; the faster of the two is used, so the
ratio is conservative. The application pass is one ``onboarding.activation.jobs.run_due_jobs`` call
(claim due orders, create invitations, render, encrypt into the outbox, claim the outbox, deliver
over ``Settings.smtp_concurrency`` connections, record delivery). The sink must have received
exactly one message for each due order's buyer and nothing else; otherwise the exit code is 1.
``ratio = app rate / raw rate`` (target >= 0.5).

*Part 2: scaling.* One database: orders are seeded so that a fixed due set (``--due``, 500 by
default) is spread evenly through the first 100,000 orders; one scheduler pass
(``onboarding.activation.jobs.run_due_jobs`` with a sender that accepts every message at once, so no
SMTP) is timed ``--repeats`` times after one untimed warm-up pass, the state being reset between
runs (invitations, outbox rows and invitation events deleted, ``invite_after`` and ``invited_at`` of
the due orders restored). Then 900,000 non-due orders are added and the same
due set is timed again. The ratio of the medians is printed (target <= 1.5: the cost follows the due
orders, not the table size). On PostgreSQL the tables are ANALYZEd after each seed, as autovacuum
would; on SQLite nothing is analysed because the application never runs ANALYZE.

``--quick`` uses 1,000 orders for part 1 and 10,000 / 100,000 orders for part 2.

Exit code: 0 when every message arrived exactly once (even if a target is missed: this is a
measurement), 1 when a message was lost or duplicated or a pass invited the wrong number of orders.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib
from benchdb import BenchDb, free_port, fresh_database
from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from notifications.email import build_email, envelope_sender, render_email
from notifications.models import OutboxMessage
from notifications.outbox import ClaimedMessage, Outcomes
from notifications.support import contact_for
from onboarding.activation import invitations
from onboarding.activation import jobs as scheduler
from onboarding.activation.models import Invitation
from onboarding.core.branding import brand
from onboarding.core.crypto import new_token
from onboarding.core.db import transaction
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings
from vehicles.models import Dealer, Order, OrderEvent, Powertrain, VehicleModel
from vehicles.schemas import DealerIn, OrderIn, VehicleModelIn
from vehicles.service import upsert_dealer, upsert_model, validate_order

LEAD_DAYS = 14
CHUNK = 20_000
SECRET = "bench-secret-" + "x" * 40

# --- the SMTP sink (runs in its own process) ------------------------------------------------------


class CountingHandler:
    """aiosmtpd handler: counts accepted messages per envelope recipient, keeps nothing else."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.recipients: Counter[str] = Counter()

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        with self.lock:
            self.messages += 1
            self.recipients.update(envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    def reset(self) -> None:
        with self.lock:
            self.messages = 0
            self.recipients = Counter()

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return self.messages, dict(self.recipients)


def _sink_main(port: int, conn: Connection) -> None:
    """Child process: serve SMTP on 127.0.0.1:port and answer ``stats``/``reset``/``stop``."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from aiosmtpd.controller import Controller

    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=30)
    controller.start()
    conn.send("ready")
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(handler.snapshot())
            elif command == "reset":
                handler.reset()
                conn.send("ok")
            else:
                break
    finally:
        controller.stop()


class Sink:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.port = free_port()
        self.process = ctx.Process(target=_sink_main, args=(self.port, child), daemon=True)
        self.process.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            raise RuntimeError("the SMTP sink did not start")

    def stats(self) -> tuple[int, dict[str, int]]:
        self._conn.send("stats")
        result: tuple[int, dict[str, int]] = self._conn.recv()
        return result

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def close(self) -> None:
        with suppress(OSError):
            self._conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def check_delivery(sink: Sink, expected: Sequence[str], label: str) -> bool:
    """True when the sink got exactly one message for each expected recipient and nothing else."""
    total, per_recipient = sink.stats()
    wanted = Counter(expected)
    missing = sum((wanted - Counter(per_recipient)).values())
    extra = sum((Counter(per_recipient) - wanted).values())
    if total == len(expected) and missing == 0 and extra == 0:
        return True
    print(
        f"ERROR {label}: sink received {total} messages for {len(expected)} expected; "
        f"{missing} missing, {extra} unexpected or duplicated",
        file=sys.stderr,
    )
    return False


# --- databases ------------------------------------------------------------------------------------


@contextmanager
def seeded_database(base_url: str | None, workdir: Path, label: str) -> Iterator[BenchDb]:
    """A fresh database with the reference data."""
    with fresh_database(base_url, workdir, label) as db:
        seed_reference(db.factory)
        yield db


SERVICES = {"SE": ["navigation", "remote_climate"], "US": ["navigation"], "ZA": ["navigation"]}
# (code, country, language, name, email) — the reference data of tests/conftest.py.
DEALERS = (
    ("SE-01", "SE", "sv", "Centre Stockholm", "centre@dealer.example"),
    ("US-01", "US", "en", "Center Boston", "boston@dealer.example"),
    ("ZA-01", "ZA", "en", "Centre Cape Town", "capetown@dealer.example"),
)
MODELS = (
    ("E40", "Nordlicht E40", 2027, Powertrain.BEV, True, True),
    ("S90", "Nordlicht S90", 2026, Powertrain.ICE, False, False),
)
FIRST_NAMES = ("Astrid", "Lars", "Emma", "Noah", "Thandi", "Olivia", "Sipho", "Ingrid")
LAST_NAMES = ("Lindqvist", "Andersson", "Miller", "Nkosi", "Berg", "Johnson", "van Wyk", "Karlsson")


def seed_reference(factory: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(factory) as session:
        for code, country, language, name, email in DEALERS:
            upsert_dealer(
                session, code, DealerIn(name=name, country=country, email=email, language=language), now
            )
        for code, name, year, powertrain, pin, data_pass in MODELS:
            upsert_model(
                session,
                code,
                VehicleModelIn(
                    name=name,
                    model_year=year,
                    powertrain=powertrain,
                    requires_security_pin=pin,
                    offers_data_pass=data_pass,
                    services=SERVICES,
                ),
                now,
            )


# --- orders -----------------------------------------------------------------------------------------


def _phone(country: str, i: int) -> str:
    """A valid mobile number in E.164, unique per order number modulo 10^7."""
    if country == "SE":
        return f"+4670{i % 10_000_000:07d}"
    if country == "US":
        return f"+1617{2_000_000 + i % 8_000_000:07d}"
    return f"+2782{i % 10_000_000:07d}"


FILLER_KINDS = ("future", "invited", "future", "invited", "closed")


def order_row(i: int, kind: str, now: datetime) -> dict[str, Any]:
    """Order ``i`` as the order service would store it. ``kind``: due, future, invited or closed."""
    today = now.date()
    dealer, country, language, _name, _email = DEALERS[i % len(DEALERS)]
    invite_after: date | None = None
    invited_at: datetime | None = None
    status = "in_production"
    if kind == "due":  # planned within the next 14 days: invite_after is today or earlier
        planned = today + timedelta(days=i % (LEAD_DAYS + 1))
        invite_after = planned - timedelta(days=LEAD_DAYS)
        status = ("in_production", "produced", "in_transit")[i % 3]
    elif kind == "future":  # due later: the service stores a future invite_after
        planned = today + timedelta(days=LEAD_DAYS + 1 + i % 700)
        invite_after = planned - timedelta(days=LEAD_DAYS)
        status = ("ordered", "in_production")[i % 2]
    elif kind == "invited":  # invitation already sent
        planned = today + timedelta(days=i % 60 - 30)
        invited_at = now - timedelta(days=LEAD_DAYS + 1 - i % 14, minutes=i % 1440)
        status = ("in_transit", "at_dealer", "delivered")[i % 3]
    else:  # closed: delivered long ago or cancelled
        planned = today - timedelta(days=30 + i % 900)
        status = ("delivered", "cancelled")[i % 2]
    created = now - timedelta(days=60 + i % 400, seconds=i % 86_400)
    return {
        "order_number": f"BN{i:09d}",
        "dealer_code": dealer,
        "model_code": MODELS[i % len(MODELS)][0],
        "vin": None,
        "buyer_first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
        "buyer_last_name": LAST_NAMES[(i // 7) % len(LAST_NAMES)],
        "buyer_email": f"buyer{i}@example.com",
        "buyer_phone": _phone(country, i),
        "country": country,
        "language": language,
        "planned_delivery_date": planned,
        "production_status": status,
        "invite_after": invite_after,
        "invited_at": invited_at,
        "onboarded_at": None,
        "account_id": None,
        "created_at": created,
        "updated_at": created + timedelta(days=i % 30),
    }


def check_rows_are_service_values(factory: sessionmaker[Session], rows: Sequence[dict[str, Any]]) -> None:
    """Run a sample of generated orders through the order service's validation."""
    with transaction(factory) as session:
        for row in rows:
            payload = {
                k: row[k]
                for k in (
                    "dealer_code",
                    "model_code",
                    "buyer_first_name",
                    "buyer_last_name",
                    "buyer_email",
                    "buyer_phone",
                    "country",
                    "language",
                )
            }
            payload["planned_delivery_date"] = row["planned_delivery_date"].isoformat()
            clean = validate_order(
                session, row["order_number"], OrderIn.model_validate(payload), today=date.today()
            )
            for field in ("buyer_email", "buyer_phone", "country", "language"):
                if getattr(clean, field) != row[field]:
                    raise AssertionError(
                        f"{field}: service gives {getattr(clean, field)!r}, not {row[field]!r}"
                    )


def insert_orders(db: BenchDb, rows: Iterator[dict[str, Any]]) -> int:
    """Bulk insert in chunks of CHUNK rows, one transaction per chunk; returns the row count."""
    count = 0
    chunk: list[dict[str, Any]] = []
    statement = insert(Order)

    def flush() -> None:
        with db.engine.begin() as conn:
            conn.execute(statement, chunk)

    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            flush()
            count += len(chunk)
            chunk = []
    if chunk:
        flush()
        count += len(chunk)
    return count


def analyze(db: BenchDb) -> None:
    if db.kind == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))


def bench_settings(db: BenchDb, smtp_port: int | None, concurrency: int) -> Settings:
    return Settings(
        database_url=db.url,
        secret_key=SECRET,
        public_base_url="https://onboarding.nordlicht-motors.example",
        smtp_host="127.0.0.1" if smtp_port else None,
        smtp_port=smtp_port or 25,
        smtp_concurrency=concurrency,
        _env_file=None,
    )


# --- part 1: end to end ---------------------------------------------------------------------------


def prebuild_messages(
    db: BenchDb, settings: Settings, rows: Sequence[dict[str, Any]], now: datetime
) -> list[tuple[str, bytes]]:
    """The same invitations the application will send, rendered and built with its own functions."""
    with transaction(db.factory) as session:
        dealers = {d.code: d for d in session.scalars(select(Dealer))}
        models = {m.code: m for m in session.scalars(select(VehicleModel))}
    expires = now + timedelta(days=settings.invitation_valid_days)
    messages: list[tuple[str, bytes]] = []
    for row in rows:
        dealer, model = dealers[row["dealer_code"]], models[row["model_code"]]
        context: dict[str, Any] = {
            "brand": brand(settings),
            "support": contact_for(settings, row["country"], dealer),
            "first_name": row["buyer_first_name"],
            "model_name": model.name,
            "dealer_name": dealer.name,
            "delivery_date": row["planned_delivery_date"],
            "link": invitations.link_for(settings, new_token()),
            "valid_days": settings.invitation_valid_days,
            "expires_on": expires.date(),
        }
        rendered = render_email("invitation", row["language"], context)
        payload = build_email(settings, to=row["buyer_email"], rendered=rendered, language=row["language"])
        messages.append((row["buyer_email"], payload))
    return messages


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0  # CPU time of this process (the sink's is not included)

    @property
    def load(self) -> str:
        return f"{self.cpu / self.wall:.0%}" if self.wall else "-"


@contextmanager
def measure() -> Iterator[Timing]:
    timing = Timing()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield timing
    finally:
        timing.wall, timing.cpu = time.perf_counter() - wall, time.process_time() - cpu


async def raw_send(settings: Settings, messages: Sequence[tuple[str, bytes]]) -> Timing:
    """``smtp_concurrency`` workers, one persistent connection each, draining a shared queue."""
    assert settings.smtp_host
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    sender = envelope_sender(settings)

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            start_tls=False,
            timeout=settings.smtp_timeout_seconds,
        )
        await client.connect()
        try:
            while True:
                try:
                    recipient, payload = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await client.sendmail(sender, [recipient], payload)
        finally:
            await client.quit()

    with measure() as timing:
        await asyncio.gather(*(worker() for _ in range(min(settings.smtp_concurrency, len(messages)))))
    return timing


@dataclass
class AppPass:
    total: Timing
    report: scheduler.JobReport


def timed_app_pass(db: BenchDb, settings: Settings, profile: Path | None) -> AppPass:
    """One ``run_due_jobs`` call: creation and delivery overlap inside it, so it is timed whole."""
    profiler = cProfile.Profile() if profile else None
    with measure() as total:
        if profiler:
            profiler.enable()
        report = asyncio.run(scheduler.run_due_jobs(db.factory, settings))
        if profiler:
            profiler.disable()
    if profiler and profile:
        profiler.dump_stats(profile)
        print(f"  profile of the application pass written to {profile}")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return AppPass(total, report)


def part1(args: argparse.Namespace, sink: Sink, workdir: Path) -> bool:
    n = args.orders
    ok = True
    with seeded_database(args.database_url, workdir, "e2e") as db:
        now = datetime.now(UTC)
        settings = bench_settings(db, sink.port, args.concurrency)
        due_rows = [order_row(i, "due", now) for i in range(n)]
        filler = (order_row(i, FILLER_KINDS[i % len(FILLER_KINDS)], now) for i in range(n, 2 * n))
        check_rows_are_service_values(db.factory, due_rows[:10])
        with measure() as seeding:
            insert_orders(db, iter(due_rows))
            insert_orders(db, filler)
            analyze(db)
        print(f"part 1 ({db.kind}): seeded {n} due + {n} non-due orders in {seeding.wall:.1f} s")

        with measure() as building:
            messages = prebuild_messages(db, settings, due_rows, now)
        expected = [r["buyer_email"] for r in due_rows]
        asyncio.run(raw_send(settings, messages[: min(200, n)]))  # warm-up: imports, first connections
        sink.reset()
        raw = [asyncio.run(raw_send(settings, messages))]
        ok &= check_delivery(sink, expected, "raw baseline")
        sink.reset()

        app = timed_app_pass(db, settings, args.profile)
        ok &= check_delivery(sink, expected, "application")
        report = app.report
        if (report.invited, report.sent, report.failed) != (n, n, 0):
            print(f"ERROR application: {report}", file=sys.stderr)
            ok = False
        with transaction(db.factory) as session:
            sent = session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "sent")
            )
            delivered = session.scalar(
                select(func.count()).select_from(Invitation).where(Invitation.sent_at.is_not(None))
            )
        if sent != n or delivered != n:
            print(
                f"ERROR database: {sent} outbox rows sent, {delivered} invitations delivered", file=sys.stderr
            )
            ok = False

        sink.reset()
        raw.append(asyncio.run(raw_send(settings, messages)))
        ok &= check_delivery(sink, expected, "raw baseline (second run)")
        sink.reset()

    best = min(raw, key=lambda t: t.wall)
    raw_rate, app_rate = n / best.wall, n / app.total.wall
    ratio = app_rate / raw_rate
    runs = ", ".join(f"{n / t.wall:.0f}/s (client CPU {t.load} of wall time)" for t in raw)
    print(f"  pre-built {n} messages with render_email + build_email in {building.wall:.2f} s (not timed)")
    print(f"  raw aiosmtplib runs: {runs}; the faster one is used")
    print(
        f"  application pass (claim, invitations, render, outbox, SMTP, delivery records, overlapped): "
        f"{app.total.wall:.2f} s (CPU {app.total.load} of wall time)"
    )
    print(
        f"invitations: {n} in {app.total.wall:.2f} s = {app_rate:.0f}/s; raw aiosmtplib: {raw_rate:.0f}/s; "
        f"ratio {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'})"
    )
    return ok


# --- part 2: one scheduler pass among 100k and 1M orders ------------------------------------------


def reset_due(db: BenchDb, due: Sequence[dict[str, Any]]) -> None:
    """Undo a pass: no invitations, outbox rows or scheduler events; the due set due again."""
    table = Order.__table__
    assert isinstance(table, Table)
    with db.engine.begin() as conn:
        conn.execute(delete(OutboxMessage))
        conn.execute(delete(OrderEvent).where(OrderEvent.kind.in_(["invitation_created", "invitation_sent"])))
        conn.execute(delete(Invitation))
        conn.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(invite_after=bindparam("b_invite_after"), invited_at=None),
            [{"b_id": r["id"], "b_invite_after": r["invite_after"]} for r in due],
        )


class AcceptAll:
    """A sender that accepts everything at once: part 2 times the scheduler's own work."""

    channel = "email"

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        for m in messages:
            outcomes.report(m, None)

    async def close(self) -> None:
        return None


def time_passes(
    db: BenchDb, settings: Settings, due: Sequence[dict[str, Any]], repeats: int
) -> tuple[list[Timing], list[float]]:
    """``repeats`` timed passes after one untimed warm-up pass; also times the due-order query alone
    (the one statement whose cost could follow the table size)."""
    passes: list[Timing] = []
    queries: list[float] = []
    for attempt in range(repeats + 1):
        reset_due(db, due)
        today = datetime.now(UTC).date()
        with db.engine.connect() as conn, measure() as query:
            conn.execute(
                select(Order.id)
                .where(Order.invite_after <= today)
                .order_by(Order.invite_after, Order.id)
                .limit(settings.scheduler_batch_size)
            ).all()
        with measure() as timing:
            report = asyncio.run(scheduler.run_due_jobs(db.factory, settings, senders={"email": AcceptAll()}))
        if report.invited != len(due):
            raise AssertionError(f"a pass invited {report.invited} orders, not {len(due)}")
        if attempt:
            passes.append(timing)
            queries.append(query.wall)
    return passes, queries


def part2(args: argparse.Namespace, workdir: Path) -> bool:
    due_count, small, large = args.due, args.small, args.large
    with seeded_database(args.database_url, workdir, "scale") as db:
        now = datetime.now(UTC)
        settings = bench_settings(db, None, args.concurrency)
        step = small // due_count
        base = 1_000_000_000  # order numbers distinct from part 1's

        def kind(i: int) -> str:
            return "due" if i % step == 0 and i // step < due_count else FILLER_KINDS[i % len(FILLER_KINDS)]

        started = time.perf_counter()
        insert_orders(db, (order_row(base + i, kind(i), now) for i in range(small)))
        analyze(db)
        due = [order_row(base + i, "due", now) for i in range(0, small, step)][:due_count]
        with db.engine.connect() as conn:
            found = conn.execute(
                select(Order.order_number, Order.id).where(
                    Order.order_number.in_([r["order_number"] for r in due])
                )
            )
            ids = {number: order_id for number, order_id in found}
        for row in due:
            row["id"] = ids[row["order_number"]]
        print(f"part 2 ({db.kind}): seeded {small} orders in {time.perf_counter() - started:.1f} s")
        try:
            small_runs = time_passes(db, settings, due, args.repeats)
        except AssertionError as exc:
            print(f"ERROR scheduler pass among {small}: {exc}", file=sys.stderr)
            return False

        started = time.perf_counter()
        insert_orders(
            db,
            (order_row(base + i, FILLER_KINDS[i % len(FILLER_KINDS)], now) for i in range(small, large)),
        )
        analyze(db)
        print(f"  added {large - small} non-due orders in {time.perf_counter() - started:.1f} s")
        try:
            large_runs = time_passes(db, settings, due, args.repeats)
        except AssertionError as exc:
            print(f"ERROR scheduler pass among {large}: {exc}", file=sys.stderr)
            return False

    small_times, small_queries = small_runs
    large_times, large_queries = large_runs
    small_median = statistics.median(t.wall for t in small_times)
    large_median = statistics.median(t.wall for t in large_times)
    ratio = large_median / small_median
    cpu_ratio = statistics.median(t.cpu for t in large_times) / statistics.median(t.cpu for t in small_times)
    query_small, query_large = statistics.median(small_queries), statistics.median(large_queries)

    def fmt(times: list[Timing]) -> str:
        return ", ".join(f"{t.wall:.3f}" for t in times)

    print(f"  runs among {small}: {fmt(small_times)} s; among {large}: {fmt(large_times)} s")
    print(
        f"  median CPU-time ratio {cpu_ratio:.2f}; due-order query alone: {query_small * 1000:.1f} ms "
        f"among {small}, {query_large * 1000:.1f} ms among {large}"
    )
    print(
        f"scheduler pass, {due_count} due among {small}: {small_median:.3f} s; among {large}: "
        f"{large_median:.3f} s; ratio {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})"
    )
    return True


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=None, help="due orders in part 1 (default 10000)")
    parser.add_argument("--concurrency", type=int, default=8, help="SMTP connections (smtp_concurrency)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL; fresh databases are created there and dropped (default: SQLite)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 orders; scaling among 10k / 100k")
    parser.add_argument("--due", type=int, default=500, help="due orders in the scaling test")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per size in the scaling test")
    parser.add_argument("--skip-e2e", action="store_true", help="only the scaling test")
    parser.add_argument("--skip-scale", action="store_true", help="only the end-to-end test")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the application pass to FILE")
    args = parser.parse_args(argv)
    args.orders = args.orders or (1_000 if args.quick else 10_000)
    args.small, args.large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    if args.due < 1 or args.small // args.due < 1:
        parser.error("--due must be between 1 and the smaller table size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-invitations-") as tmp:
        workdir = Path(tmp)
        if not args.skip_e2e:
            sink = Sink()
            try:
                ok &= part1(args, sink, workdir)
            finally:
                sink.close()
        if not args.skip_scale:
            ok &= part2(args, workdir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
