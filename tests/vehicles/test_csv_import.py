"""CSV import: dry run, per-row report, all-or-nothing unless told to skip invalid rows; the CLI."""

from __future__ import annotations

import codecs
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy import text as text_sql

from onboarding.core.db import transaction
from onboarding.core.scope import Scope
from tests.conftest import NOW, Database
from vehicles import csv_import
from vehicles.csv_import import ImportProgress, ImportReport, import_orders_csv
from vehicles.models import Order, OrderEvent
from vehicles.service import CSV_COLUMNS
from vehicles.vin import vin_check_character

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


def _import(
    db: Database,
    text: str | bytes,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    chunk_rows: int = csv_import.CHUNK_ROWS,
) -> ImportReport:
    data = text.encode() if isinstance(text, str) else text
    with transaction(db.factory) as session:
        return import_orders_csv(
            session,
            io.BytesIO(data),
            now=NOW,
            actor="test",
            lead_days=14,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            chunk_rows=chunk_rows,
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
    command = [sys.executable, "-m", "onboarding.ops.cli", "orders", "import", str(path)]
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


# --- the streaming import: file formats, chunks, the upsert's rules in bulk ---------------------


def _row(i: int, *, vin: str = "", email: str | None = None, delivery: str = DELIVERY) -> str:
    return (
        f"N-{i},SE-01,E40,{vin},Astrid,Lindqvist,{email or f'astrid{i}@example.com'},"
        f"+4670{1000000 + i},SE,sv,{delivery}"
    )


def _vin(i: int) -> str:
    base = f"YV1ZWA8U0L{i:07d}"
    return base[:8] + vin_check_character(base) + base[9:]


def _cli(db: Database, path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONBOARDING_DATABASE_URL": db.url, "ONBOARDING_SECRET_KEY": "k" * 48}
    command = [sys.executable, "-m", "onboarding.ops.cli", "orders", "import", str(path), *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_semicolon_and_tab_files_are_read_by_their_separator(db: Database, reference: None) -> None:
    semicolon = _csv(_row(1), _row(2)).replace(",", ";")
    report = _import(db, semicolon)
    assert (report.errors, report.created) == ([], 2)
    tab = _csv(_row(3)).replace(",", "\t")
    assert _import(db, tab).created == 1
    assert _count(db) == 3


def test_an_unknown_separator_gets_a_hint(db: Database, reference: None) -> None:
    report = _import(db, _csv(_row(1)).replace(",", "|"))
    assert not report.imported and _count(db) == 0
    messages = [e.message for e in report.errors]
    assert messages[0].startswith("Missing columns")
    assert "The file seems to use '|' as separator; use ',', ';' or tab." in messages


def test_utf8_with_bom_and_utf16_files_are_imported(db: Database, reference: None) -> None:
    text = _csv(_row(1, email="björn@example.com"), _row(2))
    assert _import(db, codecs.BOM_UTF8 + text.encode()).created == 2
    for encoding, number in (("utf-16", 3), ("utf-16-be", 5)):
        utf16 = _csv(_row(number), _row(number + 1)).replace("Astrid", "Åsa")
        data = utf16.encode(encoding)
        if encoding == "utf-16-be":
            data = codecs.BOM_UTF16_BE + data
        report = _import(db, data)
        assert (report.errors, report.created) == ([], 2)
    with db.factory() as session:
        names = set(session.scalars(select(Order.buyer_first_name)))
        emails = set(session.scalars(select(Order.buyer_email)))
    assert names == {"Astrid", "Åsa"} and "björn@example.com" in emails


def test_a_latin1_file_is_refused_naming_the_row(db: Database, reference: None) -> None:
    text = _csv(_row(1), _row(2).replace("Astrid", "Renée"), _row(3))
    report = _import(db, text.encode("latin-1"))
    assert not report.imported and _count(db) == 0
    assert [(e.row, e.field, e.message) for e in report.errors] == [
        (3, "file", "Row 3 is not UTF-8 (byte 0xe9 at position 19); save the file as UTF-8.")
    ]


def test_a_binary_file_is_refused(db: Database, reference: None) -> None:
    xlsx_like = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(range(256)) * 4
    report = _import(db, xlsx_like)
    assert not report.imported and len(report.errors) == 1
    assert report.errors[0].message.startswith("This is not a CSV text file")
    endless = HEADER.encode() + b"\n" + b"x" * 200_000
    report = _import(db, endless)
    assert report.errors[0].message == "Row 2 is longer than 65536 bytes; not a CSV file of orders."


def test_the_cli_answers_bad_files_with_a_message_not_a_traceback(
    db: Database, reference: None, tmp_path: Path
) -> None:
    files = {
        "latin1.csv": (_csv(_row(1).replace("Astrid", "Renée")).encode("latin-1"), "Row 2 is not UTF-8"),
        "binary.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300), "not a CSV text file"),
        "pipes.csv": (_csv(_row(1)).replace(",", "|").encode(), "seems to use '|' as separator"),
    }
    for name, (data, message) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        plain = _cli(db, path)
        assert plain.returncode == 1, plain.stderr
        assert message in plain.stderr and "Traceback" not in plain.stderr + plain.stdout
        as_json = _cli(db, path, "--json")
        assert as_json.returncode == 1 and "Traceback" not in as_json.stderr
        assert any(message in e["message"] for e in json.loads(as_json.stdout)["errors"])
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes(_csv(_row(1), _row(2)).encode("utf-16"))
    done = _cli(db, utf16, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] == 2 and _count(db) == 2


def test_each_chunk_is_committed_by_the_caller_and_others_write_in_between(
    db: Database, reference: None
) -> None:
    text = _csv(*(_row(i, vin=_vin(i)) for i in range(7)))
    # Another writer whose wait for a lock is short: it fails if the import holds SQLite's lock.
    other = create_engine(db.url, **({"connect_args": {"timeout": 0.5}} if db.kind == "sqlite" else {}))
    seen: list[tuple[str, int]] = []
    with transaction(db.factory) as session:

        def after_chunk(step: ImportProgress) -> None:
            if step.may_commit:
                session.commit()
            seen.append((step.stage, _count(db)))
            with other.begin() as conn:
                conn.execute(
                    text_sql("UPDATE dealers SET name = :n WHERE code = 'SE-01'"), {"n": f"S{len(seen)}"}
                )

        report = import_orders_csv(
            session,
            io.BytesIO(text.encode()),
            now=NOW,
            actor="test",
            lead_days=14,
            chunk_rows=3,
            after_chunk=after_chunk,
        )
    other.dispose()
    assert report.created == 7
    if db.kind == "sqlite":
        # Reference data read, three chunks checked, then three chunks stored, each visible at once.
        assert seen == [("checking", 0)] * 4 + [("importing", 3), ("importing", 6), ("importing", 7)]
    else:
        # Each chunk stored as soon as it is checked, in one transaction that blocks no other writer.
        assert seen == [("checking", 0)] * 4 + [("importing", 7)]


def test_all_or_nothing_holds_across_chunks(db: Database, reference: None) -> None:
    rows = [_row(i) for i in range(10)] + [BAD]
    commits: list[str] = []
    with transaction(db.factory) as session:

        def after_chunk(step: ImportProgress) -> None:
            if step.may_commit:
                session.commit()
                commits.append(step.stage)

        report = import_orders_csv(
            session,
            io.BytesIO(_csv(*rows).encode()),
            now=NOW,
            actor="t",
            lead_days=14,
            chunk_rows=2,
            after_chunk=after_chunk,
        )
    assert not report.imported and {e.row for e in report.errors} == {12}
    assert _count(db) == 0 and set(commits) <= {"checking"}


@pytest.mark.parametrize("chunk_rows", [1000, 1])
def test_rows_repeating_a_vin_or_taking_a_stored_one_are_refused(
    db: Database, reference: None, chunk_rows: int
) -> None:
    """The same answers whether the rows share a chunk or not (on PostgreSQL a chunk is stored
    before the next is checked: the VIN of an earlier row is then in the table, and still reported
    as a repeat)."""
    assert _import(db, _csv(_row(1, vin=_vin(1)))).created == 1
    report = _import(
        db,
        _csv(_row(2, vin=_vin(2)), _row(3, vin=_vin(2)), _row(4, vin=_vin(1)), _row(1, vin=_vin(1))),
        chunk_rows=chunk_rows,
    )
    assert not report.imported
    assert [(e.row, e.field, e.message) for e in report.errors] == [
        (3, "vin", "Repeats the VIN of row 2."),
        (4, "vin", "This VIN belongs to order N-1 already."),
    ]


def test_bulk_upsert_keeps_the_upserts_rules(db: Database, reference: None) -> None:
    """Due rule, events naming the changed fields, re-invitation after an email change, onboarding
    recognised by VIN: the same outcomes as ``upsert_order`` gives one order at a time."""
    soon = (NOW + timedelta(days=10)).date().isoformat()
    assert _import(db, _csv(_row(1), _row(2), _row(3), _row(4, vin=_vin(4)))).created == 4
    with transaction(db.factory) as session:
        orders = {o.order_number: o for o in session.scalars(select(Order))}
        orders["N-1"].invited_at = NOW  # invited: a changed email makes a new invitation due
        orders["N-1"].invite_after = None
        orders["N-2"].invited_at = NOW  # invited: a changed date alone does not
        orders["N-2"].invite_after = None
        orders["N-4"].onboarded_at = NOW  # onboarded, then cancelled: its VIN is free again
        orders["N-4"].production_status = "cancelled"
        orders["N-4"].invite_after = None
    report = _import(
        db,
        _csv(
            _row(1, email="new@example.com"),
            _row(2, delivery=soon),
            _row(3),
            _row(5, vin=_vin(4), email="astrid4@example.com"),
            _row(6, delivery=soon),
        ),
    )
    assert (report.created, report.updated, report.errors) == (2, 3, [])
    planned = (NOW + timedelta(days=30)).date()
    with db.factory() as session:
        orders = {o.order_number: o for o in session.scalars(select(Order))}
        events = {
            (number, kind, detail)
            for number, kind, detail in session.execute(
                select(Order.order_number, OrderEvent.kind, OrderEvent.detail).join(
                    Order, Order.id == OrderEvent.order_id
                )
            )
        }
    assert orders["N-1"].invited_at is None and orders["N-1"].invite_after == planned - timedelta(days=14)
    assert orders["N-1"].buyer_email == "new@example.com"
    assert orders["N-2"].invited_at == NOW and orders["N-2"].invite_after is None
    assert orders["N-3"].invite_after == planned - timedelta(days=14)
    assert orders["N-5"].onboarded_at == NOW and orders["N-5"].invite_after is None
    assert orders["N-6"].invite_after == (NOW + timedelta(days=10)).date() - timedelta(days=14)
    assert {e for e in events if e[1] != "created"} == {
        ("N-1", "updated", "buyer_email"),
        ("N-2", "updated", "planned_delivery_date"),
    }
    assert {e[0] for e in events if e[1] == "created"} == {"N-1", "N-2", "N-3", "N-4", "N-5", "N-6"}
    for order in orders.values():
        assert order.updated_at == NOW


def test_an_order_created_by_someone_else_meanwhile_is_updated_not_a_crash(
    db: Database, reference: None
) -> None:
    if db.kind != "sqlite":
        pytest.skip("PostgreSQL stores each chunk as it checks it: see test_a_concurrent_writer_…")
    rows = [_row(i) for i in range(4)]
    with transaction(db.factory) as session:

        def after_chunk(step: ImportProgress) -> None:
            session.commit()
            if step.stage == "checking" and step.done == step.total:
                # Checked, not yet stored: the order system creates N-2 through the API meanwhile.
                _import(db, _csv(_row(2)))

        report = import_orders_csv(
            session,
            io.BytesIO(_csv(*rows).encode()),
            now=NOW,
            actor="t",
            lead_days=14,
            chunk_rows=10,
            after_chunk=after_chunk,
        )
    assert (report.created, report.updated, report.errors) == (3, 1, [])
    assert _count(db) == 4


def test_scope_limits_the_markets(db: Database, reference: None) -> None:
    with transaction(db.factory) as session:
        report = import_orders_csv(
            session,
            io.BytesIO(_csv(_row(1)).encode()),
            now=NOW,
            actor="t",
            lead_days=14,
            scope=Scope(frozenset({"US"})),
        )
    assert [(e.field, e.message) for e in report.errors] == [
        ("country", "Outside the markets you may import for.")
    ]
    assert _count(db) == 0


def test_unsafe_characters_are_refused_by_field(db: Database, reference: None) -> None:
    report = _import(
        db, _csv(_row(1).replace("Astrid", "Ast\u202erid"), _row(2).replace("Lindqvist", "L\x07q"))
    )
    assert {(e.row, e.field) for e in report.errors} == {(2, "buyer_first_name"), (3, "buyer_last_name")}
    assert _count(db) == 0


def test_worker_processes_give_the_same_report(
    db: Database, reference: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_row(i, vin=_vin(i) if i % 2 else "") for i in range(40)]
    rows[17] = BAD
    rows[31] = _row(3)
    text = _csv(*rows).encode()
    single = _import(db, text, dry_run=True)
    monkeypatch.setattr(csv_import, "PARALLEL_FROM_BYTES", 0)
    with transaction(db.factory) as session:
        parallel = import_orders_csv(
            session, io.BytesIO(text), now=NOW, actor="t", lead_days=14, dry_run=True, chunk_rows=4, workers=2
        )
    assert parallel.errors == single.errors and len(parallel.errors) == 4
    assert (parallel.rows, parallel.valid, parallel.hints) == (single.rows, single.valid, single.hints)


def test_a_concurrent_writer_makes_the_import_start_again_not_fail(
    db: Database, reference: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stores chunks while checking; another writer creating one of the file's orders
    between the check and the store makes the import roll back and run in two passes."""
    if db.kind != "postgresql":
        pytest.skip("SQLite checks the whole file before it stores a row")
    other = create_engine(db.url)
    real_store_chunk = csv_import._store_chunk
    calls: list[int] = []

    def store_chunk_after_another_writer(session, chunk, *args):  # type: ignore[no-untyped-def]
        calls.append(len(chunk))
        if len(calls) == 2:
            with other.begin() as conn:
                conn.execute(
                    Order.__table__.insert(),  # type: ignore[attr-defined]
                    {
                        "order_number": "N-3",
                        "dealer_code": "SE-01",
                        "model_code": "E40",
                        "buyer_first_name": "Other",
                        "buyer_last_name": "Writer",
                        "buyer_email": "other@example.com",
                        "buyer_phone": "+46701234567",
                        "country": "SE",
                        "language": "sv",
                        "planned_delivery_date": (NOW + timedelta(days=60)).date(),
                        "production_status": "ordered",
                        "created_at": NOW,
                        "updated_at": NOW,
                    },
                )
        return real_store_chunk(session, chunk, *args)

    monkeypatch.setattr(csv_import, "_store_chunk", store_chunk_after_another_writer)
    report = _import(db, _csv(*(_row(i) for i in range(1, 6))), chunk_rows=2)
    other.dispose()
    assert report.imported and report.errors == []
    assert (report.created, report.updated) == (4, 1)
    assert _count(db) == 5
    with db.factory() as session:
        assert session.scalar(select(Order.buyer_first_name).where(Order.order_number == "N-3")) != "Other"
