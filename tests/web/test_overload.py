"""Under load and when the database is busy the service answers, quickly: requests beyond the
admission limit get 503 problems with Retry-After, a request holds at most one connection so a small
pool never deadlocks, SQLite's write lock is waited for briefly, and the scheduler has a pool of its
own (issue #9)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message

from notifications.models import DevMailboxMessage
from onboarding.api.models import ApiKey
from onboarding.core.clock import utcnow
from onboarding.core.db import engine_of, make_engine, make_session_factory
from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.helpers import order_payload, put_order


def _payload(days: int = 30) -> dict[str, Any]:
    return order_payload((utcnow() + timedelta(days=days)).date())


def _small_pool(db: Database, size: int, **kwargs: Any) -> sessionmaker[Session]:
    return make_session_factory(
        make_engine(db.url, pool_size=size, max_overflow=0, pool_timeout=20, **kwargs)
    )


@contextmanager
def _writes_blocked(db: Database) -> Iterator[Connection]:
    """A transaction of another process's kind that has written the API keys and not ended: on
    SQLite it holds the single write lock, on PostgreSQL the keys' row locks."""
    with db.engine.connect() as conn:
        conn.execute(text("UPDATE api_keys SET name = name"))
        try:
            yield conn
        finally:
            conn.rollback()


def _is_busy_problem(response: Any) -> bool:
    return (
        response.status_code == 503
        and response.headers["content-type"].startswith("application/problem+json")
        and int(response.headers["retry-after"]) >= 1
        and response.json()["status"] == 503
    )


def test_excess_requests_are_answered_503_at_once_and_the_service_recovers(
    db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    tiny = settings.model_copy(
        update={"requests_in_flight": 1, "requests_waiting": 1, "request_queue_seconds": 0.5}
    )
    put_order(db.factory, settings, "SO-1", utcnow(), **_payload())
    app = create_app(tiny, session_factory=db.factory)
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        with _writes_blocked(db):
            # A PUT notes the key's use and so waits for the lock, holding the only slot.
            occupying = pool.submit(client.put, "/api/v1/orders/SO-2", json=_payload(), headers=api_headers)
            deadline = time.monotonic() + 5
            while app.state.admission.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app.state.admission.in_flight == 1
            # One may wait (and gives up after 0.5 s); the others are answered at once.
            waiting = pool.submit(client.get, "/api/v1/orders/SO-1", headers=api_headers)
            time.sleep(0.05)
            started = time.monotonic()
            refused = [client.get("/api/v1/orders/SO-1", headers=api_headers) for _ in range(5)]
            refused_within = time.monotonic() - started
            timed_out = waiting.result(timeout=10)
            page = client.get("/dev/mailbox")  # pages share the admission and answer as pages
        stored = occupying.result(timeout=30)
        started = time.monotonic()
        after = client.get("/api/v1/orders/SO-1", headers=api_headers)
        answered_after = time.monotonic() - started
    assert all(_is_busy_problem(r) for r in refused), [r.text for r in refused]
    assert refused_within < 1.0
    assert _is_busy_problem(timed_out), timed_out.text
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"]
    assert stored.status_code == 201, stored.text
    assert after.status_code == 200 and answered_after < 1.0


def test_an_api_request_needs_one_connection(
    db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    factory = _small_pool(db, 1)
    try:
        with TestClient(create_app(settings, session_factory=factory)) as client:
            stored = client.put("/api/v1/orders/SO-1", json=_payload(), headers=api_headers)
            read = client.get("/api/v1/orders/SO-1", headers=api_headers)
            with db.engine.begin() as conn:  # the key's last use an hour ago: the GET notes it
                conn.execute(
                    text("UPDATE api_keys SET last_used_at = :at"), {"at": utcnow() - timedelta(hours=1)}
                )
            noted = client.get("/api/v1/orders/SO-1", headers=api_headers)
    finally:
        engine_of(factory).dispose()
    assert stored.status_code == 201, stored.text
    assert read.status_code == 200, read.text
    assert noted.status_code == 200, noted.text
    with db.factory() as session:
        last_used = session.scalar(select(ApiKey.last_used_at))
    assert last_used is not None and utcnow() - last_used < timedelta(minutes=1)


def _most_checked_out(engine: Engine) -> dict[str, int]:
    counts = {"now": 0, "most": 0}
    lock = threading.Lock()

    @event.listens_for(engine, "checkout")
    def _out(*_args: Any) -> None:
        with lock:
            counts["now"] += 1
            counts["most"] = max(counts["most"], counts["now"])

    @event.listens_for(engine, "checkin")
    def _in(*_args: Any) -> None:
        with lock:
            counts["now"] -= 1

    return counts


def test_many_concurrent_api_requests_against_a_pool_of_two_end_within_seconds(
    db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    for n in range(5):
        put_order(db.factory, settings, f"SO-{n}", utcnow(), **_payload())
    factory = _small_pool(db, 2)
    counts = _most_checked_out(engine_of(factory))
    requests = 120  # more than anyio's 40 worker threads: before, they all waited for a connection
    try:
        with (
            TestClient(create_app(settings, session_factory=factory)) as client,
            ThreadPoolExecutor(60) as pool,
        ):

            def one(n: int) -> int:
                if n % 10 == 0:
                    body = _payload()
                    return int(
                        client.put(f"/api/v1/orders/NEW-{n}", json=body, headers=api_headers).status_code
                    )
                return int(client.get(f"/api/v1/orders/SO-{n % 5}", headers=api_headers).status_code)

            started = time.monotonic()
            statuses = list(pool.map(one, range(requests)))
            took = time.monotonic() - started
    finally:
        engine_of(factory).dispose()
    assert sorted(set(statuses)) == [200, 201], statuses
    assert took < 15, f"{requests} requests took {took:.1f} s"
    assert counts["most"] <= 2


def test_a_sqlite_writer_that_cannot_get_the_lock_soon_answers_503(
    db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    if db.kind != "sqlite":
        pytest.skip("SQLite's single write lock; PostgreSQL locks rows")
    factory = make_session_factory(make_engine(db.url, sqlite_busy_seconds=0.5))
    try:
        with TestClient(create_app(settings, session_factory=factory)) as client:
            with _writes_blocked(db):
                started = time.monotonic()
                busy = client.put("/api/v1/orders/SO-1", json=_payload(), headers=api_headers)
                waited = time.monotonic() - started
            stored = client.put("/api/v1/orders/SO-1", json=_payload(), headers=api_headers)
    finally:
        engine_of(factory).dispose()
    assert _is_busy_problem(busy), busy.text
    assert waited < 3
    assert stored.status_code == 201, stored.text


def test_the_scheduler_has_a_pool_of_its_own(db: Database, settings: Settings, reference: None) -> None:
    put_order(db.factory, settings, "SO-1", utcnow(), **_payload(days=7))  # due now
    factory = _small_pool(db, 1)
    requests_engine = engine_of(factory)
    app = create_app(settings, session_factory=factory, run_scheduler=True)
    try:
        with requests_engine.connect(), TestClient(app):  # the requests' only connection is taken
            assert requests_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
            jobs = app.state.background_jobs
            assert engine_of(jobs.session_factory) is not requests_engine
            deadline = time.monotonic() + 15
            mailed = 0
            while not mailed and time.monotonic() < deadline:
                with db.factory() as session:
                    mailed = len(session.scalars(select(DevMailboxMessage.id)).all())
                time.sleep(0.1)
    finally:
        requests_engine.dispose()
    assert mailed == 1


def test_a_waiting_request_leaves_the_queue_when_its_client_goes_or_it_is_cancelled() -> None:
    from onboarding.web.admission import Admission, Overloaded

    async def scenario() -> tuple[int, int, int]:
        admission = Admission(1, max_waiting=10, max_wait_seconds=5)
        await admission.acquire()
        client_gone = asyncio.Event()

        async def gone() -> None:
            await client_gone.wait()

        abandoned = asyncio.create_task(admission.acquire(gone))
        cancelled = asyncio.create_task(admission.acquire())
        served = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        waiting_before = admission.waiting
        client_gone.set()
        with pytest.raises(Overloaded):
            await abandoned
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        waiting_after = admission.waiting
        admission.release(held_seconds=0.01)  # the slot passes to the one still waiting
        await asyncio.wait_for(served, 1)
        return waiting_before, waiting_after, admission.in_flight

    assert asyncio.run(scenario()) == (3, 1, 1)


def test_a_cancelled_request_gives_its_connection_back(db: Database, settings: Settings) -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from onboarding.web.admission import admission_for
    from onboarding.web.transactions import db_session

    factory = _small_pool(db, 1)
    engine = engine_of(factory)
    state = SimpleNamespace(session_factory=factory, admission=admission_for(settings, engine))
    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/api/v1/orders/SO-1",
        "headers": [],
        "query_string": b"",
        "scheme": "http",
        "server": ("testserver", 80),
        "root_path": "",
        "app": SimpleNamespace(state=state),
    }

    checked_out: list[int] = []

    async def request_under_way(started: anyio.Event) -> None:
        async with asynccontextmanager(db_session)(Request(scope)) as session:
            session.execute(text("UPDATE api_keys SET name = name"))  # a write under way
            checked_out.append(engine.pool.checkedout())  # type: ignore[attr-defined]
            started.set()
            await anyio.sleep_forever()

    async def scenario() -> None:
        started = anyio.Event()
        async with anyio.create_task_group() as requests:
            requests.start_soon(request_under_way, started)
            await started.wait()
            requests.cancel_scope.cancel()  # as the server cancels a request whose client went away
        checked_out.append(engine.pool.checkedout())  # type: ignore[attr-defined]
        checked_out.append(state.admission.in_flight)

    try:
        anyio.run(scenario)
        assert checked_out == [1, 0, 0]
        with db.engine.begin() as conn:  # and the write lock (SQLite) or row locks went with it
            conn.execute(text("UPDATE api_keys SET name = name"))
    finally:
        engine.dispose()


def test_an_api_request_whose_client_leaves_while_it_waits_is_dropped_unanswered(
    db: Database, settings: Settings
) -> None:
    app = create_app(settings, session_factory=db.factory)
    admission = app.state.admission
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": "/api/v1/orders/SO-1",
        "raw_path": b"/api/v1/orders/SO-1",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
    }

    async def scenario() -> tuple[int, int, list[str]]:
        for _ in range(admission.capacity):  # every slot taken
            await admission.acquire()
        left = asyncio.Event()
        messages: list[Message] = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        sent: list[str] = []

        async def send(message: Message) -> None:
            sent.append(message["type"])

        request = asyncio.create_task(app(dict(scope), receive, send))
        await asyncio.sleep(0.1)
        waiting = admission.waiting
        left.set()
        await asyncio.wait_for(request, 5)
        return waiting, admission.waiting, sent

    assert asyncio.run(scenario()) == (1, 0, [])
