"""The order API under load: throughput, latency and errors from 10 to 500 concurrent clients, and
how soon the service answers normally once the load stops (issue #9).

Run from the repository root::

    .venv/bin/python bench/api_load.py [--quick] [--database-url URL] [--seconds S] [--levels 10,50,200,500]

Method
------
*Database.* A fresh SQLite file in a temporary directory, or with ``--database-url
postgresql+psycopg://user@host:port/db`` a fresh database ``bench_api_…`` on that server, dropped at
the end. Seeded through the services: three dealers, two models, an API key (all markets) and
``--orders`` orders (200) whose deliveries are months away.

*Server.* ``python -m onboarding.ops.cli serve --no-migrate`` in a subprocess (uvicorn, one worker, the
in-process scheduler on, every 2 s instead of 20 so that it runs during every level), with the
default settings otherwise: the pool, admission and timeouts are what a deployment gets.

*Client.* One asyncio process (uvloop), an ``aiohttp.ClientSession`` per level whose connection
limit is the level's number of clients, and as many workers, each sending one request after another:
nine in ten ``GET /api/v1/orders/{n}`` of a random seeded order, one in ten a ``PUT
/api/v1/orders/{n}`` of a new order delivered in ten days (so it is due: the scheduler invites it
during the load). (httpx's ``AsyncClient`` was tried first: on this machine it used 5 ms of CPU per
request at 50 connections, more than the server, and could not drive it.) Each level
runs 1 s (its clients connect and the queue fills; not counted), then ``--seconds`` (10; 3 with
``--quick``), which are counted; a 2 s warm-up at 10 clients comes before the first level.
When a level's time is up its clients go away as ``wrk`` does: requests still in flight are
abandoned (their connections closed), and only answered requests are counted.

*Figures per level.* Answered requests per second over the level's counted time, p50 and p99 latency, the
count of 5xx answers (a 503 is counted as one: the target is none at all) and of transport errors
(connection refused or reset, client timeout of 30 s), the server process's CPU share. *Recovery*:
from the moment the level's clients went away, the time until a ``GET /healthz`` and a ``GET`` of an
order, sent one after the other on a new connection, both answered 200.

Targets: no 5xx and no transport error at any level; 500-client throughput ÷ 10-client throughput
>= 0.8; recovery <= 1 s after every level. Exit code 1 on any 5xx, transport error or missed
recovery; the ratio is a measurement (printed as met or not met), exit code 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import uvloop
from benchdb import BenchDb, free_port, fresh_database
from sqlalchemy import text

from onboarding.api.keys import create_api_key
from onboarding.core.db import transaction
from onboarding.core.logconfig import configure_logging
from vehicles.models import Powertrain
from vehicles.schemas import DealerIn, OrderIn, VehicleModelIn
from vehicles.service import upsert_dealer, upsert_model, upsert_order, validate_order

SECRET = "bench-secret-" + "x" * 40
RATIO_TARGET = 0.8
RECOVERY_TARGET_SECONDS = 1.0
CLIENT_TIMEOUT_SECONDS = 30.0
RAMP_SECONDS = 1.0
PUT_SHARE = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = {"SE": ["navigation", "remote_climate"], "DE": ["navigation"], "US": ["navigation"]}


# --- database ---------------------------------------------------------------------------------------


def order_fields(number: int, delivery: str) -> dict[str, str | None]:
    return {
        "dealer_code": "SE-01",
        "model_code": "E40",
        "vin": None,
        "buyer_first_name": "Astrid",
        "buyer_last_name": "Lindqvist",
        "buyer_email": f"buyer{number}@example.com",
        "buyer_phone": "+46 70 123 45 67",
        "country": "SE",
        "language": "sv",
        "planned_delivery_date": delivery,
    }


def seed(db: BenchDb, orders: int) -> str:
    """Reference data, an API key (returned) and ``orders`` orders ``BENCH-0`` … far from due."""
    now = datetime.now(UTC)
    with transaction(db.factory) as session:
        for code, name, country, language in (
            ("SE-01", "Centre Stockholm", "SE", "sv"),
            ("US-01", "Center Boston", "US", "en"),
            ("DE-01", "Zentrum Berlin", "DE", "de"),
        ):
            upsert_dealer(
                session,
                code,
                DealerIn(
                    name=name, country=country, email=f"{code.lower()}@dealer.example", language=language
                ),
                now,
            )
        for code, powertrain, pin in (("E40", Powertrain.BEV, True), ("S90", Powertrain.ICE, False)):
            upsert_model(
                session,
                code,
                VehicleModelIn(
                    name=f"Nordlicht {code}",
                    model_year=2027,
                    powertrain=powertrain,
                    requires_security_pin=pin,
                    offers_data_pass=pin,
                    services=SERVICES,
                ),
                now,
            )
        _key, plaintext = create_api_key(session, "load bench", now=now)
    far = (now + timedelta(days=120)).date().isoformat()
    with transaction(db.factory) as session:
        for n in range(orders):
            body = OrderIn.model_validate(order_fields(n, far))
            clean = validate_order(session, f"BENCH-{n}", body, today=now.date())
            upsert_order(session, clean, now=now, actor="bench", lead_days=14)
    return plaintext


def invitations_created(db: BenchDb) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM invitations")).scalar_one())


# --- server -----------------------------------------------------------------------------------------


class Server:
    """``onboarding serve`` in a subprocess, in a working directory of its own."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ONBOARDING_DATABASE_URL": database_url,
            "ONBOARDING_SECRET_KEY": SECRET,
            "ONBOARDING_PUBLIC_BASE_URL": self.base_url,
            "ONBOARDING_SCHEDULER_INTERVAL_SECONDS": "2",
        }
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "onboarding.ops.cli", "serve", "--port", str(self.port), "--no-migrate"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer within 60 s")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


# --- load ---------------------------------------------------------------------------------------------


@dataclass
class Level:
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    recovery_seconds: float = float("inf")
    recovery_statuses: tuple[int, int] = (0, 0)
    health_seconds: float = float("inf")

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Load:
    def __init__(self, server: Server, api_key: str, orders: int, put_share: float) -> None:
        self.server = server
        self.put_share = put_share
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.orders = orders
        self.new_orders = 0
        self.first_error = ""
        self.due = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()

    async def one_request(self, client: aiohttp.ClientSession, chooser: random.Random) -> int:
        if chooser.random() < self.put_share:
            self.new_orders += 1
            number = f"LOAD-{os.getpid()}-{self.new_orders}"
            body = order_fields(100_000 + self.new_orders, self.due)
            sending = client.put(f"/api/v1/orders/{number}", json=body, headers=self.headers)
        else:
            number = f"BENCH-{chooser.randrange(self.orders)}"
            sending = client.get(f"/api/v1/orders/{number}", headers=self.headers)
        async with sending as response:
            answer = await response.read()
        if response.status >= 500 and not self.first_error:
            self.first_error = answer.decode(errors="replace")
        return response.status

    def client(self, connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            self.server.base_url,
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS),
        )

    async def run(self, clients: int, seconds: float, *, record: bool = True) -> Level:
        level = Level(clients)
        client = self.client(clients)
        # The clients connect and fill the queue first; answers are counted from then on.
        counted_from = time.monotonic() + RAMP_SECONDS
        deadline = counted_from + seconds

        async def worker(seed: int) -> None:
            chooser = random.Random(seed)
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    status = await self.one_request(client, chooser)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    level.transport_errors[type(exc).__name__] += 1
                    continue
                done = time.monotonic()
                if counted_from <= done <= deadline:
                    level.statuses[status] += 1
                    level.latencies.append(done - sent)

        workers = [asyncio.create_task(worker(n)) for n in range(clients)]
        await asyncio.sleep(counted_from - time.monotonic())
        cpu_before = self.server.cpu_seconds()
        client_cpu_before = time.process_time()
        await asyncio.sleep(deadline - time.monotonic())
        # Time is up: the clients go away, as wrk's do, abandoning what they have in flight.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
        stopped = time.monotonic()
        level.seconds = deadline - counted_from
        level.server_cpu = self.server.cpu_seconds() - cpu_before
        level.client_cpu = time.process_time() - client_cpu_before
        if record:
            level.recovery_seconds, level.recovery_statuses, level.health_seconds = await self.recovery(
                stopped
            )
        return level

    async def recovery(self, stopped: float) -> tuple[float, tuple[int, int], float]:
        """From the load's end until a health check and an order read both answered 200 (and when
        the health check had)."""
        async with self.client(1) as client:
            async with client.get("/healthz") as health:
                await health.read()
            healthy = time.monotonic() - stopped
            async with client.get("/api/v1/orders/BENCH-0", headers=self.headers) as order:
                await order.read()
        return time.monotonic() - stopped, (health.status, order.status), healthy


def report_level(level: Level) -> str:
    shed = level.statuses.get(503, 0)
    errors = sum(level.transport_errors.values())
    recovery_ok = level.recovery_statuses == (200, 200) and level.recovery_seconds <= RECOVERY_TARGET_SECONDS
    return (
        f"  {level.clients:>4} clients: {level.rate:7.1f} req/s, p50 {level.percentile(0.5) * 1000:6.1f} ms, "
        f"p99 {level.percentile(0.99) * 1000:7.1f} ms, 5xx {level.server_errors} (of which 503 {shed}), "
        f"transport errors {errors}, CPU server {level.server_cpu / level.seconds:4.0%} "
        f"client {level.client_cpu / level.seconds:4.0%}, "
        f"recovery {level.recovery_seconds:.3f} s (health {level.health_seconds:.3f} s) "
        f"{level.recovery_statuses} "
        f"({'met' if recovery_ok else 'NOT met'})"
        + (f"; other statuses {dict(level.statuses)}" if set(level.statuses) - {200, 201} else "")
        + (f"; {dict(level.transport_errors)}" if errors else "")
    )


async def run_levels(server: Server, api_key: str, args: argparse.Namespace) -> list[Level]:
    load = Load(server, api_key, args.orders, args.put_share)
    await load.run(10, 1.0, record=False)  # warm-up: caches, the first scheduler pass
    await asyncio.sleep(0.5)
    levels = []
    for clients in args.levels:
        level = await load.run(clients, args.seconds)
        print(report_level(level), flush=True)
        if load.first_error:
            print("    first 5xx answer:", load.first_error[:500])
            load.first_error = ""
        levels.append(level)
        await asyncio.sleep(0.5)
    return levels


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="a PostgreSQL server (default: SQLite in a temporary directory)"
    )
    parser.add_argument("--quick", action="store_true", help="3 s per level instead of 10")
    parser.add_argument("--seconds", type=float, help="time per level")
    parser.add_argument("--levels", default="10,50,200,500", help="concurrent clients per level")
    parser.add_argument("--orders", type=int, default=200, help="seeded orders the GETs read")
    parser.add_argument("--put-share", type=float, default=PUT_SHARE, help="share of PUTs (0.1)")
    args = parser.parse_args(argv)
    args.levels = [int(n) for n in args.levels.split(",")]
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    with (
        tempfile.TemporaryDirectory(prefix="bench_api_") as tmp,
        fresh_database(args.database_url, Path(tmp), "api") as db,
    ):
        api_key = seed(db, args.orders)
        server = Server(db.url, Path(tmp))
        try:
            print(
                f"api load ({db.kind}): {args.orders} orders, levels {args.levels}, "
                f"{args.seconds:g} s each, {args.put_share:.0%} PUTs",
                flush=True,
            )
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                levels = runner.run(run_levels(server, api_key, args))
            invited = invitations_created(db)
        finally:
            server.close()
        server_log = server.log_path.read_text()
    tracebacks = server_log.count("Traceback")
    if tracebacks:
        kept = Path(tempfile.gettempdir()) / "bench_api_load_server.log"
        kept.write_text(server_log)
    by_clients = {level.clients: level for level in levels}
    failures = sum(level.server_errors + sum(level.transport_errors.values()) for level in levels)
    missed_recovery = [
        level.clients
        for level in levels
        if level.recovery_statuses != (200, 200) or level.recovery_seconds > RECOVERY_TARGET_SECONDS
    ]
    print(f"  scheduler during the load: {invited} invitations created for the orders PUT (due in 10 days)")
    if 10 in by_clients and 500 in by_clients and by_clients[10].rate:
        ratio = by_clients[500].rate / by_clients[10].rate
        verdict = "met" if ratio >= RATIO_TARGET else "not met"
        print(f"throughput 500 / 10 clients: {ratio:.2f} (target >= {RATIO_TARGET}: {verdict})")
    print(
        f"5xx and transport errors: {failures} (target 0: {'met' if not failures else 'NOT met'}); "
        f"recovery <= {RECOVERY_TARGET_SECONDS:g} s: "
        + ("met at every level" if not missed_recovery else f"NOT met at {missed_recovery}")
    )
    if tracebacks:
        print(f"  the server logged {tracebacks} tracebacks: see {kept}")
    return 1 if failures or missed_recovery else 0


if __name__ == "__main__":
    sys.exit(main())
