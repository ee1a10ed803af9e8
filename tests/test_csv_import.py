"""CSV import: dry run, per-row report, all-or-nothing unless told to skip invalid rows; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from onboarding.db import transaction
from tests.conftest import NOW, Database
from vehicles.models import Order
from vehicles.service import CSV_COLUMNS, ImportReport, import_orders_csv

DELIVERY = (NOW + timedelta(days=30)).date().isoformat()
GOOD = f"O-1,SE-01,E40,,Astrid,Lindqvist,astrid@example.com,+46701234567,SE,sv,{DELIVERY}"
GOOD2 = f"O-2,SE-01,S90,YV1ZWA8UDL1234567,Erik,Berg,erik@example.com,070-765 43 21,SE,en,{DELIVERY}"
BAD = f"O-3,SE-01,E40,,Lena,Vogel,lena@,+46701234567,XX,fr,{DELIVERY}"
HEADER = ",".join(CSV_COLUMNS)


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def _count(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count()).select_from(Order)) or 0


def _import(db: Database, text: str, *, dry_run: bool = False, skip_invalid: bool = False) -> ImportReport:
    with transaction(db.factory) as session:
        return import_orders_csv(
            session, text, now=NOW, actor="test", lead_days=14, dry_run=dry_run, skip_invalid=skip_invalid
        )


def test_dry_run_validates_and_stores_nothing(db: Database, reference: None) -> None:
    report = _import(db, _csv(GOOD, GOOD2), dry_run=True)
    assert (report.rows, report.valid, report.errors, report.imported) == (2, 2, [], False)
    assert _count(db) == 0


def test_a_file_with_errors_imports_nothing_and_reports_each_field(db: Database, reference: None) -> None:
    report = _import(db, _csv(GOOD, BAD, GOOD2, GOOD))
    assert not report.imported and _count(db) == 0
    by_row: dict[int, set[str]] = {}
    for error in report.errors:
        by_row.setdefault(error.row, set()).add(error.field)
    assert by_row == {3: {"buyer_email", "country", "language"}, 5: {"order_number"}}


def test_skip_invalid_imports_the_good_rows(db: Database, reference: None) -> None:
    report = _import(db, _csv(GOOD, BAD, GOOD2), skip_invalid=True)
    assert report.imported and (report.created, report.skipped) == (2, 1)
    assert _count(db) == 2
    again = _import(db, _csv(GOOD, GOOD2))
    assert (again.created, again.updated) == (0, 2)


def test_header_must_match(db: Database, reference: None) -> None:
    report = _import(db, "order_number,dealer\nO-1,SE-01\n")
    assert report.errors and report.errors[0].row == 1 and "Missing columns" in report.errors[0].message


def test_cli_import_with_dry_run_and_report(db: Database, reference: None, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(_csv(GOOD, BAD))
    env = {**os.environ, "ONBOARDING_DATABASE_URL": db.url, "ONBOARDING_SECRET_KEY": "k" * 48}
    command = [sys.executable, "-m", "onboarding.cli", "orders", "import", str(path)]
    failed = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert {(e["row"], e["field"]) for e in report["errors"]} == {
        (3, "buyer_email"),
        (3, "country"),
        (3, "language"),
    }
    assert _count(db) == 0
    path.write_text(_csv(GOOD, GOOD2))
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, check=False)
    assert dry.returncode == 0 and "dry run" in dry.stdout and _count(db) == 0
    real = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert real.returncode == 0 and "2 created" in real.stdout and _count(db) == 2
