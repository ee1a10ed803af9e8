"""Password logins per core through the HTTP endpoint (acceptance criterion of the accounts issue).

Run from the repository root::

    .venv/bin/python bench/login.py [--logins 400] [--concurrency 4] [--database-url URL] [--quick]

Method
------
*Database.* A fresh SQLite file in a temporary directory (migrated with ``onboarding.ops.migrations``), or,
with ``--database-url postgresql+psycopg://user@host:port/db``, a fresh database ``bench_login_…``
created on that server and dropped at the end. ``--accounts`` IDs (50 by default) are created with
``onboarding.identity.accounts.create_account`` (so with the application's Argon2id hasher, consent rows and
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
rotation, new session row, audit row, commit). With PostgreSQL the database server's own CPU is in
other processes: the CPU of the bench database's backends (``pg_stat_activity`` → ``/proc/<pid>/stat``)
is printed separately, and is not in the per-core rate.

*Breakdown.* Inside the server, ``argon2``'s ``verify_secret`` (what ``PasswordHasher.verify`` calls)
is wrapped to add up its thread CPU time (two clock reads per call; the application's code and
parameters are unchanged), so the server CPU per login splits into Argon2id and the rest. The CPU
of a ``GET /healthz`` (200 of them after the logins) shows what any request costs.

*Baseline.* ``password_hasher().verify(hash, password)`` with the same hasher (19 MiB, t=2, p=1) on
the same accounts' hashes in the bench process, ``--verifications`` times, per CPU second. It runs in
as many threads at once as the server hashes at once: ``min(concurrency, ARGON2_CONCURRENCY)``, where
``onboarding.identity.accounts.ARGON2_CONCURRENCY`` is the server's bound on concurrent Argon2id computations
(one per core). Hashing on every core at once is slower per core than on one (the cores share caches
and memory bandwidth; 3-10 % on this machine), and the criterion's ratio should measure what the
request and the database add, not that. The one-thread rate is measured and printed too, with the
ratio against it. Each baseline runs before and after the logins; the faster run counts, so the ratios
are conservative. ``ratio = login rate per core / raw verification rate per core at the server's
hashing concurrency`` (target >= 0.8; with ``--concurrency 1`` that is the one-thread rate). The
per-core rate is also compared with the sizing figure Keycloak publishes: 15 password-based logins per
second per vCPU.

``--quick``: 100 timed logins, 30 verifications per baseline run. ``--profile FILE``: cProfile, timed
with each thread's CPU clock, in every thread of the server process for its whole serving time
(warm-up included), written to FILE and summarised; the profiler slows Python code, so the ratio of
a profiled run is not the figure.

Exit code: 0 when every login succeeded (even if the target is missed: this is a measurement), 1
when a login got another answer than a 303 with a session cookie (counts by status are printed).
"""

from __future__ import annotations

import argparse
import logging
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from benchdb import BenchDb, fresh_database
from benchserver import AppServer, PostgresBackends, ProcStat, print_profile, split

from onboarding.core.db import transaction
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings
from onboarding.identity.accounts import ARGON2_CONCURRENCY, NewAccount, create_account, password_hasher

SECRET = "bench-secret-" + "x" * 40
TARGET = 0.8
KEYCLOAK_LOGINS_PER_VCPU = 15  # keycloak.org, "Concepts for sizing CPU and memory resources"
UNLIMITED = "1000000/minute"


@dataclass(frozen=True)
class BenchAccount:
    email: str
    password: str
    password_hash: str


# --- database ---------------------------------------------------------------------------------------


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


class HashMeter:
    """Thread CPU time spent in Argon2id verification inside the server process: a wrapper around
    ``argon2``'s ``verify_secret`` as ``PasswordHasher.verify`` calls it (the application's code and
    parameters are unchanged; the wrapper costs two clock reads)."""

    def __init__(self) -> None:
        import argon2._password_hasher as password_hasher_module

        self.lock = threading.Lock()
        self.count, self.cpu = 0, 0.0
        namespace = vars(password_hasher_module)  # its module globals: what ``verify`` looks up
        original = namespace["verify_secret"]

        def timed_verify_secret(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self.lock:
                    self.count += 1
                    self.cpu += spent

        namespace["verify_secret"] = timed_verify_secret

    def totals(self) -> tuple[int, float]:
        with self.lock:
            return self.count, self.cpu


def hash_replies() -> Callable[[str], object]:
    """In the server process: the meter, answering "hash" with its totals."""
    meter = HashMeter()
    return lambda _message: meter.totals()


def hashing(server: AppServer) -> tuple[int, float]:
    """Argon2id verifications so far inside the server, and their thread CPU seconds."""
    return cast(tuple[int, float], server.ask("hash"))


# --- the client ---------------------------------------------------------------------------------------


@dataclass
class LoginRun:
    count: int = 0
    wall: float = 0.0
    server: ProcStat = field(default_factory=ProcStat)
    hashes: int = 0
    hash_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float | None = None
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.statuses["ok"]

    @property
    def per_core(self) -> float:
        return self.count / self.server.cpu

    def __add__(self, other: LoginRun) -> LoginRun:
        both_db = self.database_cpu is not None and other.database_cpu is not None
        return LoginRun(
            count=self.count + other.count,
            wall=self.wall + other.wall,
            server=self.server + other.server,
            hashes=self.hashes + other.hashes,
            hash_cpu=self.hash_cpu + other.hash_cpu,
            client_cpu=self.client_cpu + other.client_cpu,
            database_cpu=(self.database_cpu or 0.0) + (other.database_cpu or 0.0) if both_db else None,
            statuses=self.statuses + other.statuses,
        )


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
    server: AppServer,
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
    hashed_before = hashing(server)
    before, client_cpu, wall = server.stat(), time.process_time(), time.perf_counter()
    for thread in threads:
        thread.join()
    run.wall = time.perf_counter() - wall
    run.server = server.stat() - before
    hashed_after = hashing(server)
    run.hashes, run.hash_cpu = hashed_after[0] - hashed_before[0], hashed_after[1] - hashed_before[1]
    run.client_cpu = time.process_time() - client_cpu
    if database_cpu and db_before is not None:
        run.database_cpu = database_cpu() - db_before
    return run


# --- the baseline -----------------------------------------------------------------------------------


@dataclass
class Verifications:
    count: int
    cpu: float
    wall: float
    faults: int

    @property
    def rate(self) -> float:
        return self.count / self.cpu


def raw_verifications(accounts: Sequence[BenchAccount], count: int) -> Verifications:
    """``count`` Argon2id verifications of the accounts' hashes in this thread, with the app's hasher."""
    hasher = password_hasher()
    pairs = [(a.password_hash, a.password) for a in accounts]
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(count):
        hashed, password = pairs[i % len(pairs)]
        if not hasher.verify(hashed, password):
            raise AssertionError("a stored hash did not verify")
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
    return Verifications(count, cpu, wall, faults)


def parallel_verifications(accounts: Sequence[BenchAccount], count: int, threads: int) -> Verifications:
    """The same verifications in ``threads`` threads at once (Argon2id releases the GIL), per CPU
    second of this process: the hashing rate per core when that many cores hash, as the server does."""
    if threads == 1:
        return raw_verifications(accounts, count)
    results: list[Verifications] = []
    share = max(1, count // threads)

    def worker() -> None:
        results.append(raw_verifications(accounts, share))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Verifications(share * threads, cpu, wall, sum(r.faults for r in results))


@dataclass(frozen=True)
class Baseline:
    """Raw verification rates at one moment: in one thread, and at the server's hashing concurrency."""

    single: Verifications
    matched: Verifications


def measure_baseline(accounts: Sequence[BenchAccount], count: int, threads: int) -> Baseline:
    single = raw_verifications(accounts, count)
    matched = single if threads == 1 else parallel_verifications(accounts, count, threads)
    return Baseline(single, matched)


def request_floor(server: AppServer, count: int = 200) -> float:
    """Server CPU seconds per ``GET /healthz`` on one keep-alive connection: what any request costs
    (uvicorn and h11, the middleware, routing, the thread-pool hop), for the breakdown."""
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(20):
            client.get("/healthz")
        before = server.stat()
        for _ in range(count):
            client.get("/healthz")
        return (server.stat() - before).cpu / count


# --- main ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    run: LoginRun
    raw: float  # verifications per CPU second at the server's hashing concurrency (the faster neighbour)
    raw_single: float  # the same in one thread

    @property
    def ratio(self) -> float:
        return self.run.per_core / self.raw


def pair_rounds(runs: Sequence[LoginRun], baselines: Sequence[Baseline]) -> list[Round]:
    """Each round's logins against the baselines measured just before and just after it; the faster
    of the two counts (conservative)."""
    return [
        Round(
            run,
            max(baselines[i].matched.rate, baselines[i + 1].matched.rate),
            max(baselines[i].single.rate, baselines[i + 1].single.rate),
        )
        for i, run in enumerate(runs)
    ]


def report(
    args: argparse.Namespace,
    kind: str,
    runs: Sequence[LoginRun],
    baselines: Sequence[Baseline],
    floor: float,
) -> bool:
    threads = hashing_threads(args)
    run = sum(runs[1:], runs[0])
    failures = {k: v for k, v in run.statuses.items() if k != "ok"}
    if failures or run.ok != run.count:
        print(f"ERROR logins: {run.ok} of {run.count} succeeded; other answers: {failures}", file=sys.stderr)
        return False
    rounds = pair_rounds(runs, baselines)
    for number, round_ in enumerate(rounds, 1):
        print(
            f"  round {number}: {round_.run.count} logins, {round_.run.per_core:.1f}/s per core; raw "
            f"Argon2id {round_.raw:.1f}/s per core ({threads} at once), {round_.raw_single:.1f}/s (one "
            f"thread); ratio {round_.ratio:.2f} "
            f"(against one thread: {round_.run.per_core / round_.raw_single:.2f})"
        )
    best_raw = max(b.matched.rate for b in baselines)
    faults = max(baselines, key=lambda b: b.matched.rate).matched
    print(
        f"  raw Argon2id ({threads} at once): {', '.join(f'{b.matched.rate:.1f}' for b in baselines)}/s per "
        f"core before, between and after the rounds ({faults.faults / faults.count:.0f} page faults per "
        f"verification); one thread: {', '.join(f'{b.single.rate:.1f}' for b in baselines)}/s"
    )
    server = run.server
    login_ms = 1000 * server.cpu / run.count
    inside_ms = 1000 * run.hash_cpu / run.hashes if run.hashes else float("nan")
    rest_ms = login_ms - 1000 * run.hash_cpu / run.count
    print(
        f"  server CPU per login {login_ms:.1f} ms (user {1000 * server.user / run.count:.1f}, system "
        f"{1000 * server.system / run.count:.1f}, {server.faults / run.count:.0f} page faults); client CPU "
        f"{run.client_cpu / run.wall:.0%} of wall time"
    )
    print(
        f"    Argon2id {inside_ms:.1f} ms ({run.hashes} verifications timed inside the server; raw: "
        f"{1000 / best_raw:.1f} ms); the rest {rest_ms:.1f} ms (any request, GET /healthz: "
        f"{1000 * floor:.1f} ms)"
    )
    if run.database_cpu is not None:
        db_ms = 1000 * run.database_cpu / run.count
        print(
            f"  PostgreSQL backends: {db_ms:.1f} ms CPU per login (not in the per-core rate; with it: "
            f"{run.count / (server.cpu + run.database_cpu):.1f}/s per core)"
        )
    print(
        f"logins ({kind}, concurrency {args.concurrency}): {run.count} in {run.wall:.2f} s = "
        f"{run.count / run.wall:.1f}/s wall, {run.per_core:.1f}/s per core (server CPU "
        f"{server.cpu / run.wall:.0%})"
    )
    print(f"raw Argon2id ({threads} at once, as the server hashes): {best_raw:.1f}/s per core at best")
    ratio = statistics.median(r.ratio for r in rounds)
    print(
        f"ratio {ratio:.3f}, the median of {len(rounds)} rounds "
        f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})"
    )
    print(
        f"  (all rounds together against the fastest baseline of the run: {run.per_core / best_raw:.2f}; "
        f"median against one hash at a time: "
        f"{statistics.median(r.run.per_core / r.raw_single for r in rounds):.2f})"
    )
    print(
        f"Keycloak's published sizing: {KEYCLOAK_LOGINS_PER_VCPU} password logins/s per vCPU; "
        f"this service: {run.per_core:.1f}/s per core "
        f"({run.per_core:.1f}/{KEYCLOAK_LOGINS_PER_VCPU} = {run.per_core / KEYCLOAK_LOGINS_PER_VCPU:.1f}×)"
    )
    if args.profile:
        print("  (profiled run: cProfile slows the Python side, so these figures understate the service)")
    return True


def hashing_threads(args: argparse.Namespace) -> int:
    """How many Argon2id computations the server runs at once at this concurrency."""
    return max(1, min(int(args.concurrency), ARGON2_CONCURRENCY))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=50, help="IDs to log in with, in turn (default 50)")
    parser.add_argument("--logins", type=int, default=None, help="timed logins (default 400; --quick 100)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed logins first (default 40)")
    parser.add_argument(
        "--verifications", type=int, default=None, help="per baseline run (default 60; --quick 20)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="login rounds, each between two baselines (default 4; --quick 2)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="client connections (default 4)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL; a fresh database is created there and dropped (default: SQLite)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="100 logins in 2 rounds, 20 verifications per baseline"
    )
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server process to FILE")
    args = parser.parse_args(argv)
    args.logins = args.logins if args.logins is not None else (100 if args.quick else 400)
    args.warmup = args.warmup if args.warmup is not None else (20 if args.quick else 40)
    args.verifications = args.verifications or (20 if args.quick else 60)
    args.rounds = args.rounds or (2 if args.quick else 4)
    if (
        min(args.accounts, args.logins, args.concurrency, args.verifications, args.rounds) < 1
        or args.warmup < 0
    ):
        parser.error("--accounts, --logins, --concurrency, --verifications and --rounds must be at least 1")
    if args.rounds > args.logins:
        parser.error("--rounds must not exceed --logins")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="bench-login-") as tmp,
        fresh_database(args.database_url, Path(tmp), "login") as db,
    ):
        started = time.perf_counter()
        accounts = seed_accounts(db, bench_settings(db.url, "http://127.0.0.1"), args.accounts)
        print(
            f"login bench ({db.kind}): {len(accounts)} accounts created in "
            f"{time.perf_counter() - started:.1f} s; one uvicorn worker; {args.logins} timed logins "
            f"after {args.warmup}, concurrency {args.concurrency}"
        )
        threads = hashing_threads(args)
        per_round = [len(part) for part in split(range(args.logins), args.rounds)]
        baselines = [measure_baseline(accounts, args.verifications, threads)]
        runs: list[LoginRun] = []
        server = AppServer(bench_settings, db.url, args.profile, hash_replies)
        try:
            if args.warmup:
                warm = run_logins(server, accounts, args.warmup, args.concurrency)
                if warm.ok != args.warmup:
                    print(f"ERROR warm-up logins: {dict(warm.statuses)}", file=sys.stderr)
                    return 1
            backends = PostgresBackends(db.engine) if db.kind == "postgresql" else None
            for count in per_round:
                runs.append(run_logins(server, accounts, count, args.concurrency, backends))
                baselines.append(measure_baseline(accounts, args.verifications, threads))
            floor = request_floor(server)
        finally:
            server.close()
        ok = report(args, db.kind, runs, baselines, floor)
    if args.profile and args.profile.exists():
        print_profile(args.profile, cumulative=40)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
