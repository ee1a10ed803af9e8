"""CSV import benchmark: a 460,000-row (about 50 MB) order file through ``onboarding orders import``.

Run from the repository root::

    .venv/bin/python bench/csv_import.py [--rows 460000] [--database-url URL] [--quick]

Method
------
*File.* Generated into a temporary directory: ``--rows`` distinct orders in the documented columns,
with the values an order system sends (unformatted phone numbers for some, mixed-case emails, VINs
with correct check digits on three rows in four, delivery dates over the next ten months, three
markets: SE, US, ZA), about 115 bytes a row.

*Database.* A fresh SQLite file, or with ``--database-url postgresql+psycopg://user@host:port/db``
a fresh database ``bench_csv_…`` on that server, dropped at the end (``bench/benchdb.py``); the
reference data written through the service.

*Import.* The real command in its own process: ``python -m onboarding.ops.cli orders import FILE
--json`` (what an operator runs; with its default workers, one per CPU, for checking rows). Wall
time from start to exit; peak memory: the import process's ``ru_maxrss`` (``RUSAGE_CHILDREN``: the
largest single process of the command, i.e. the command itself) and the sum of the proportional set
sizes of the process and its workers (and their fork server), sampled every 0.1 s with psutil: the
figure the target is checked against. Targets: < 90 s and < 250 MB.

*Baseline* (same run, before the import, into a second fresh database of the same kind): a plain
``csv.reader`` pass over the same file and a Core ``INSERT`` of the same rows as they stand (no
validation, no events), executemany in chunks of 1,000 committed each. The ratio is import ÷
baseline wall time.

*Checks.* The command must exit 0, report every row created, and the database must hold exactly
``--rows`` orders and ``--rows`` "created" events; otherwise exit code 1. The targets are
measurements: missing one does not change the exit code.

``--quick`` uses 50,000 rows (CI); the printed figures are then also projected linearly to 460,000.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from benchdb import BenchDb, fresh_database
from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.db import transaction
from vehicles.csv_import import CHUNK_ROWS
from vehicles.models import Order, OrderEvent, Powertrain
from vehicles.schemas import DealerIn, VehicleModelIn
from vehicles.service import CSV_COLUMNS, upsert_dealer, upsert_model
from vehicles.vin import vin_check_character

FULL_ROWS = 460_000
QUICK_ROWS = 50_000
TARGET_SECONDS = 90.0
TARGET_MB = 250.0
REPO = Path(__file__).resolve().parent.parent

DEALERS = (("SE-01", "SE", "sv"), ("US-01", "US", "en"), ("ZA-01", "ZA", "en"))
FIRST_NAMES = ("Astrid", "Lars", "Emma", "Noah", "Thandi", "Olivia", "Sipho", "Ingrid", "José", "Zoë")
LAST_NAMES = ("Lindqvist", "Andersson", "Miller", "Nkosi", "Berg", "Johnson", "van Wyk", "Karlsson")
DOMAINS = ("example.com", "mail.example", "post.example.org", "example.net")


def seed_reference(factory: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    services = {"SE": ["navigation"], "US": ["navigation"], "ZA": ["navigation"]}
    with transaction(factory) as session:
        for code, country, language in DEALERS:
            dealer = DealerIn(
                name=f"Dealer {code}", country=country, email=f"{code}@dealer.example", language=language
            )
            upsert_dealer(session, code, dealer, now)
        for code, powertrain in (("E40", Powertrain.BEV), ("S90", Powertrain.ICE)):
            model = VehicleModelIn(
                name=f"Nordlicht {code}",
                model_year=2027,
                powertrain=powertrain,
                requires_security_pin=code == "E40",
                offers_data_pass=False,
                services=services,
            )
            upsert_model(session, code, model, now)


def _vin(i: int) -> str:
    base = f"YV1ZWA8U0L{i:07d}"
    return base[:8] + vin_check_character(base) + base[9:]


def _phone(country: str, i: int) -> str:
    if country == "SE":
        return (
            f"070-{i % 1000:03d} {i // 1000 % 100:02d} {i // 100_000 % 100:02d}"
            if i % 4 == 0
            else f"+4670{i:07d}"
        )
    if country == "US":
        return f"+1617{2_000_000 + i % 8_000_000:07d}"
    return f"+2782{i:07d}"


def write_orders(path: Path, rows: int, today: datetime) -> int:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for i in range(rows):
            dealer, country, language = DEALERS[i % len(DEALERS)]
            first, last = FIRST_NAMES[i % len(FIRST_NAMES)], LAST_NAMES[i // 7 % len(LAST_NAMES)]
            email = f"{first}.{last.replace(' ', '')}.{i}@{DOMAINS[i % len(DOMAINS)]}"
            writer.writerow(
                (
                    f"ORD-2026-{i:07d}",
                    dealer,
                    "E40" if i % 3 else "S90",
                    _vin(i) if i % 4 else "",
                    first,
                    last,
                    email if i % 5 else email.lower(),
                    _phone(country, i),
                    country,
                    language,
                    (today + timedelta(days=20 + i % 300)).date().isoformat(),
                )
            )
    return path.stat().st_size


# --- the baseline: csv.reader + Core INSERT -------------------------------------------------------


def baseline(path: Path, db: BenchDb) -> float:
    orders: Table = Order.__table__  # type: ignore[assignment]
    now = datetime.now(UTC)
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        header = next(reader)
        chunk: list[dict[str, object]] = []
        with db.engine.connect() as conn:
            for record in reader:
                values: dict[str, object] = dict(zip(header, record, strict=True))
                values["vin"] = values["vin"] or None
                values["planned_delivery_date"] = datetime.fromisoformat(
                    str(values["planned_delivery_date"])
                ).date()
                values.update(created_at=now, updated_at=now, production_status="ordered")
                chunk.append(values)
                if len(chunk) == CHUNK_ROWS:
                    conn.execute(insert(orders), chunk)
                    conn.commit()
                    chunk = []
            if chunk:
                conn.execute(insert(orders), chunk)
                conn.commit()
    return time.perf_counter() - started


# --- the import, measured -------------------------------------------------------------------------


class TreeSampler:
    """Samples a process and its descendants every 0.1 s: the peak of the sum of their proportional
    set sizes (PSS: a page shared by n processes counts 1/n in each, so the pages the workers share
    with their fork server count once), and each process's CPU time as last seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.descendants = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.process, *self.process.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_full_info().pss
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
            self.peak = max(self.peak, total)
            self.descendants = max(self.descendants, len(processes) - 1)
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measured:
    wall: float
    cpu: float  # the command's own CPU seconds (exact) + its descendants' (sampled)
    peak_mb: float  # PSS of the command and its descendants together
    largest_mb: float  # ru_maxrss: the largest single process
    descendants: int
    report: dict[str, Any] | None


def run_import(path: Path, db: BenchDb) -> Measured:
    env = {**os.environ, "ONBOARDING_DATABASE_URL": db.url, "ONBOARDING_SECRET_KEY": "bench-" + "x" * 42}
    command = [sys.executable, "-m", "onboarding.ops.cli", "orders", "import", str(path), "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(process.pid)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    others_cpu = sum(cpu for pid, cpu in sampler.cpu.items() if pid != process.pid)
    largest = after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else float("nan")
    if process.returncode != 0:
        print(f"ERROR: the import exited {process.returncode}:\n{stderr[-3000:]}", file=sys.stderr)
    report = json.loads(stdout) if stdout.strip().startswith("{") else None
    return Measured(wall, own_cpu + others_cpu, sampler.peak / 2**20, largest, sampler.descendants, report)


def stored(db: BenchDb) -> tuple[int, int]:
    with db.factory() as session:
        orders = session.scalar(select(func.count()).select_from(Order)) or 0
        events = (
            session.scalar(select(func.count()).select_from(OrderEvent).where(OrderEvent.kind == "created"))
            or 0
        )
    return orders, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"rows in the file (default {FULL_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows")
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite files)")
    args = parser.parse_args()
    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    kind = "postgresql" if args.database_url else "sqlite"
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_csv_") as tmp:
        workdir = Path(tmp)
        path = workdir / "orders.csv"
        started = time.perf_counter()
        size = write_orders(path, rows, datetime.now(UTC))
        print(f"file: {rows:,} rows, {size / 2**20:.1f} MB, written in {time.perf_counter() - started:.1f} s")
        with fresh_database(args.database_url, workdir, "csv_baseline") as db:
            seed_reference(db.factory)
            base = baseline(path, db)
        print(f"baseline ({kind}): csv.reader + Core INSERT of the rows as they stand: {base:.1f} s")
        with fresh_database(args.database_url, workdir, "csv_import") as db:
            seed_reference(db.factory)
            run = run_import(path, db)
            orders, events = stored(db)
        created = run.report.get("created") if run.report else None
        print(
            f"import ({kind}): {run.wall:.1f} s ({rows / run.wall:,.0f} rows/s), CPU {run.cpu:.0f} s "
            f"({run.cpu / rows * 1e6:.0f} µs a row, the command and its workers); peak memory "
            f"{run.peak_mb:.0f} MB (PSS of the command and its {run.descendants} child processes; "
            f"largest single process {run.largest_mb:.0f} MB)"
        )
        errors = run.report.get("errors", [])[:3] if run.report else "?"
        print(
            f"  report: {created} created, errors {errors}; "
            f"stored: {orders:,} orders, {events:,} 'created' events"
        )
        if created != rows or orders != rows or events != rows:
            print(f"ERROR: expected {rows:,} orders created and stored", file=sys.stderr)
            ok = False
        scale = FULL_ROWS / rows
        projected = (
            "" if rows == FULL_ROWS else f" (projected to {FULL_ROWS:,} rows: {run.wall * scale:.0f} s)"
        )
        time_met = "met" if run.wall * scale < TARGET_SECONDS else "NOT met"
        memory_met = "met" if run.peak_mb < TARGET_MB else "NOT met"
        print(
            f"csv import ({kind}, {rows:,} rows): {run.wall:.1f} s{projected}, "
            f"target < {TARGET_SECONDS:.0f} s: {time_met}; "
            f"peak memory {run.peak_mb:.0f} MB, target < {TARGET_MB:.0f} MB: {memory_met}; "
            f"ratio to baseline {run.wall / base:.1f}; load average {os.getloadavg()[0]:.1f}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
