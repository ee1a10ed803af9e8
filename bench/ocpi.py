"""OCPI 2.2.1 real-time authorisations per core and their latency at 200 requests/s (issue 14, "What
must show it").

Run from the repository root::

    .venv/bin/python bench/ocpi.py [--tokens 100000] [--concurrency 4] [--rate 200] [--quick]
    .venv/bin/python bench/ocpi.py --database-url postgresql+psycopg://user@host:port/db

Method
------
*Database.* A fresh SQLite file in a temporary directory (migrated with ``onboarding.ops.migrations``), or,
with ``--database-url postgresql+psycopg://user@host:port/db``, a fresh database ``bench_ocpi_…`` created
on that server and dropped at the end. Seeded with ``--tokens`` charging cards (100,000; ``--quick``
5,000), written in bulk with Core ``INSERT``s as the charging service leaves them: one verified ID
(``create_account``), one BEV model, and per card a car, a charging contract (a real eMAID,
``make_emaid``) and a delivered card (7-byte RFID UID). Every ``--blocked-every``-th card (10th) is
blocked and every ``--ended-every``-th contract (25th, of the cards not blocked) has ended, so the
answers are a mix of ALLOWED, BLOCKED and EXPIRED. ``--parties`` charge-point operators (4) are
registered with ``ocpi_2_2_1.add_party``; each client thread presents one's token
(``Authorization: Token <base64>``).

*Server.* The application (``create_app``) runs under uvicorn, one worker, in its own process
(``multiprocessing``, spawn), as ``onboarding serve`` runs it (``log_level="warning"``, no scheduler).
The OCPI per-party limit (the setting ``rate_limit_ocpi_per_party``) is raised to 1,000,000/second in
the server's settings, so the limiter counts
every authorisation as it would in service but refuses none.

*Request.* ``POST /ocpi/2.2.1/tokens/{uid}/authorize?type=RFID`` with a LocationReferences body (as a
charge point sends it), for a card drawn at random (a fixed seed) from all of them. It counts when the
answer is HTTP 200, OCPI status 1000, the token's uid, and the ``allowed`` value its card was seeded with;
any other answer makes the run fail (exit 1). The bare request is ``GET /healthz`` (``--bare`` names
another GET), the application's cheapest endpoint (uvicorn, the middleware, routing and a thread-pool
hop; no database), on the same kind of connection.

*1. Throughput (per core).* ``--concurrency`` client threads (4), each with its own keep-alive
``httpx.Client``, send as fast as they get answers. After ``--warmup`` untimed authorisations, bare and
authorisation rounds alternate (bare, auth, bare, …, bare). The server process's CPU (``utime +
stime`` of ``/proc/<pid>/stat``, all its threads) is read around each round: requests / server CPU
seconds is the rate per core. Each round's ratio is its rate over the faster of its two neighbouring
bare rounds; the median is printed. Target: >= 0.5. With PostgreSQL the bench database's backends'
CPU is printed separately (not in the per-core rate; with SQLite the database work is in the server).

*2. Latency at a fixed offered rate.* An open-loop pacer: request k is due at ``start + k / --rate``
(every 5 ms at 200/s) for ``--seconds`` (30; ``--quick`` 4); ``--latency-threads`` client threads (8)
take the due requests in turn, each sleeping until its request's time. The latency is from the due
time to the answer, so a request that waited for a free client thread (the server being slow) counts
its wait (no coordinated omission); the time from sending is printed as well. Target: p99 < 20 ms.

The machine's load average is printed before and after: the bench shares the cores with whatever
else runs, and the client threads run on the same two cores as the server.

``--profile FILE``: cProfile, timed with each thread's CPU clock, in every thread of the server process
for its whole serving time, written to FILE and summarised; a profiled run's figures are not the result.

Exit code: 0 when every request got the expected answer (even if a target is missed: this is a
measurement), 1 otherwise (counts by answer are printed).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
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
from typing import cast

import httpx
from benchdb import BenchDb, fresh_database
from benchserver import AppServer, PostgresBackends, ProcStat, load_average, print_profile, shares
from sqlalchemy import Table, insert

from onboarding.core.db import transaction
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings
from onboarding.identity.accounts import NewAccount, create_account
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging.emaid import make_emaid
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Powertrain, Vehicle
from vehicles.schemas import VehicleModelIn
from vehicles.service import upsert_model

SECRET = "bench-secret-" + "x" * 40
TARGET_RATIO = 0.5
TARGET_P99_MS = 20.0
PARTY_UNLIMITED = "1000000/second"
MODEL_CODE = "BENCH-BEV"
CHUNK = 5_000
LOCATION = json.dumps({"location_id": "SE-STO-0042", "evse_uids": ["SE*NLM*E0042*1"]}).encode()
AUTHORIZE_PATH = f"/ocpi/{ocpi.VERSION}/tokens/{{uid}}/authorize?type=RFID"


def card_uid(n: int) -> str:
    return f"04{n:012X}"


@dataclass(frozen=True)
class Cards:
    """The seeded cards by number: uid ``card_uid(n)`` and the answer its authorisation must give."""

    expected: list[str]  # AllowedType values

    def __len__(self) -> int:
        return len(self.expected)


# --- database ---------------------------------------------------------------------------------------


def expected_answer(n: int, blocked_every: int, ended_every: int) -> ocpi.AllowedType:
    if n % blocked_every == 0:
        return ocpi.AllowedType.BLOCKED
    if n % ended_every == 1:
        return ocpi.AllowedType.EXPIRED
    return ocpi.AllowedType.ALLOWED


def seed_cards(db: BenchDb, settings: Settings, args: argparse.Namespace) -> Cards:
    """One ID, a BEV model, and ``args.tokens`` cars each with a contract and a card (Core, in chunks)."""
    now = datetime.now(UTC)
    today = date(now.year, now.month, now.day)
    vehicles = cast(Table, Vehicle.__table__)
    contracts = cast(Table, ChargingContract.__table__)
    cards = cast(Table, ChargingCard.__table__)
    expected = [expected_answer(n, args.blocked_every, args.ended_every) for n in range(args.tokens)]
    with transaction(db.factory) as session:
        password = "Charging-bench driver 2027"
        account = create_account(
            session,
            NewAccount(
                email="ocpi@bench.example",
                password=password,
                password_confirmation=password,
                first_name="Astrid",
                last_name="Lindqvist",
                birth_date=date(1980, 1, 1),
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
        upsert_model(
            session,
            MODEL_CODE,
            VehicleModelIn(
                name="Bench BEV",
                model_year=2027,
                powertrain=Powertrain.BEV,
                requires_security_pin=False,
                offers_data_pass=False,
                services={},
            ),
            now,
        )
        account_id = account.id
    for first in range(0, args.tokens, CHUNK):
        numbers = range(first, min(first + CHUNK, args.tokens))
        with transaction(db.factory) as session:
            vehicle_ids = list(
                session.scalars(
                    insert(vehicles).returning(vehicles.c.id, sort_by_parameter_order=True),
                    [
                        {"vin": None, "model_code": MODEL_CODE, "country": "SE", "created_at": now}
                        for _ in numbers
                    ],
                )
            )
            contract_ids = list(
                session.scalars(
                    insert(contracts).returning(contracts.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "emaid": str(
                                make_emaid(settings.emsp_country_code, settings.emsp_party_id, f"C{n:08d}")
                            ),
                            "account_id": account_id,
                            "vehicle_id": vehicle_id,
                            "created_at": now,
                            "ended_at": now if expected[n] is ocpi.AllowedType.EXPIRED else None,
                            "ended_reason": "ended" if expected[n] is ocpi.AllowedType.EXPIRED else None,
                        }
                        for n, vehicle_id in zip(numbers, vehicle_ids, strict=True)
                    ],
                )
            )
            session.execute(
                insert(cards),
                [
                    {
                        "contract_id": contract_id,
                        "uid": card_uid(n),
                        "visual_number": f"NLM-{n:010d}",
                        "state": "blocked" if expected[n] is ocpi.AllowedType.BLOCKED else "delivered",
                        "requested_at": now,
                        "expected_by": today,
                        "state_changed_at": now,
                        "last_updated": now,
                    }
                    for n, contract_id in zip(numbers, contract_ids, strict=True)
                ],
            )
    return Cards([answer.value for answer in expected])


def register_parties(db: BenchDb, settings: Settings, count: int) -> list[str]:
    """``count`` charge-point operators; the ``Authorization`` header each calls us with."""
    headers = []
    with transaction(db.factory) as session:
        for i in range(count):
            _party, token = ocpi.add_party(
                session,
                settings,
                country_code="SE",
                party_id=f"C{i:02d}",
                name=f"Bench operator {i}",
                tokens_url=None,
                their_token=None,
                now=datetime.now(UTC),
            )
            headers.append("Token " + base64.b64encode(token.encode()).decode("ascii"))
    return headers


def bench_settings(database_url: str, base_url: str) -> Settings:
    return Settings(database_url=database_url, secret_key=SECRET, public_base_url=base_url, _env_file=None)


def server_settings(database_url: str, base_url: str) -> Settings:
    """The server's: no per-operator rate limit, which the bench's few operators would hit."""
    return bench_settings(database_url, base_url).model_copy(
        update={"rate_limit_ocpi_per_party": PARTY_UNLIMITED}
    )


# --- the client ---------------------------------------------------------------------------------------


Work = Callable[[httpx.Client, int], str]  # one request (the thread's n-th); "ok" or what went wrong


def authorizer(cards: Cards, authorization: str, seed: int) -> Work:
    """Authorisations of cards drawn at random, each checked against the answer it was seeded with."""
    draw = random.Random(seed)
    headers = {"Authorization": authorization, "Content-Type": "application/json"}

    def authorize(client: httpx.Client, n: int) -> str:
        number = draw.randrange(len(cards))
        uid = card_uid(number)
        response = client.post(AUTHORIZE_PATH.format(uid=uid), content=LOCATION, headers=headers)
        if response.status_code != 200:
            return f"{response.status_code} {response.text[:80]}"
        body = response.json()
        data = body.get("data") or {}
        if body.get("status_code") != ocpi.Status.SUCCESS or (data.get("token") or {}).get("uid") != uid:
            return f"200 with status {body.get('status_code')} for another token"
        allowed = data.get("allowed")
        return "ok" if allowed == cards.expected[number] else f"{allowed} for a {cards.expected[number]} card"

    return authorize


def getter(path: str) -> Work:
    def get(client: httpx.Client, n: int) -> str:
        response = client.get(path)
        return "ok" if response.status_code == 200 else str(response.status_code)

    return get


@dataclass
class RoundResult:
    kind: str  # "authorize", "bare", "warm-up" or "paced"
    count: int = 0
    wall: float = 0.0
    server: ProcStat = field(default_factory=ProcStat)
    client_cpu: float = 0.0
    database_cpu: float | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # paced: due time → answer, seconds
    service: list[float] = field(default_factory=list)  # paced: sent → answer, seconds

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


def _timed(
    server: AppServer,
    result: RoundResult,
    threads: Sequence[threading.Thread],
    start: threading.Barrier,
    database_cpu: Callable[[], float] | None,
) -> RoundResult:
    """Starts ``threads`` (which open their connections, then wait on ``start``), and reads the
    server's CPU around the part after the barrier."""
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


def _opened(client: httpx.Client, seen: Counter[str], start: threading.Barrier) -> bool:
    opened = client.get("/healthz")
    if opened.status_code != 200:
        seen[f"healthz {opened.status_code}"] += 1
        start.abort()
        return False
    start.wait()
    return True


def run_round(
    server: AppServer,
    kind: str,
    works: Sequence[Work],
    counts: Sequence[int],
    database_cpu: Callable[[], float] | None = None,
) -> RoundResult:
    """One closed-loop round: thread i does ``counts[i]`` requests with ``works[i]`` back to back on its
    own keep-alive connection."""
    result = RoundResult(kind=kind, count=sum(counts))
    lock = threading.Lock()
    start = threading.Barrier(len(works) + 1)

    def worker(work: Work, count: int) -> None:
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            if _opened(client, seen, start):
                for n in range(count):
                    seen[work(client, n)] += 1
        with lock:
            result.statuses.update(seen)

    threads = [threading.Thread(target=worker, args=pair) for pair in zip(works, counts, strict=True)]
    return _timed(server, result, threads, start, database_cpu)


def run_paced(
    server: AppServer,
    works: Sequence[Work],
    rate: float,
    seconds: float,
    database_cpu: Callable[[], float] | None = None,
) -> RoundResult:
    """Open loop: request k is due at ``begin + k / rate``; the threads take the due requests in turn
    (a shared counter), sleep until the request is due, send it, and record due → answer."""
    total = max(1, round(rate * seconds))
    result = RoundResult(kind="paced", count=total)
    lock = threading.Lock()
    next_slot = 0
    begin = 0.0

    def take() -> int:
        nonlocal next_slot
        with lock:
            slot, next_slot = next_slot, next_slot + 1
            return slot

    def worker(work: Work) -> None:
        seen: Counter[str] = Counter()
        latencies: list[float] = []
        service: list[float] = []
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            if _opened(client, seen, start):
                n = 0
                while (slot := take()) < total:
                    due = begin + slot / rate
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    sent = time.perf_counter()
                    seen[work(client, n)] += 1
                    answered = time.perf_counter()
                    latencies.append(answered - due)
                    service.append(answered - sent)
                    n += 1
        with lock:
            result.statuses.update(seen)
            result.latencies.extend(latencies)
            result.service.extend(service)

    threads = [threading.Thread(target=worker, args=(work,)) for work in works]

    def starting() -> None:
        nonlocal begin
        begin = time.perf_counter() + 0.01

    # The clock starts once every thread has its connection: the barrier's action sets it.
    start = threading.Barrier(len(works) + 1, action=starting)
    return _timed(server, result, threads, start, database_cpu)


# --- main ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``, in milliseconds."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return 1000 * ordered[rank - 1]


def failures_of(results: Sequence[RoundResult]) -> dict[str, int]:
    failed: Counter[str] = Counter()
    for result in results:
        failed.update({f"{result.kind}: {k}": v for k, v in result.statuses.items() if k != "ok"})
        missing = result.count - result.ok - sum(v for k, v in result.statuses.items() if k != "ok")
        if missing:
            failed[f"{result.kind}: not sent"] += missing
    return dict(failed)


def report_throughput(
    args: argparse.Namespace, kind: str, rounds: Sequence[RoundResult], bares: Sequence[RoundResult]
) -> float:
    ratios = []
    for number, result in enumerate(rounds, 1):
        bare = max(bares[number - 1].per_core, bares[number].per_core)
        ratios.append(result.per_core / bare)
        print(
            f"  round {number}: {result.count} authorisations, {result.per_core:.0f}/s per core "
            f"({1000 * result.server.cpu / result.count:.2f} ms server CPU each, "
            f"{result.count / result.wall:.0f}/s wall); bare {bare:.0f}/s per core (the faster "
            f"neighbour); ratio {ratios[-1]:.3f}"
        )
    run = sum(rounds[1:], rounds[0])
    bare_run = sum(bares[1:], bares[0])
    print(
        f"  bare rounds ({args.bare}): {', '.join(f'{b.per_core:.0f}' for b in bares)}/s per core; "
        f"{1000 * bare_run.server.cpu / bare_run.count:.2f} ms server CPU per request"
    )
    server = run.server
    print(
        f"  server CPU per authorisation {1000 * server.cpu / run.count:.2f} ms (user "
        f"{1000 * server.user / run.count:.2f}, system {1000 * server.system / run.count:.2f}); server CPU "
        f"{server.cpu / run.wall:.0%} and client CPU {run.client_cpu / run.wall:.0%} of wall time"
    )
    if run.database_cpu is not None:
        db_ms = 1000 * run.database_cpu / run.count
        print(
            f"  PostgreSQL backends: {db_ms:.2f} ms CPU per authorisation (not in the per-core rate; "
            f"with it: {run.count / (server.cpu + run.database_cpu):.0f}/s per core)"
        )
    ratio = statistics.median(ratios)
    print(
        f"authorisations ({kind}, {args.tokens} tokens, concurrency {args.concurrency}): {run.count} in "
        f"{run.wall:.2f} s = {run.count / run.wall:.0f}/s wall, {run.per_core:.0f}/s per core"
    )
    print(
        f"bare {args.bare}: {bare_run.count} in {bare_run.wall:.2f} s, {bare_run.per_core:.0f}/s per core; "
        f"ratio authorisation/bare {ratio:.3f}, the median of {len(ratios)} rounds (all rounds together: "
        f"{run.per_core / bare_run.per_core:.3f}; target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})"
    )
    return ratio


def report_latency(args: argparse.Namespace, paced: RoundResult) -> float:
    p50, p90, p99 = (percentile(paced.latencies, f) for f in (0.50, 0.90, 0.99))
    worst = 1000 * max(paced.latencies)
    s50, s99 = percentile(paced.service, 0.50), percentile(paced.service, 0.99)
    late = sum(1 for due, sent in zip(paced.latencies, paced.service, strict=True) if due - sent > 0.001)
    print(
        f"  offered {args.rate:.0f}/s for {args.seconds:.0f} s: {paced.count} authorisations in "
        f"{paced.wall:.2f} s ({paced.count / paced.wall:.0f}/s achieved) by {args.latency_threads} threads; "
        f"server CPU {paced.server.cpu / paced.wall:.0%} of a core "
        f"({1000 * paced.server.cpu / paced.count:.2f} ms each)"
        + (
            f", PostgreSQL backends {1000 * paced.database_cpu / paced.count:.2f} ms each"
            if paced.database_cpu is not None
            else ""
        )
    )
    print(
        f"  from sending: p50 {s50:.1f} ms, p99 {s99:.1f} ms; {late} requests sent more than 1 ms after "
        f"they were due (no client thread free)"
    )
    print(
        f"latency at {args.rate:.0f}/s (due time → answer): p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 "
        f"{p99:.1f} ms, max {worst:.1f} ms (target p99 < {TARGET_P99_MS:.0f} ms: "
        f"{'met' if p99 < TARGET_P99_MS else 'NOT met'})"
    )
    return p99


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--tokens", type=int, default=None, help="charging cards (default 100000; --quick 5000)"
    )
    parser.add_argument("--blocked-every", type=int, default=10, help="every n-th card is blocked (10)")
    parser.add_argument("--ended-every", type=int, default=25, help="every n-th contract has ended (25)")
    parser.add_argument("--parties", type=int, default=4, help="registered operators (default 4)")
    parser.add_argument(
        "--authorizations", type=int, default=None, help="timed authorisations (default 6000; --quick 800)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="authorisation rounds (default 3; --quick 2)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed authorisations first (default 300; --quick 100)"
    )
    parser.add_argument(
        "--bare-requests", type=int, default=None, help="requests per bare round (default 2000; --quick 300)"
    )
    parser.add_argument("--bare", default="/healthz", help="the bare GET endpoint (default /healthz)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="client threads of the throughput rounds (default 4)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="offered authorisations/s (default 200)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of the paced run (default 30; --quick 4)"
    )
    parser.add_argument(
        "--latency-threads", type=int, default=8, help="client threads of the paced run (default 8)"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server URL; a fresh database is created there and dropped (default: SQLite)",
    )
    parser.add_argument("--quick", action="store_true", help="5000 tokens, shorter rounds (about 15 s)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server process to FILE")
    args = parser.parse_args(argv)
    args.tokens = args.tokens or (5_000 if args.quick else 100_000)
    args.authorizations = args.authorizations or (800 if args.quick else 6000)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (100 if args.quick else 300)
    args.bare_requests = args.bare_requests or (300 if args.quick else 2000)
    args.seconds = args.seconds or (4.0 if args.quick else 30.0)
    counts = (args.tokens, args.authorizations, args.rounds, args.bare_requests, args.concurrency)
    if min(*counts, args.parties, args.latency_threads, args.blocked_every, args.ended_every) < 1:
        parser.error("counts must be at least 1")
    if args.warmup < 0 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--warmup must not be negative; --rate and --seconds must be positive")
    if args.parties > 100:
        parser.error("--parties: at most 100 (party ids C00-C99)")
    if args.rounds > args.authorizations:
        parser.error("--rounds must not exceed --authorizations")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ocpi-") as tmp,
        fresh_database(args.database_url, Path(tmp), "ocpi") as db,
    ):
        started = time.perf_counter()
        settings = bench_settings(db.url, "http://127.0.0.1")
        cards = seed_cards(db, settings, args)
        parties = register_parties(db, settings, args.parties)
        mix = ", ".join(f"{count} {answer}" for answer, count in sorted(Counter(cards.expected).items()))
        print(
            f"OCPI authorisation bench ({db.kind}): {len(cards)} tokens seeded in "
            f"{time.perf_counter() - started:.1f} s ({mix}), "
            f"{args.parties} operators; one uvicorn worker; load average {load_average()}"
        )
        authorizing = [authorizer(cards, parties[i % args.parties], i) for i in range(args.concurrency)]
        bare = [getter(args.bare)] * args.concurrency
        rounds: list[RoundResult] = []
        bares: list[RoundResult] = []
        warm: RoundResult | None = None
        paced: RoundResult | None = None
        server = AppServer(server_settings, db.url, args.profile)
        try:
            backends = PostgresBackends(db.engine) if db.kind == "postgresql" else None
            if args.warmup:
                warm = run_round(server, "warm-up", authorizing, shares(args.warmup, args.concurrency))
            if warm is None or warm.ok == warm.count:
                bares.append(run_round(server, "bare", bare, shares(args.bare_requests, args.concurrency)))
                for count in shares(args.authorizations, args.rounds):
                    per_thread = shares(count, args.concurrency)
                    rounds.append(run_round(server, "authorize", authorizing, per_thread, backends))
                    bares.append(
                        run_round(server, "bare", bare, shares(args.bare_requests, args.concurrency))
                    )
                pacing = [
                    authorizer(cards, parties[i % args.parties], 1000 + i)
                    for i in range(args.latency_threads)
                ]
                paced = run_paced(server, pacing, args.rate, args.seconds, backends)
        finally:
            server.close()
        everything = ([warm] if warm else []) + rounds + bares + ([paced] if paced else [])
        failed = failures_of(everything)
        if failed:
            print(f"ERROR requests without the expected answer: {failed}", file=sys.stderr)
            return 1
        assert paced is not None
        print("1. throughput against the bare endpoint, per core of the server process")
        report_throughput(args, db.kind, rounds, bares)
        print(f"2. latency at a fixed offered rate ({db.kind})")
        report_latency(args, paced)
        print(f"load average after the run: {load_average()}")
        if args.profile:
            print("  (profiled run: cProfile slows the Python side, so these figures understate the service)")
    if args.profile and args.profile.exists():
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
