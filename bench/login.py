"""Password logins per core through the HTTP endpoint (acceptance criterion of the accounts issue).

Run from the repository root::

    .venv/bin/python bench/login.py [--logins 400] [--concurrency 4] [--database-url URL] [--quick]

Method
------
*Database.* A fresh SQLite file in a temporary directory (migrated with ``onboarding.migrations``), or,
with ``--database-url postgresql+psycopg://user@host:port/db``, a fresh database ``bench_login_…``
created on that server and dropped at the end. ``--accounts`` IDs (50 by default) are created with
``onboarding.accounts.create_account`` (so with the application's Argon2id hasher, consent rows and
``email_verified_at`` set; no second factor): every correct password is a complete login.

*Server.* The application (``create_app``) runs under uvicorn, one worker, in its own process
(``multiprocessing``, spawn), as ``onboarding serve`` runs it (``log_level="warning"``, no scheduler).
Its settings point at the bench database, use a fixed secret key, a ``public_base_url`` equal to the
server's address (so the CSRF Origin check passes) and login rate limits of 1,000,000/minute (so the
limits count every attempt but never refuse one).

*Client.* ``--concurrency`` threads (4 by default) in the bench process, each with its own
``httpx.Client`` (keep-alive, cookie jar). Each gets the login page once (the CSRF cookie), then
posts ``/login`` with ``email``, ``password``, ``next`` and ``csrf_token`` (the cookie's value) and an
``Origin`` header, like a browser, without following the redirect. A login counts when the answer is
303 and sets ``onb_session``. The jar sends the previous login's session cookie, so each login also
ends (rotates) the browser's previous session, as a real one does. Accounts are taken in turn.
After ``--warmup`` untimed logins, ``--logins`` logins are timed.

*Per core.* The server process's CPU time (``utime + stime`` of ``/proc/<pid>/stat``, all its threads)
is read before and after the timed logins; ``logins / server CPU seconds`` is the rate per core.
Each login costs the server one Argon2id verification, the HTTP request (uvicorn, FastAPI, form and
CSRF check), the rate-limit counters and the database work (account lookup, session lookup and
rotation, new session row, audit row, failure counter reset, commit). With PostgreSQL the database
server's own CPU is in other processes: the CPU of the bench database's backends
(``pg_stat_activity`` → ``/proc/<pid>/stat``) is printed separately, and is not in the per-core rate.

*Baseline.* ``password_hasher().verify(hash, password)`` with the same hasher (19 MiB, t=2, p=1) on
the same accounts' hashes, in one thread of the bench process, ``--verifications`` times; the rate
is verifications per CPU second of that thread (``time.thread_time``). It runs before and after the
logins; the faster run counts, so the ratio is conservative. ``ratio = login rate per core / raw
verification rate per core`` (target >= 0.8). The per-core rate is also compared with the sizing
figure Keycloak publishes: 15 password-based logins per second per vCPU.

``--quick``: 100 timed logins, 30 verifications per baseline run. ``--profile FILE``: cProfile in
the server process (every thread, the whole serving time including the warm-up), written to FILE
and summarised; the profiler slows Python code, so the ratio of a profiled run is not the figure.

Exit code: 0 when every login succeeded (even if the target is missed: this is a measurement), 1
when a login got another answer than a 303 with a session cookie (counts by status are printed).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import multiprocessing
import os
import pstats
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from onboarding import migrations
from onboarding.accounts import NewAccount, create_account, password_hasher
from onboarding.db import make_engine, make_session_factory, transaction
from onboarding.logconfig import configure_logging
from onboarding.settings import Settings

SECRET = "bench-secret-" + "x" * 40
TARGET = 0.8
KEYCLOAK_LOGINS_PER_VCPU = 15  # keycloak.org, "Concepts for sizing CPU and memory resources"
UNLIMITED = "1000000/minute"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchAccount:
    email: str
    password: str
    password_hash: str


# --- database ---------------------------------------------------------------------------------------


@dataclass
class BenchDb:
    kind: str
    url: str
    engine: Engine
    factory: sessionmaker[Session]


@contextmanager
def fresh_database(base_url: str | None, workdir: Path) -> Iterator[BenchDb]:
    """A migrated, empty database; dropped (PostgreSQL) on exit."""
    admin: Engine | None = None
    if base_url is None:
        url = f"sqlite:///{workdir / 'login'}.db"
    else:
        parsed = make_url(base_url)
        if parsed.get_backend_name() != "postgresql":
            raise SystemExit("--database-url takes a PostgreSQL URL; leave it out for SQLite")
        name = f"bench_login_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = parsed.set(database=name).render_as_string(hide_password=False)
    engine: Engine | None = None
    try:
        migrations.upgrade(url)
        engine = make_engine(url)
        yield BenchDb(engine.dialect.name, url, engine, make_session_factory(engine))
    finally:
        if engine is not None:
            engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            admin.dispose()


FIRST_NAMES = ("Astrid", "Lars", "Emma", "Noah", "Thandi", "Olivia", "Sipho", "Ingrid")
LAST_NAMES = ("Lindqvist", "Andersson", "Miller", "Nkosi", "Berg", "Johnson", "van Wyk", "Karlsson")
COUNTRIES = (("SE", "sv"), ("US", "en"), ("ZA", "en"))


def seed_accounts(db: BenchDb, settings: Settings, count: int) -> list[BenchAccount]:
    """``count`` verified IDs without a second factor, through the service (one password each)."""
    now = datetime.now(UTC)
    accounts: list[BenchAccount] = []
    with transaction(db.factory) as session:
        for i in range(count):
            country, language = COUNTRIES[i % len(COUNTRIES)]
            password = f"Bench-login {i:04d} {secrets.token_hex(6)}"
            account = create_account(
                session,
                NewAccount(
                    email=f"login{i}@bench.example",
                    password=password,
                    password_confirmation=password,
                    first_name=FIRST_NAMES[i % len(FIRST_NAMES)],
                    last_name=LAST_NAMES[(i // 7) % len(LAST_NAMES)],
                    birth_date=date(1970 + i % 30, 1 + i % 12, 1 + i % 28),
                    country=country,
                    language=language,
                    accept_terms=True,
                    accept_privacy=True,
                ),
                settings=settings,
                now=now,
                via="registration",
                email_verified=True,
            )
            accounts.append(BenchAccount(account.email, password, account.password_hash))
    return accounts


def bench_settings(database_url: str, base_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=SECRET,
        public_base_url=base_url,
        rate_limit_login_per_ip=UNLIMITED,
        rate_limit_login_per_account=UNLIMITED,
        _env_file=None,
    )


# --- the server (its own process) ---------------------------------------------------------------------


def _serve(database_url: str, port: int, profile: str | None, conn: Connection) -> None:
    """Child process: the application under uvicorn on 127.0.0.1:port until told to stop."""
    import uvicorn

    from onboarding.app import create_app

    base_url = f"http://127.0.0.1:{port}"
    app = create_app(bench_settings(database_url, base_url))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)

    def stop_on_request() -> None:
        with suppress(EOFError, OSError):
            conn.recv()
        server.should_exit = True

    threading.Thread(target=stop_on_request, daemon=True).start()
    profiles: list[cProfile.Profile] = []
    if profile:
        lock = threading.Lock()

        def start_thread_profile(frame: Any, event: str, arg: Any) -> None:
            # Called once in each new thread (the request threads): swap in a profiler of its own.
            sys.setprofile(None)
            profiler = cProfile.Profile()
            with lock:
                profiles.append(profiler)
            profiler.enable()

        threading.setprofile(start_thread_profile)
        main_profile = cProfile.Profile()
        profiles.append(main_profile)
        main_profile.enable()
    conn.send("starting")
    server.run()
    if profile:
        threading.setprofile(None)
        main_profile.disable()
        stats = pstats.Stats(profiles[0])
        for extra in profiles[1:]:
            stats.add(extra)
        stats.dump_stats(profile)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


class Server:
    def __init__(self, database_url: str, profile: Path | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(database_url, self.port, str(profile) if profile else None, child)
        )
        self.process.start()
        assert self.process.pid is not None
        self.pid = self.process.pid
        if not self._conn.poll(60) or self._conn.recv() != "starting":
            raise RuntimeError("the server process did not start")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("the server did not answer /healthz")
            time.sleep(0.1)

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def close(self) -> None:
        """Graceful stop (the profile, if any, is written after uvicorn returns)."""
        with suppress(OSError):
            self._conn.send("stop")
        self.process.join(60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)


# --- the client ---------------------------------------------------------------------------------------


@dataclass
class LoginRun:
    count: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float | None = None
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.statuses["ok"]


def login_worker(
    base_url: str,
    accounts: Sequence[BenchAccount],
    tickets: Iterator[int],
    lock: threading.Lock,
    start: threading.Barrier,
    statuses: Counter[str],
) -> None:
    """One browser: the login page once (CSRF cookie), then logins while tickets last."""
    with httpx.Client(base_url=base_url, headers={"Origin": base_url}, timeout=60) as client:
        page = client.get("/login")
        token = client.cookies.get("onb_csrf")
        if page.status_code != 200 or not token:
            with lock:
                statuses[f"login page {page.status_code}"] += 1
            start.abort()
            return
        start.wait()
        while True:
            with lock:
                ticket = next(tickets, None)
            if ticket is None:
                return
            account = accounts[ticket % len(accounts)]
            response = client.post(
                "/login",
                data={
                    "email": account.email,
                    "password": account.password,
                    "next": "/account",
                    "csrf_token": token,
                },
            )
            good = response.status_code == 303 and "onb_session" in response.cookies
            with lock:
                statuses["ok" if good else str(response.status_code)] += 1


def run_logins(
    server: Server,
    accounts: Sequence[BenchAccount],
    count: int,
    concurrency: int,
    database_cpu: Callable[[], float] | None = None,
) -> LoginRun:
    """``count`` logins over ``concurrency`` connections; server CPU read around the timed part only
    (the threads have fetched their login page and wait on a barrier when the clock starts)."""
    run = LoginRun(count=count)
    lock = threading.Lock()
    tickets = iter(range(count))
    threads_count = max(1, min(concurrency, count))
    start = threading.Barrier(threads_count + 1)
    threads = [
        threading.Thread(
            target=login_worker, args=(server.base_url, accounts, tickets, lock, start, run.statuses)
        )
        for _ in range(threads_count)
    ]
    for thread in threads:
        thread.start()
    try:
        start.wait(timeout=120)
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        return run
    db_before = database_cpu() if database_cpu else None
    cpu, client_cpu, wall = server.cpu(), time.process_time(), time.perf_counter()
    for thread in threads:
        thread.join()
    run.wall = time.perf_counter() - wall
    run.server_cpu = server.cpu() - cpu
    run.client_cpu = time.process_time() - client_cpu
    if database_cpu and db_before is not None:
        run.database_cpu = database_cpu() - db_before
    return run


class PostgresBackends:
    """CPU of the PostgreSQL backends connected to the bench database (other than this one)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: dict[int, float] = {}

    def __call__(self) -> float:
        with self.engine.connect() as conn:
            pids = conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        for pid in pids:
            with suppress(OSError):
                self.seen[pid] = process_cpu(pid)
        return sum(self.seen.values())


# --- the baseline -----------------------------------------------------------------------------------


@dataclass
class Verifications:
    count: int
    cpu: float
    wall: float

    @property
    def rate(self) -> float:
        return self.count / self.cpu


def raw_verifications(accounts: Sequence[BenchAccount], count: int) -> Verifications:
    """``count`` Argon2id verifications of the accounts' hashes in this thread, with the app's hasher."""
    hasher = password_hasher()
    pairs = [(a.password_hash, a.password) for a in accounts]
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(count):
        hashed, password = pairs[i % len(pairs)]
        if not hasher.verify(hashed, password):
            raise AssertionError("a stored hash did not verify")
    return Verifications(count, time.thread_time() - cpu, time.perf_counter() - wall)


# --- main ---------------------------------------------------------------------------------------------


def print_profile(path: Path) -> None:
    print(f"  profile of the server process written to {path}; top functions by own time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def report(args: argparse.Namespace, kind: str, run: LoginRun, raw: list[Verifications]) -> bool:
    best = max(raw, key=lambda v: v.rate)
    runs = ", ".join(f"{v.rate:.1f}/s" for v in raw)
    print(f"  raw Argon2id runs (bench process, one thread, {best.count} each): {runs}; the faster counts")
    failures = {k: v for k, v in run.statuses.items() if k != "ok"}
    if failures or run.ok != run.count:
        print(f"ERROR logins: {run.ok} of {run.count} succeeded; other answers: {failures}", file=sys.stderr)
        return False
    wall_rate = run.count / run.wall
    per_core = run.count / run.server_cpu
    raw_rate = best.rate
    ratio = per_core / raw_rate
    login_ms, hash_ms = 1000 * run.server_cpu / run.count, 1000 / raw_rate
    print(
        f"  server CPU per login {login_ms:.1f} ms = {hash_ms:.1f} ms Argon2id + {login_ms - hash_ms:.1f} ms "
        f"request, rate limits and database; client CPU {run.client_cpu / run.wall:.0%} of wall time"
    )
    if run.database_cpu is not None:
        db_ms = 1000 * run.database_cpu / run.count
        print(
            f"  PostgreSQL backends: {db_ms:.1f} ms CPU per login (not in the per-core rate; with it: "
            f"{run.count / (run.server_cpu + run.database_cpu):.1f}/s per core)"
        )
    print(
        f"logins ({kind}, concurrency {args.concurrency}): {run.count} in {run.wall:.2f} s = "
        f"{wall_rate:.1f}/s wall, {per_core:.1f}/s per core (server CPU {run.server_cpu / run.wall:.0%})"
    )
    print(f"raw Argon2id: {raw_rate:.1f}/s per core")
    print(f"ratio {ratio:.2f} (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    print(
        f"Keycloak's published sizing: {KEYCLOAK_LOGINS_PER_VCPU} password logins/s per vCPU; "
        f"this service: {per_core:.1f}/s per core "
        f"({per_core:.1f}/{KEYCLOAK_LOGINS_PER_VCPU} = {per_core / KEYCLOAK_LOGINS_PER_VCPU:.1f}×)"
    )
    if args.profile:
        print("  (profiled run: cProfile slows the Python side, so these figures understate the service)")
    return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=50, help="IDs to log in with, in turn (default 50)")
    parser.add_argument("--logins", type=int, default=None, help="timed logins (default 400; --quick 100)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed logins first (default 40)")
    parser.add_argument("--verifications", type=int, default=None, help="per baseline run (default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections (default 4)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL; a fresh database is created there and dropped (default: SQLite)",
    )
    parser.add_argument("--quick", action="store_true", help="100 logins, 30 verifications per baseline")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server process to FILE")
    args = parser.parse_args(argv)
    args.logins = args.logins if args.logins is not None else (100 if args.quick else 400)
    args.warmup = args.warmup if args.warmup is not None else (20 if args.quick else 40)
    args.verifications = args.verifications or (30 if args.quick else 100)
    if min(args.accounts, args.logins, args.concurrency, args.verifications) < 1 or args.warmup < 0:
        parser.error("--accounts, --logins, --concurrency and --verifications must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="bench-login-") as tmp,
        fresh_database(args.database_url, Path(tmp)) as db,
    ):
        started = time.perf_counter()
        accounts = seed_accounts(db, bench_settings(db.url, "http://127.0.0.1"), args.accounts)
        print(
            f"login bench ({db.kind}): {len(accounts)} accounts created in "
            f"{time.perf_counter() - started:.1f} s; one uvicorn worker; {args.logins} timed logins "
            f"after {args.warmup}, concurrency {args.concurrency}"
        )
        raw = [raw_verifications(accounts, args.verifications)]
        server = Server(db.url, args.profile)
        try:
            if args.warmup:
                warm = run_logins(server, accounts, args.warmup, args.concurrency)
                if warm.ok != args.warmup:
                    print(f"ERROR warm-up logins: {dict(warm.statuses)}", file=sys.stderr)
                    return 1
            backends = PostgresBackends(db.engine) if db.kind == "postgresql" else None
            run = run_logins(server, accounts, args.logins, args.concurrency, backends)
        finally:
            server.close()
        raw.append(raw_verifications(accounts, args.verifications))
        ok = report(args, db.kind, run, raw)
    if args.profile and args.profile.exists():
        print_profile(args.profile)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
