"""Streaming CSV import of orders: a checking pass, then an import pass, each in chunks.

The file is read once, line by line (UTF-8 with or without BOM, or UTF-16 by its BOM; the separator
found from the header line), so memory does not grow with the file: the checking pass validates each
row and writes the valid ones, already cleaned, to a temporary spool file; only when the file has no
bad row (or the caller asked to skip them) does the import pass read the spool back and store it,
a chunk at a time: one query for the chunk's existing orders, Core INSERTs for the new ones and
their "created" events, one executemany UPDATE for the others, with what ``upsert_order`` keeps (the
due rule, "updated" events naming the changed fields, a new invitation after an email change,
onboarding recognised by VIN, market scope). Row validation is CPU-bound (email and phone parsing),
so a large file is checked by worker processes.

Nothing here commits. After every chunk of either pass the caller's ``after_chunk`` runs; a job that
wants short transactions (the CLI: SQLite's single write lock is then held only briefly, so the API
is not blocked) commits there. The checking pass only reads (a query or two per chunk, right before
``after_chunk``); the import pass writes a chunk, then calls it.
"""

from __future__ import annotations

import codecs
import csv
import io
import multiprocessing
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import IO, Any, BinaryIO, Literal, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Insert,
    String,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from onboarding.core.db import UTCDateTime
from onboarding.core.errors import FieldError, NotFound, ValidationFailed
from onboarding.core.scope import ALL_MARKETS, Scope
from vehicles.models import Order, OrderEvent, ProductionStatus
from vehicles.service import (
    CSV_COLUMNS,
    CleanOrder,
    ReferenceCache,
    parse_order,
    refresh_invitation_due,
    upsert_order,
    validate_order,
    vin_taken,
)
from vehicles.vin import check_vin

CHUNK_ROWS = 1000
# A longer line is not an order (eleven short fields); bounding it bounds the memory a bad file takes.
MAX_LINE_BYTES = 64 * 1024
# Errors and hints kept for the report; a file with more only counts the rest.
MAX_LISTED = 1000
# Smaller files are checked in this process: starting workers would take longer than the check.
PARALLEL_FROM_BYTES = 2 * 1024 * 1024
_SEPARATORS = ",;\t"
_TRACKED = CSV_COLUMNS[1:]  # as in upsert_order: the fields an update may change


@dataclass(frozen=True)
class RowError:
    row: int
    field: str
    message: str


@dataclass
class ImportReport:
    rows: int = 0
    valid: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    dry_run: bool = False
    imported: bool = False
    errors: list[RowError] = field(default_factory=list)
    hints: list[RowError] = field(default_factory=list)
    errors_not_listed: int = 0
    hints_not_listed: int = 0

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.errors_not_listed

    def add_error(self, row: int, name: str, message: str) -> None:
        if len(self.errors) < MAX_LISTED:
            self.errors.append(RowError(row, name, message))
        else:
            self.errors_not_listed += 1

    def add_hint(self, row: int, name: str, message: str) -> None:
        if len(self.hints) < MAX_LISTED:
            self.hints.append(RowError(row, name, message))
        else:
            self.hints_not_listed += 1


@dataclass(frozen=True)
class ImportProgress:
    """Where an import is: ``checking`` counts bytes of the file read, ``importing`` rows stored.
    ``may_commit`` is False while rows stored so far may still have to be rolled back."""

    stage: Literal["checking", "importing"]
    done: int
    total: int
    may_commit: bool = True


AfterChunk = Callable[[ImportProgress], None]


def _nothing(_progress: ImportProgress) -> None:
    pass


# --- reading the file ------------------------------------------------------------------------------


class FileProblem(Exception):
    """The file cannot be read as CSV text (encoding, binary data, an endless line). With
    ``about_row`` the message says what is wrong with the row being read, which the reader names."""

    def __init__(self, message: str, *, about_row: bool = False) -> None:
        super().__init__(message)
        self.about_row = about_row


class _Lines:
    """The file's lines as text, decoded one at a time, counting lines and bytes read."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.line = 0
        self.bytes_read = 0
        self._text: io.TextIOWrapper | None = None
        start = source.read(4)
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not start.startswith(
            codecs.BOM_UTF32_LE
        ):
            source.seek(0)
            # The codec reads the BOM and the byte order from it.
            self._text = io.TextIOWrapper(source, encoding="utf-16", newline="")
            return
        body_start = 3 if start.startswith(codecs.BOM_UTF8) else 0
        source.seek(body_start)
        sample = source.read(8192)
        source.seek(body_start)
        self.bytes_read = body_start
        if b"\x00" in sample:
            raise FileProblem(
                "This is not a CSV text file (it holds binary data, or is UTF-16 without a byte-order "
                "mark); export the orders as CSV, UTF-8."
            )

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._text is not None:
            return self._next_utf16(self._text)
        raw = self.source.readline(MAX_LINE_BYTES)
        if not raw:
            raise StopIteration
        self.line += 1
        self.bytes_read += len(raw)
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise FileProblem(
                f"is longer than {MAX_LINE_BYTES} bytes; not a CSV file of orders.", about_row=True
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileProblem(
                f"is not UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start + 1}); "
                "save the file as UTF-8.",
                about_row=True,
            ) from None

    def _next_utf16(self, text: io.TextIOWrapper) -> str:
        try:
            line = text.readline(MAX_LINE_BYTES)
        except UnicodeDecodeError:
            self._release(text)
            raise FileProblem("is not valid UTF-16; save the file as UTF-8.", about_row=True) from None
        if not line:
            self._release(text)
            raise StopIteration
        self.line += 1
        self.bytes_read = self.source.tell()
        if len(line) == MAX_LINE_BYTES and not line.endswith("\n"):
            raise FileProblem(
                f"is longer than {MAX_LINE_BYTES} characters; not a CSV file of orders.", about_row=True
            )
        return line

    def _release(self, text: io.TextIOWrapper) -> None:
        text.detach()  # the caller owns the file: the wrapper must not close it
        self._text = None


def _separator(header_line: str) -> str:
    try:
        return csv.Sniffer().sniff(header_line, delimiters=_SEPARATORS).delimiter
    except csv.Error:
        return ","


def _separator_hint(header_line: str, used: str) -> str | None:
    """For a header without our columns: the separator it seems to use instead, if any."""
    for candidate in ",;\t|":
        if candidate != used and sum(c in header_line.split(candidate) for c in CSV_COLUMNS) >= 2:
            shown = "tab" if candidate == "\t" else f"'{candidate}'"
            return f"The file seems to use {shown} as separator; use ',', ';' or tab."
    return None


def _total_bytes(source: BinaryIO) -> int:
    position = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(position)
    return size


# --- checking rows (in this process or in workers) -----------------------------------------------

RawRow = tuple[int, list[str]]  # the row number and the record as read
CheckedRow = tuple[int, str, CleanOrder | None, list[FieldError]]

_CsvWriter = Any  # csv.writer's type is private to typeshed

_worker_header: list[str] = []
_worker_reference: ReferenceCache | None = None
_worker_today: date | None = None


def _start_worker(header: list[str], reference: ReferenceCache, today: date) -> None:
    global _worker_header, _worker_reference, _worker_today
    _worker_header, _worker_reference, _worker_today = header, reference, today


def _check_rows_in_worker(rows: list[RawRow]) -> list[CheckedRow]:
    assert _worker_reference is not None and _worker_today is not None
    return _check_rows(rows, _worker_header, _worker_reference, _worker_today)


def _check_rows(
    rows: list[RawRow], header: list[str], reference: ReferenceCache, today: date
) -> list[CheckedRow]:
    """Every rule that needs no database beyond the reference data, row by row. (Here, not in the
    reading process, even the record's fields are named: that process has enough to do.)"""
    # validate_order reads the database only for codes missing from ``reference`` and for the VIN
    # clash, which the caller checks for a whole chunk at once; so it gets no VIN and no database.
    no_database = Session()
    out: list[CheckedRow] = []
    for row, record in rows:
        values = dict.fromkeys(header, "")
        values.update(zip(header, (v.strip() for v in record), strict=False))
        number = values.pop("order_number")
        # Parsing errors (a bad date) and the field rules together: every bad field of the row at once.
        parsed = parse_order(
            {k: (v or None) if k == "vin" else v for k, v in values.items()}, today=today, whole="row"
        )
        data = parsed.data
        if data is None:
            out.append((row, number, None, parsed.errors))
            continue
        errors: list[FieldError] = []
        clean: CleanOrder | None = None
        try:
            clean = validate_order(
                no_database,
                number,
                data.model_copy(update={"vin": None}),
                today=today,
                reference=reference,
                parsing_errors=parsed.errors,
            )
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        if data.vin and data.vin.strip():
            # The VIN part of validate_order, but for the clash.
            result = check_vin(data.vin, clean.country if clean else data.country.strip().upper())
            errors.extend(FieldError("vin", p.message, p.code) for p in result.problems)
            if clean is not None:
                clean.vin = result.vin
                clean.hints.extend(f"vin: {h}" for h in result.hints)
        out.append((row, number, None if errors else clean, errors))
    return out


class _Checker:
    """Checks chunks of rows in order, in worker processes when the file is large."""

    def __init__(self, header: list[str], reference: ReferenceCache, today: date, workers: int) -> None:
        """``workers`` processes check the rows; with 0, this process does."""
        self.header, self.reference, self.today = header, reference, today
        self.pool: ProcessPoolExecutor | None = None
        self.pending: deque[Future[list[CheckedRow]]] = deque()
        self.ready: deque[list[CheckedRow]] = deque()
        self.workers = workers
        if workers > 0:
            # Fresh interpreters, not forks of this process (it holds database connections and
            # threads). Not a fork server either: its preloaded pages were hardly shared (reference
            # counts write to them), so it only added a process's worth of memory.
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(header, reference, today),
            )

    def submit(self, rows: list[RawRow]) -> None:
        if self.pool is None:
            self.ready.append(_check_rows(rows, self.header, self.reference, self.today))
        else:
            self.pending.append(self.pool.submit(_check_rows_in_worker, rows))

    def results(self, *, wait_all: bool) -> Iterator[list[CheckedRow]]:
        """Checked chunks in file order; without ``wait_all`` only while enough are in flight."""
        while self.ready:
            yield self.ready.popleft()
        while self.pending and (wait_all or len(self.pending) > 2 * self.workers):
            yield self.pending.popleft().result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# --- the import ----------------------------------------------------------------------------------


def import_orders_csv(
    session: Session,
    source: BinaryIO,
    *,
    now: datetime,
    actor: str,
    lead_days: int,
    dry_run: bool = False,
    skip_invalid: bool = False,
    scope: Scope = ALL_MARKETS,
    chunk_rows: int = CHUNK_ROWS,
    workers: int = 1,
    after_chunk: AfterChunk = _nothing,
) -> ImportReport:
    """Check every row first; import nothing from a file with errors unless ``skip_invalid``.

    ``source`` is the file opened in binary mode (seekable). ``after_chunk`` runs after each chunk;
    the caller may commit there when its ``may_commit`` says so. ``workers`` > 1 checks a large
    file's rows in that many processes (on PostgreSQL one fewer: this process stores meanwhile).

    On SQLite the rows are checked in one pass and stored in a second (each chunk may be committed:
    a long write transaction would lock out every other writer). On PostgreSQL, where a long
    transaction blocks nobody, each chunk is stored as soon as it is checked, inside one savepoint
    that is rolled back if a bad row turns up later: the checking workers and the storing process
    then work at the same time."""
    if not dry_run and session.get_bind().dialect.name == "postgresql":
        # This process stores while the workers check: it needs a core of its own.
        report = _import_while_checking(
            session, source, now, actor, lead_days, skip_invalid, scope, chunk_rows, workers - 1, after_chunk
        )
        if report is not None:
            return report
        source.seek(0)  # another writer raced this import: the two passes settle that row by row
    report = ImportReport(dry_run=dry_run)
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
        state = _CheckState(session, report, scope, spool=None if dry_run else csv.writer(spool))
        if not _check_file(
            session, source, state, now, chunk_rows, workers if workers > 1 else 0, after_chunk
        ):
            return report
        report.skipped = report.rows - report.valid
        if dry_run or (report.error_count and not skip_invalid):
            return report
        spool.seek(0)
        _import_spool(session, spool, report, now, actor, lead_days, scope, chunk_rows, after_chunk)
    report.imported = True
    return report


class _StoreAsChecked:
    """Stores each chunk of valid rows while the file is still being checked (PostgreSQL)."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        now: datetime,
        actor: str,
        lead_days: int,
        scope: Scope,
        skip_invalid: bool,
    ) -> None:
        self.session, self.report, self.now, self.actor = session, report, now, actor
        self.lead_days, self.scope, self.skip_invalid = lead_days, scope, skip_invalid
        self.raced = False

    @property
    def storing(self) -> bool:
        return not self.raced and (self.skip_invalid or not self.report.error_count)

    def __call__(self, chunk: list[tuple[int, CleanOrder]]) -> None:
        if not chunk or not self.storing:
            return
        try:
            created, updated = _store_chunk(
                self.session, chunk, self.now, self.actor, self.lead_days, self.scope
            )
        except IntegrityError:
            # The savepoint is rolled back and the import starts again in two passes.
            self.raced = True
            return
        self.report.created += created
        self.report.updated += updated


def _import_while_checking(
    session: Session,
    source: BinaryIO,
    now: datetime,
    actor: str,
    lead_days: int,
    skip_invalid: bool,
    scope: Scope,
    chunk_rows: int,
    workers: int,
    after_chunk: AfterChunk,
) -> ImportReport | None:
    """The PostgreSQL import; None when a concurrent writer made it roll back (nothing stored)."""
    report = ImportReport()
    store = _StoreAsChecked(session, report, now, actor, lead_days, scope, skip_invalid)

    def progress(step: ImportProgress) -> None:
        after_chunk(replace(step, may_commit=False))

    stored = session.begin_nested()
    state = _CheckState(session, report, scope, store=store)
    readable = _check_file(session, source, state, now, chunk_rows, workers, progress)
    if not readable or not store.storing:
        stored.rollback()
        report.created = report.updated = 0
        if store.raced:
            return None
    else:
        stored.commit()
        report.imported = True
        after_chunk(ImportProgress("importing", report.valid, report.valid))
    report.skipped = report.rows - report.valid
    return report


def _check_file(
    session: Session,
    source: BinaryIO,
    state: _CheckState,
    now: datetime,
    chunk_rows: int,
    workers: int,
    after_chunk: AfterChunk,
) -> bool:
    """The checking pass, with ``workers`` checking processes for a large file (0: none); False when
    the file cannot be read as orders at all."""
    report = state.report
    total = _total_bytes(source)
    row = 0  # the last row read; the header is row 1
    lines: _Lines | None = None
    try:
        lines = _Lines(source)
        header_line = next(lines, "")
        separator = _separator(header_line)
        header = [
            h.strip().lstrip("\ufeff") for h in next(csv.reader([header_line], delimiter=separator), [])
        ]
        missing = [c for c in CSV_COLUMNS if c not in header]
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if missing or unknown:
            if missing:
                report.add_error(1, "header", f"Missing columns: {', '.join(missing)}.")
            if unknown:
                report.add_error(1, "header", f"Unknown columns: {', '.join(unknown)}.")
            hint = _separator_hint(header_line, separator)
            if hint:
                report.add_error(1, "header", hint)
            return False
        row = 1
        reference = ReferenceCache.load(session)
        # The caller may end the transaction now: the checks ahead take a while before the next read.
        after_chunk(ImportProgress("checking", lines.bytes_read, total))
        checker = _Checker(header, reference, now.date(), workers if total >= PARALLEL_FROM_BYTES else 0)
        try:
            chunk: list[RawRow] = []
            for record in csv.reader(lines, delimiter=separator):
                if not record:
                    continue  # a blank line
                row += 1
                report.rows += 1
                if len(record) > len(header):
                    report.add_error(row, "row", "More values than columns.")
                    continue
                chunk.append((row, record))
                if len(chunk) >= chunk_rows:
                    checker.submit(chunk)
                    chunk = []
                    for checked in checker.results(wait_all=False):
                        state.settle(checked)
                        after_chunk(ImportProgress("checking", lines.bytes_read, total))
            if chunk:
                checker.submit(chunk)
            for checked in checker.results(wait_all=True):
                state.settle(checked)
                after_chunk(ImportProgress("checking", lines.bytes_read, total))
        finally:
            checker.close()
            state.first_rows.close()
    except FileProblem as exc:
        # Raised while the csv reader read the lines of the row after the last one it gave.
        message = str(exc)
        if exc.about_row and lines is not None:
            line = f" (line {lines.line})" if lines.line != row + 1 else ""
            message = f"Row {row + 1}{line} {message}"
        report.add_error(row + 1, "file", message)
        return False
    except csv.Error as exc:
        report.add_error(row + 1, "file", f"Row {row + 1} is not valid CSV: {exc}.")
        return False
    return True


class _FirstRows:
    """The row where each order number and VIN first appeared, kept in a private temporary SQLite file
    (deleted on close) rather than in memory: half a million orders would otherwise mean two
    dictionaries of half a million strings."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # "": a temporary database on disk, with a small page cache
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("PRAGMA cache_size = -8192")  # 8 MiB: the upper levels of the index stay in memory
        self.db.execute("CREATE TABLE first_row (kind TEXT, key TEXT, row INTEGER, PRIMARY KEY (kind, key))")

    def claim(self, keys: list[tuple[str, str, int]]) -> dict[str, int]:
        """Records (kind, key, row) for keys not seen before; returns the first row of each key."""
        first: dict[str, int] = {}
        if not keys:
            return first
        kind = keys[0][0]
        wanted = list({key for _kind, key, _row in keys})
        for start in range(0, len(wanted), 900):  # within SQLite's oldest limit of 999 parameters
            part = wanted[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT key, row FROM first_row WHERE kind = ? AND key IN ({marks})"
            first.update(self.db.execute(query, [kind, *part]))
        new = []
        for _kind, key, row in keys:
            if key not in first:
                first[key] = row
                new.append((kind, key, row))
        self.db.executemany("INSERT INTO first_row VALUES (?, ?, ?)", new)
        return first

    def known(self, kind: str, keys: list[str]) -> set[str]:
        """Those of ``keys`` recorded under ``kind``."""
        found: set[str] = set()
        for start in range(0, len(keys), 900):
            part = keys[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT key FROM first_row WHERE kind = ? AND key IN ({marks})"
            found.update(key for (key,) in self.db.execute(query, [kind, *part]))
        return found

    def close(self) -> None:
        self.db.close()


class _CheckState:
    """What the checking pass carries from chunk to chunk: the order numbers and VINs seen so far,
    for rows that repeat them (two counters' worth of memory per row, not the row)."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        scope: Scope,
        *,
        spool: _CsvWriter | None = None,
        store: _StoreAsChecked | None = None,
    ) -> None:
        self.session, self.report, self.scope = session, report, scope
        self.spool, self.store = spool, store
        self.first_rows = _FirstRows()

    def settle(self, checked: list[CheckedRow]) -> None:
        """Adds the checks that need the rows before (repeats) or the database (one query per chunk)."""
        candidates: list[tuple[int, CleanOrder]] = []
        errors_of: dict[int, list[FieldError]] = {}
        first_of_number = self.first_rows.claim([("number", number, row) for row, number, _c, _e in checked])
        for row, number, clean, errors in checked:
            first = first_of_number[number]
            if first != row:
                errors.insert(0, FieldError("order_number", f"Repeats row {first}.", "duplicate"))
            errors_of[row] = errors
            if clean is not None and not errors:
                candidates.append((row, clean))
        if candidates:
            self._check_database(candidates, errors_of)
        # A VIN counts as taken by the first row that would store it.
        first_of_vin = self.first_rows.claim(
            [("vin", clean.vin, row) for row, clean in candidates if clean.vin and not errors_of[row]]
        )
        valid: list[tuple[int, CleanOrder]] = []
        for row, _number, clean, _errors in checked:
            errors = errors_of[row]
            if clean is not None and clean.vin and not errors and first_of_vin[clean.vin] != row:
                errors.append(
                    FieldError("vin", f"Repeats the VIN of row {first_of_vin[clean.vin]}.", "duplicate")
                )
            for error in errors:
                self.report.add_error(row, error.field, error.text)
            if clean is None or errors:
                continue
            self.report.valid += 1
            for hint in clean.hints:
                self.report.add_hint(row, hint.partition(": ")[0], hint)
            if self.spool is not None:
                self.spool.writerow(_spool_row(row, clean))
            valid.append((row, clean))
        if self.store is not None and self.store.storing:
            self.first_rows.claim([("stored", clean.order_number, row) for row, clean in valid])
            self.store(valid)

    def _check_database(
        self, candidates: list[tuple[int, CleanOrder]], errors_of: dict[int, list[FieldError]]
    ) -> None:
        vins = {clean.vin for _row, clean in candidates if clean.vin}
        owners: dict[str, list[str]] = {}
        if vins:
            for vin, owner in self.session.execute(
                select(Order.vin, Order.order_number).where(
                    _among(self.session, Order.vin, vins),
                    Order.production_status != ProductionStatus.CANCELLED,
                )
            ):
                owners.setdefault(vin or "", []).append(owner)
            if self.store is not None:
                # Orders this import stored already: a later row with their VIN repeats a row.
                ours = self.first_rows.known("stored", [o for found in owners.values() for o in found])
                owners = {vin: [o for o in found if o not in ours] for vin, found in owners.items()}
        stored: dict[str, tuple[str, str]] = {}
        if self.scope.countries is not None or self.scope.dealers is not None:
            numbers = [clean.order_number for _row, clean in candidates]
            query = select(Order.order_number, Order.country, Order.dealer_code).where(
                _among(self.session, Order.order_number, numbers)
            )
            stored = {number: (country, dealer) for number, country, dealer in self.session.execute(query)}
        for row, clean in candidates:
            if not self.scope.allows(clean.country):
                errors_of[row].append(
                    FieldError("country", "Outside the markets you may import for.", "forbidden")
                )
            elif not self.scope.allows_dealer(clean.dealer_code):
                errors_of[row].append(
                    FieldError("dealer_code", "Outside the dealers you may import for.", "forbidden")
                )
            elif clean.order_number in stored and not (
                self.scope.allows(stored[clean.order_number][0])
                and self.scope.allows_dealer(stored[clean.order_number][1])
            ):
                errors_of[row].append(
                    FieldError(
                        "order_number", "No such order in the markets you may import for.", "forbidden"
                    )
                )
            clash = next((o for o in owners.get(clean.vin or "", []) if o != clean.order_number), None)
            if clash:
                errors_of[row].append(vin_taken(clash))


def _spool_row(row: int, clean: CleanOrder) -> list[str | int]:
    return [
        row,
        clean.order_number,
        clean.dealer_code,
        clean.model_code,
        clean.vin or "",
        clean.buyer_first_name,
        clean.buyer_last_name,
        clean.buyer_email,
        clean.buyer_phone,
        clean.country,
        clean.language,
        clean.planned_delivery_date.isoformat(),
        clean.production_status or "",
    ]


def _spooled(spool: IO[str], chunk_rows: int) -> Iterator[list[tuple[int, CleanOrder]]]:
    chunk: list[tuple[int, CleanOrder]] = []
    for fields in csv.reader(spool):
        row, number, dealer, model, vin, first, last, email, phone, country, language, planned, status = (
            fields
        )
        clean = CleanOrder(
            order_number=number,
            dealer_code=dealer,
            model_code=model,
            vin=vin or None,
            buyer_first_name=first,
            buyer_last_name=last,
            buyer_email=email,
            buyer_phone=phone,
            country=country,
            language=language,
            planned_delivery_date=date.fromisoformat(planned),
            production_status=status or None,
        )
        chunk.append((int(row), clean))
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _import_spool(
    session: Session,
    spool: IO[str],
    report: ImportReport,
    now: datetime,
    actor: str,
    lead_days: int,
    scope: Scope,
    chunk_rows: int,
    after_chunk: AfterChunk,
) -> None:
    stored = 0
    for chunk in _spooled(spool, chunk_rows):
        try:
            with session.begin_nested():
                created, updated = _store_chunk(session, chunk, now, actor, lead_days, scope)
        except IntegrityError:
            # Someone else wrote one of these orders (or took one of these VINs) since the check:
            # this chunk goes row by row through the API's upsert, which settles such races.
            created, updated = _store_one_by_one(session, chunk, report, now, actor, lead_days, scope)
        report.created += created
        report.updated += updated
        stored += len(chunk)
        after_chunk(ImportProgress("importing", stored, report.valid))


_ORDERS = cast(Table, Order.__table__)
_EVENTS = cast(Table, OrderEvent.__table__)
_STATE_COLUMNS = ("production_status", "invited_at", "onboarded_at", "invite_after", "updated_at")
_UPDATE_ORDER = (
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("order_id"))
    .values({name: bindparam(name) for name in (*_TRACKED, *_STATE_COLUMNS)})
)


def _created_events(numbers: ColumnElement[bool]) -> Insert:
    """The "created" events of the orders just inserted, in one statement: a RETURNING of the new
    ids would make SQLAlchemy send the rows one at a time on SQLite (to keep them in order)."""
    return insert(_EVENTS).from_select(
        ["order_id", "at", "kind", "actor", "detail"],
        select(
            _ORDERS.c.id,
            bindparam("at", type_=UTCDateTime()),
            literal("created"),
            bindparam("actor", type_=String()),
            null(),
        ).where(numbers),
    )


_CREATED_EVENTS = _created_events(_ORDERS.c.order_number.in_(bindparam("numbers", expanding=True)))
_CREATED_EVENTS_POSTGRESQL = _created_events(
    _ORDERS.c.order_number == any_(bindparam("numbers", type_=ARRAY(String())))
)


def _insert_orders(session: Session, rows: list[dict[str, Any]]) -> None:
    """On PostgreSQL one INSERT … SELECT FROM unnest(one array per column): psycopg would send an
    executemany as one INSERT per row, and a multi-row INSERT's text (new for every chunk) takes it
    longer to parse than the server takes to store the rows. On SQLite an executemany of tuples
    whose values went through SQLAlchemy's own bind processors once per distinct value: a chunk's
    rows share their timestamps and a few dates, and processing every value of every row took a
    quarter of the storing time."""
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        names = list(rows[0])
        compiled = insert(_ORDERS).compile(dialect=dialect, column_keys=names)
        order = compiled.positiontup or []
        processors = [_ORDERS.c[name].type._cached_bind_processor(dialect) for name in order]
        seen: list[dict[Any, Any]] = [{} for _ in order]
        values = []
        for row in rows:
            out = []
            for name, process, known in zip(order, processors, seen, strict=True):
                value = row[name]
                if process is not None and value is not None:
                    if value not in known:
                        known[value] = process(value)
                    value = known[value]
                out.append(value)
            values.append(tuple(out))
        session.connection().exec_driver_sql(compiled.string, values)
        return
    names = list(rows[0])
    columns = (
        func.unnest(
            *(
                bindparam(name, [row[name] for row in rows], type_=ARRAY(_ORDERS.c[name].type))
                for name in names
            )
        )
        .table_valued(*names)
        .render_derived()
    )
    session.execute(insert(_ORDERS).from_select(names, select(*(columns.c[name] for name in names))))


def _among(
    session: Session, column: InstrumentedAttribute[Any], values: Iterable[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as one array parameter: a thousand bound parameters would
    make every chunk's query text new, to be compiled, parsed and planned again."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
    return column.in_(list(values))


def _store_chunk(
    session: Session,
    chunk: list[tuple[int, CleanOrder]],
    now: datetime,
    actor: str,
    lead_days: int,
    scope: Scope,
) -> tuple[int, int]:
    """``upsert_order`` for a chunk of rows, in a few statements."""
    existing = {
        found.order_number: found
        for found in session.execute(
            select(
                Order.id,
                Order.order_number,
                *(getattr(Order, name) for name in _TRACKED),
                Order.production_status,
                Order.invited_at,
                Order.onboarded_at,
            ).where(_among(session, Order.order_number, [clean.order_number for _row, clean in chunk]))
        )
    }
    onboarded = _onboarded_by_vin(session, {clean.vin for _row, clean in chunk if clean.vin})
    new_orders: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    due_rule = _DueRule(lead_days)
    for _row, clean in chunk:
        found = existing.get(clean.order_number)
        if not scope.allows(clean.country) or (found is not None and not scope.allows(found.country)):
            raise NotFound(clean.order_number)
        status = ProductionStatus.ORDERED if found is None else found.production_status
        invited_at = None if found is None else found.invited_at
        onboarded_at = None if found is None else found.onboarded_at
        changed = (
            []
            if found is None
            else [name for name in _TRACKED if getattr(found, name) != getattr(clean, name)]
        )
        if clean.production_status and clean.production_status != status:
            status = clean.production_status
            changed.append("production_status")
        email_changed = found is not None and found.buyer_email.lower() != clean.buyer_email.lower()
        if email_changed and invited_at and not onboarded_at:
            # The old link names another address: a new invitation becomes due.
            invited_at = None
        if onboarded_at is None and clean.vin:
            owners = onboarded.get((clean.vin, clean.buyer_email.lower()), ())
            if any(found is None or owner != found.id for owner in owners):
                onboarded_at = now
        values = {name: getattr(clean, name) for name in _TRACKED}
        values["production_status"], values["invited_at"], values["onboarded_at"] = (
            status,
            invited_at,
            onboarded_at,
        )
        values["invite_after"] = due_rule(status, invited_at, onboarded_at, clean.planned_delivery_date)
        values["updated_at"] = now
        if found is None:
            new_orders.append({**values, "order_number": clean.order_number, "created_at": now})
        else:
            updates.append({**values, "order_id": found.id})
            if changed:
                detail = ", ".join(changed)
                events.append(
                    {"order_id": found.id, "at": now, "kind": "updated", "actor": actor, "detail": detail}
                )
    if new_orders:
        _insert_orders(session, new_orders)
        postgresql = session.get_bind().dialect.name == "postgresql"
        numbers = [order["order_number"] for order in new_orders]
        session.execute(
            _CREATED_EVENTS_POSTGRESQL if postgresql else _CREATED_EVENTS,
            {"at": now, "actor": actor, "numbers": numbers},
        )
    if updates:
        session.execute(_UPDATE_ORDER, updates)
    if events:
        session.execute(insert(_EVENTS), events)
    return len(new_orders), len(updates)


class _DueRule:
    """``refresh_invitation_due`` for plain values, run once per distinct input: a chunk's new orders
    mostly share their few planned dates, and building an ORM object per row costs more than the rule."""

    def __init__(self, lead_days: int) -> None:
        self.lead_days = lead_days
        self.known: dict[tuple[str, datetime | None, datetime | None, date], date | None] = {}

    def __call__(
        self, status: str, invited_at: datetime | None, onboarded_at: datetime | None, planned: date
    ) -> date | None:
        key = (status, invited_at, onboarded_at, planned)
        if key not in self.known:
            order = Order(
                production_status=status,
                invited_at=invited_at,
                onboarded_at=onboarded_at,
                planned_delivery_date=planned,
            )
            refresh_invitation_due(order, self.lead_days)
            self.known[key] = order.invite_after
        return self.known[key]


def _onboarded_by_vin(session: Session, vins: set[str]) -> dict[tuple[str, str], list[int]]:
    """Orders already onboarded, by (VIN, lower-case buyer email): a buyer who finished onboarding
    for a vehicle under another order is onboarded for it (``upsert_order``'s rule)."""
    if not vins:
        return {}
    out: dict[tuple[str, str], list[int]] = {}
    query = select(Order.vin, func.lower(Order.buyer_email), Order.id).where(
        _among(session, Order.vin, vins), Order.onboarded_at.is_not(None)
    )
    for vin, email, order_id in session.execute(query):
        out.setdefault((vin, email), []).append(order_id)
    return out


def _store_one_by_one(
    session: Session,
    chunk: list[tuple[int, CleanOrder]],
    report: ImportReport,
    now: datetime,
    actor: str,
    lead_days: int,
    scope: Scope,
) -> tuple[int, int]:
    created = updated = 0
    for row, clean in chunk:
        try:
            with session.begin_nested():
                _order, was_created, _changed = upsert_order(
                    session, clean, now=now, actor=actor, lead_days=lead_days, scope=scope
                )
        except ValidationFailed as exc:
            for error in exc.errors:
                report.add_error(row, error.field, error.text)
            continue
        except IntegrityError:
            report.add_error(row, "row", "Changed in the database during the import; import the file again.")
            continue
        created += was_created
        updated += not was_created
    return created, updated
