"""Refresh-token grants per core through the in-car token endpoint (issue 13, "What must show it").

Run from the repository root::

    .venv/bin/python bench/incar.py [--grants 200] [--refreshes 3000] [--concurrency 4] [--quick]
    .venv/bin/python bench/incar.py --database-url postgresql+psycopg://user@host:port/db

Method
------
*Database.* A fresh SQLite file in a temporary directory (migrated with ``onboarding.ops.migrations``), or,
with ``--database-url postgresql+psycopg://user@host:port/db``, a fresh database ``bench_incar_…``
created on that server and dropped at the end. Seeded through the in-car OAuth core, as a completed
device login leaves it: a few IDs (``create_account``, verified), then ``--grants`` vehicle clients
(``clients.provision``, one VIN each, its secret kept), and for each a device login
(``device_login.start``) approved by one of the IDs, completed, its grant made with
``tokens.grant_for_device_login`` and its first tokens with ``tokens.issue``: each grant holds one
live refresh token.

*Server.* The application (``create_app``) runs under uvicorn, one worker, in its own process
(``multiprocessing``, spawn), as ``onboarding serve`` runs it (``log_level="warning"``, no scheduler).
Its settings point at the bench database, use a fixed secret key, a ``public_base_url`` equal to the
server's (loopback) address, and in-car rate limits (``rate_limit_incar_per_ip`` and
``rate_limit_incar_per_client``) of 1,000,000/minute, so the limits count every request but never
refuse one.

*Client.* ``--concurrency`` threads (4 by default) in the bench process, each with its own
``httpx.Client`` (keep-alive), each owning a share of the grants, which it takes in turn. A refresh is
``POST /oauth/token`` with ``grant_type=refresh_token`` and the grant's newest refresh token,
``client_secret_basic`` (the car's id and secret in an HTTP Basic header). It counts when the answer is
200 with an access token and a new refresh token, which the thread then keeps: every refresh rotates
(no retry, no reuse). The bare request is ``GET /healthz`` (``--bare`` names another GET), the
application's cheapest endpoint: a plain FastAPI route answering a constant JSON object (uvicorn,
the middleware, routing and a thread-pool hop, as the token endpoint's unit of work also has; no
database), sent by the same threads on the same kind of connection. Each thread opens its
connection with one untimed ``GET /healthz`` before the clock starts.

*Rounds.* After ``--warmup`` untimed refreshes, bare and refresh rounds alternate: bare, refresh, bare,
…, bare (``--rounds`` refresh rounds of ``--refreshes / --rounds`` each; ``--bare-requests`` per bare
round). Each round's ratio is its refresh rate over the faster of the two bare rounds around it (so
the ratio is conservative); the median ratio is printed.

*Per core.* The server process's CPU time (``utime + stime`` of ``/proc/<pid>/stat``, all its threads)
is read before and after each round; ``requests / server CPU seconds`` is the rate per core. With
PostgreSQL the database server's own CPU is in other processes: the CPU of the bench database's
backends (``pg_stat_activity`` → ``/proc/<pid>/stat``) during the refresh rounds is printed
separately, and is not in the per-core rate (with SQLite the database work is inside the server
process). Target: >= 240 refreshes per second per core, twice the 120 refresh-token grants per
second per vCPU Keycloak publishes in its sizing guide. The machine's load average is printed before
and after: the bench shares the cores with whatever else runs.

*Check.* After the rounds, the database must hold no revoked grant and exactly one used refresh token
per successful refresh (warm-up included).

``--quick``: 40 grants, 600 timed refreshes in 2 rounds, 300 bare requests per bare round.
``--profile FILE``: cProfile, timed with each thread's CPU clock, in every thread of the server
process for its whole serving time (warm-up included), written to FILE and summarised; the profiler
slows Python code, so a profiled run's rates are not the figure.

Exit code: 0 when every refresh and bare request succeeded (even if the target is missed: this is a
measurement), 1 when one got another answer (counts by status are printed) or the check fails.
"""

from __future__ import annotations

import argparse
import base64
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from benchdb import BenchDb, fresh_database
from benchserver import AppServer, PostgresBackends, ProcStat, load_average, print_profile, shares
from sqlalchemy import func, select

from onboarding.core.db import transaction
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings
from onboarding.identity.accounts import NewAccount, create_account
from vehicles.incar import clients, device_login, tokens
from vehicles.incar.models import InCarGrant, RefreshToken
from vehicles.vin import CHECK_DIGIT_POSITION, vin_check_character

SECRET = "bench-secret-" + "x" * 40
TARGET_PER_CORE = 240.0
KEYCLOAK_REFRESHES_PER_VCPU = 120  # keycloak.org, "Concepts for sizing CPU and memory resources"
UNLIMITED = "1000000/minute"
ACCOUNTS = 8  # IDs the grants belong to, in turn (a user may log in to several cars)


@dataclass
class BenchGrant:
    """One car's user grant as the car holds it: its client credential and its newest refresh token."""

    client_id: str
    authorization: str  # the HTTP Basic header value (client_secret_basic)
    refresh_token: str


# --- database ---------------------------------------------------------------------------------------


def bench_vin(number: int) -> str:
    """A well-formed VIN (ISO 3779, with its check digit) per number."""
    draft = f"YV1DZ8250C{number:07d}"
    check = vin_check_character(draft)
    return draft[: CHECK_DIGIT_POSITION - 1] + check + draft[CHECK_DIGIT_POSITION:]


def basic_authorization(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: id and secret form-encoded first; both are URL-safe already.
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def seed_grants(db: BenchDb, settings: Settings, count: int) -> list[BenchGrant]:
    """``count`` provisioned cars, each with a completed device login of one of the IDs: its grant and
    first tokens (through the in-car core, as the token endpoint makes them)."""
    now = datetime.now(UTC)
    grants: list[BenchGrant] = []
    with transaction(db.factory) as session:
        account_ids = []
        for i in range(min(ACCOUNTS, count)):
            password = f"Bench-incar {i:04d} secret"
            account = create_account(
                session,
                NewAccount(
                    email=f"incar{i}@bench.example",
                    password=password,
                    password_confirmation=password,
                    first_name="Astrid",
                    last_name="Lindqvist",
                    birth_date=date(1980, 1 + i % 12, 1 + i % 28),
                    country="SE",
                    language="sv",
                    accept_terms=True,
                    accept_privacy=True,
                ),
                settings=settings,
                now=now,
                via="registration",
                email_verified=True,
            )
            account_ids.append(account.id)
        for i in range(count):
            client, secret = clients.provision(session, bench_vin(i), now=now, actor="bench")
            authorization, _device_code = device_login.start(session, settings, client, "", now=now)
            # What the approval page and the token endpoint's device-code grant leave behind.
            authorization.account_id = account_ids[i % len(account_ids)]
            authorization.approved_at = authorization.completed_at = now
            grant = tokens.grant_for_device_login(session, authorization, now=now)
            answer = tokens.issue(session, settings, grant, now=now)
            grants.append(
                BenchGrant(
                    client.client_id, basic_authorization(client.client_id, secret), answer["refresh_token"]
                )
            )
    return grants


def bench_settings(database_url: str, base_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=SECRET,
        public_base_url=base_url,
        rate_limit_incar_per_ip=UNLIMITED,
        rate_limit_incar_per_client=UNLIMITED,
        _env_file=None,
    )


def check_database(db: BenchDb, refreshed: int) -> str | None:
    """What is wrong with the grants after the run, or None: no grant revoked, one used refresh token
    per successful refresh."""
    with db.factory() as session:
        revoked = session.scalar(select(func.count()).where(InCarGrant.revoked_at.is_not(None)))
        used = session.scalar(select(func.count()).where(RefreshToken.used_at.is_not(None)))
    if revoked:
        return f"{revoked} grants were revoked"
    if used != refreshed:
        return f"{used} refresh tokens are used, but {refreshed} refreshes succeeded"
    return None


# --- the client ---------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    kind: str  # "refresh" or "bare"
    count: int = 0
    wall: float = 0.0
    server: ProcStat = field(default_factory=ProcStat)
    client_cpu: float = 0.0
    database_cpu: float | None = None
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.statuses["ok"]

    @property
    def per_core(self) -> float:
        return self.count / self.server.cpu if self.server.cpu else float("inf")

    def __add__(self, other: RoundResult) -> RoundResult:
        both_db = self.database_cpu is not None and other.database_cpu is not None
        return RoundResult(
            kind=self.kind,
            count=self.count + other.count,
            wall=self.wall + other.wall,
            server=self.server + other.server,
            client_cpu=self.client_cpu + other.client_cpu,
            database_cpu=(self.database_cpu or 0.0) + (other.database_cpu or 0.0) if both_db else None,
            statuses=self.statuses + other.statuses,
        )


Work = Callable[[httpx.Client, int], str]  # one request (the thread's n-th); "ok" or what went wrong


def refresher(grants: Sequence[BenchGrant]) -> Work:
    """Refreshes of the thread's own grants in turn, each with its newest refresh token."""

    def refresh(client: httpx.Client, n: int) -> str:
        grant = grants[n % len(grants)]
        response = client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token},
            headers={"Authorization": grant.authorization},
        )
        if response.status_code != 200:
            return f"{response.status_code} {response.text[:80]}"
        body = response.json()
        successor = body.get("refresh_token")
        if not body.get("access_token") or not successor or successor == grant.refresh_token:
            return "200 without a new refresh token"
        grant.refresh_token = successor
        return "ok"

    return refresh


def getter(path: str) -> Work:
    def get(client: httpx.Client, n: int) -> str:
        response = client.get(path)
        return "ok" if response.status_code == 200 else str(response.status_code)

    return get


def run_round(
    server: AppServer,
    kind: str,
    works: Sequence[Work],
    counts: Sequence[int],
    database_cpu: Callable[[], float] | None = None,
) -> RoundResult:
    """One round: thread i does ``counts[i]`` requests with ``works[i]`` on its own keep-alive
    connection; the server's CPU is read around the timed part only (the threads have opened their
    connections and wait on a barrier when the clock starts)."""
    result = RoundResult(kind=kind, count=sum(counts))
    lock = threading.Lock()
    start = threading.Barrier(len(works) + 1)

    def worker(work: Work, count: int) -> None:
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            opened = client.get("/healthz")
            if opened.status_code != 200:
                seen[f"healthz {opened.status_code}"] += 1
                start.abort()
            else:
                start.wait()
                for n in range(count):
                    seen[work(client, n)] += 1
        with lock:
            result.statuses.update(seen)

    threads = [threading.Thread(target=worker, args=pair) for pair in zip(works, counts, strict=True)]
    for thread in threads:
        thread.start()
    try:
        start.wait(timeout=120)
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        return result
    db_before = database_cpu() if database_cpu else None
    before, client_cpu, wall = server.stat(), time.process_time(), time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - wall
    result.server = server.stat() - before
    result.client_cpu = time.process_time() - client_cpu
    if database_cpu and db_before is not None:
        result.database_cpu = database_cpu() - db_before
    return result


# --- main ---------------------------------------------------------------------------------------------


def failures_of(results: Sequence[RoundResult]) -> dict[str, int]:
    failed: Counter[str] = Counter()
    for result in results:
        failed.update({f"{result.kind}: {k}": v for k, v in result.statuses.items() if k != "ok"})
        missing = result.count - result.ok - sum(v for k, v in result.statuses.items() if k != "ok")
        if missing:
            failed[f"{result.kind}: not sent"] += missing
    return dict(failed)


def report(
    args: argparse.Namespace, kind: str, refreshes: Sequence[RoundResult], bares: Sequence[RoundResult]
) -> None:
    ratios = []
    for number, result in enumerate(refreshes, 1):
        bare = max(bares[number - 1].per_core, bares[number].per_core)
        ratios.append(result.per_core / bare)
        print(
            f"  round {number}: {result.count} refreshes, {result.per_core:.0f}/s per core "
            f"({1000 * result.server.cpu / result.count:.2f} ms server CPU each, "
            f"{result.count / result.wall:.0f}/s wall); bare {bare:.0f}/s per core (the faster "
            f"neighbour); ratio {ratios[-1]:.3f}"
        )
    run = sum(refreshes[1:], refreshes[0])
    bare_run = sum(bares[1:], bares[0])
    print(
        f"  bare rounds ({args.bare}): {', '.join(f'{b.per_core:.0f}' for b in bares)}/s per core; "
        f"{1000 * bare_run.server.cpu / bare_run.count:.2f} ms server CPU per request"
    )
    server = run.server
    print(
        f"  server CPU per refresh {1000 * server.cpu / run.count:.2f} ms (user "
        f"{1000 * server.user / run.count:.2f}, system {1000 * server.system / run.count:.2f}); server CPU "
        f"{server.cpu / run.wall:.0%} and client CPU {run.client_cpu / run.wall:.0%} of wall time"
    )
    if run.database_cpu is not None:
        db_ms = 1000 * run.database_cpu / run.count
        print(
            f"  PostgreSQL backends: {db_ms:.2f} ms CPU per refresh (not in the per-core rate; with it: "
            f"{run.count / (server.cpu + run.database_cpu):.0f}/s per core)"
        )
    print(
        f"refreshes ({kind}, concurrency {args.concurrency}): {run.count} in {run.wall:.2f} s = "
        f"{run.count / run.wall:.0f}/s wall, {run.per_core:.0f}/s per core "
        f"(target >= {TARGET_PER_CORE:.0f}: {'met' if run.per_core >= TARGET_PER_CORE else 'NOT met'})"
    )
    print(
        f"bare {args.bare}: {bare_run.count} in {bare_run.wall:.2f} s, {bare_run.per_core:.0f}/s per core; "
        f"ratio refresh/bare {statistics.median(ratios):.3f}, the median of {len(ratios)} rounds "
        f"(all rounds together: {run.per_core / bare_run.per_core:.3f})"
    )
    print(
        f"Keycloak's published sizing: {KEYCLOAK_REFRESHES_PER_VCPU} refresh-token grants/s per vCPU; "
        f"this service: {run.per_core:.0f}/s per core ({run.per_core / KEYCLOAK_REFRESHES_PER_VCPU:.1f}×)"
    )
    if args.profile:
        print("  (profiled run: cProfile slows the Python side, so these figures understate the service)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--grants", type=int, default=None, help="cars with a user grant (default 200; --quick 40)"
    )
    parser.add_argument(
        "--refreshes", type=int, default=None, help="timed refreshes (default 3000; --quick 600)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed refreshes first (default 200; --quick 60)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="refresh rounds (default 3; --quick 2)")
    parser.add_argument(
        "--bare-requests", type=int, default=None, help="requests per bare round (default 1000; --quick 300)"
    )
    parser.add_argument("--bare", default="/healthz", help="the bare GET endpoint (default /healthz)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="client threads and connections (default 4)"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL; a fresh database is created there and dropped (default: SQLite)",
    )
    parser.add_argument("--quick", action="store_true", help="40 grants, 600 refreshes in 2 rounds")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server process to FILE")
    args = parser.parse_args(argv)
    args.grants = args.grants or (40 if args.quick else 200)
    args.refreshes = args.refreshes or (600 if args.quick else 3000)
    args.warmup = args.warmup if args.warmup is not None else (60 if args.quick else 200)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.bare_requests = args.bare_requests or (300 if args.quick else 1000)
    if (
        min(args.grants, args.refreshes, args.rounds, args.bare_requests, args.concurrency) < 1
        or args.warmup < 0
    ):
        parser.error("--grants, --refreshes, --rounds, --bare-requests and --concurrency must be at least 1")
    if args.concurrency > args.grants:
        parser.error("--concurrency must not exceed --grants (each thread owns some grants)")
    if args.rounds > args.refreshes:
        parser.error("--rounds must not exceed --refreshes")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="bench-incar-") as tmp,
        fresh_database(args.database_url, Path(tmp), "incar") as db,
    ):
        started = time.perf_counter()
        grants = seed_grants(db, bench_settings(db.url, "http://127.0.0.1"), args.grants)
        print(
            f"in-car refresh bench ({db.kind}): {len(grants)} cars with a user grant seeded in "
            f"{time.perf_counter() - started:.1f} s; one uvicorn worker; {args.refreshes} timed refreshes "
            f"in {args.rounds} rounds after {args.warmup}, {args.bare_requests} GET {args.bare} per bare "
            f"round, concurrency {args.concurrency}; load average {load_average()}"
        )
        owned = [grants[i :: args.concurrency] for i in range(args.concurrency)]
        refreshing = [refresher(mine) for mine in owned]
        bare = [getter(args.bare)] * args.concurrency
        refreshes: list[RoundResult] = []
        bares: list[RoundResult] = []
        warm: RoundResult | None = None
        server = AppServer(bench_settings, db.url, args.profile)
        try:
            if args.warmup:
                warm = run_round(server, "warm-up", refreshing, shares(args.warmup, args.concurrency))
            backends = PostgresBackends(db.engine) if db.kind == "postgresql" else None
            if warm is None or warm.ok == warm.count:
                bares.append(run_round(server, "bare", bare, shares(args.bare_requests, args.concurrency)))
                for count in shares(args.refreshes, args.rounds):
                    per_thread = shares(count, args.concurrency)
                    refreshes.append(run_round(server, "refresh", refreshing, per_thread, backends))
                    bares.append(
                        run_round(server, "bare", bare, shares(args.bare_requests, args.concurrency))
                    )
        finally:
            server.close()
        everything = ([warm] if warm else []) + refreshes + bares
        failed = failures_of(everything)
        if failed:
            print(f"ERROR requests that did not succeed: {failed}", file=sys.stderr)
            return 1
        problem = check_database(db, sum(r.ok for r in everything if r.kind != "bare"))
        if problem:
            print(f"ERROR after the run: {problem}", file=sys.stderr)
            return 1
        report(args, db.kind, refreshes, bares)
        print(f"load average after the run: {load_average()}")
    if args.profile and args.profile.exists():
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
