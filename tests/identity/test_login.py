"""Login, sessions, lockout and rate limits (SPEC §3.2): generic failure, 120-minute lock after 10
failures (audited), the same answers for unknown addresses, rotation of the session at login,
limits shared across instances through Redis."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import limits.storage.memory as limits_memory
import pytest
import redis
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from onboarding.core.clock import utcnow
from onboarding.core.crypto import token_hash
from onboarding.core.db import begin_read
from onboarding.core.settings import Settings
from onboarding.identity import accounts, login
from onboarding.identity import pages as auth_pages
from onboarding.identity.accounts import ARGON2_CONCURRENCY, find_account, hash_password, verify_password
from onboarding.identity.models import Account, AuditEvent, WebSession
from onboarding.identity.ratelimit import RateLimits, SweptMemoryStorage
from onboarding.ops.app import create_app
from tests.account_support import PASSWORD, account, log_in, make_account
from tests.conftest import Database
from tests.helpers import csrf

REDIS_URL = os.environ.get("ONBOARDING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GENERIC = "The email address or password is not correct."
LOCKED = "The maximum number of failed login attempts has been reached"


def test_login_sets_a_fresh_http_only_session_and_logout_ends_it(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login?next=/account"
    response = log_in(client, next="/account")
    assert response.status_code == 303 and response.headers["location"] == "/account"
    cookie = response.headers["set-cookie"]
    assert "onb_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # http in tests; https public URLs get Secure (see below)
    assert client.get("/account").status_code == 200
    with db.factory() as session:
        stored = session.scalars(select(WebSession)).one()
        assert client.cookies["onb_session"] not in stored.token_hash  # only a hash is stored
    token = client.cookies["onb_session"]
    client.post("/logout", data=csrf(client))
    assert client.get("/account", follow_redirects=False).status_code == 303
    # Ended on the server, not only forgotten by the browser: the old cookie is worthless.
    client.cookies.set("onb_session", token)
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_session_cookie_is_secure_behind_https(db: Database, settings: Settings) -> None:
    make_account(db.factory, settings, utcnow())
    https = settings.model_copy(update={"public_base_url": "https://id.example"})
    with TestClient(create_app(https, session_factory=db.factory), base_url="https://id.example") as client:
        assert "Secure" in log_in(client).headers["set-cookie"]


def test_a_rotated_out_session_is_dead(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    first = client.cookies["onb_session"]
    log_in(client)  # a second login in the same browser: new id, the old one ends
    second = client.cookies["onb_session"]
    assert first != second
    client.cookies.set("onb_session", first)
    assert client.get("/account", follow_redirects=False).status_code == 303
    client.cookies.set("onb_session", second)
    assert client.get("/account").status_code == 200
    with db.factory() as session:
        rows = session.scalars(select(WebSession).order_by(WebSession.id)).all()
        logins = session.scalars(select(AuditEvent).where(AuditEvent.kind == "login")).all()
    # Only the old row's end was written (on PostgreSQL the rotation is one statement with the insert).
    assert [(r.token_hash, r.ended_reason) for r in rows] == [
        (token_hash(first), "rotated"),
        (token_hash(second), None),
    ]
    assert rows[0].created_at < rows[1].created_at and rows[0].stage == rows[1].stage == "full"
    assert [(e.account_id, e.details) for e in logins] == [(rows[0].account_id, {"method": "password"})] * 2


def test_a_password_login_costs_two_statements_on_postgresql(
    db: Database, settings: Settings, client: TestClient
) -> None:
    """The account lookup, then rotation, new session and audit event as one statement, each in
    autocommit: no BEGIN or COMMIT round trips. SQLite runs them in a transaction (no round trips)."""
    make_account(db.factory, settings, utcnow())
    log_in(client)  # a session to rotate
    statements: list[tuple[str, str | None]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append((statement.split(None, 1)[0], conn.get_execution_options().get("isolation_level")))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert log_in(client).status_code == 303
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    if db.kind == "postgresql":
        assert statements == [("SELECT", "AUTOCOMMIT"), ("WITH", "AUTOCOMMIT")]
    else:
        assert [kind for kind, _ in statements] == ["BEGIN", "SELECT", "BEGIN", "UPDATE", "INSERT", "INSERT"]


def test_unknown_email_and_wrong_password_get_the_same_answer(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    wrong = log_in(client, password="not-the-password-9")
    unknown = log_in(client, email="nobody@example.com", password="not-the-password-9")
    assert wrong.status_code == unknown.status_code == 401
    assert GENERIC in wrong.text and GENERIC in unknown.text
    assert "onb_session" not in client.cookies


def test_ten_failures_lock_for_120_minutes_audited_and_reset_still_works(
    db: Database, settings: Settings, client: TestClient
) -> None:
    account_id = make_account(db.factory, settings, utcnow())
    for _ in range(9):
        assert log_in(client, password="not-the-password-9").status_code == 401
    tenth = log_in(client, password="not-the-password-9")
    assert tenth.status_code == 423 and LOCKED in tenth.text and "120 minutes" in tenth.text
    # Locked: even the right password is refused, with the same message.
    right = log_in(client)
    assert right.status_code == 423 and "onb_session" not in client.cookies
    locked = account(db.factory)
    assert locked.locked_until is not None
    minutes = (locked.locked_until - utcnow()).total_seconds() / 60
    assert 119 < minutes <= 120
    with db.factory() as session:
        kinds = [
            e.kind for e in session.scalars(select(AuditEvent).where(AuditEvent.account_id == account_id))
        ]
    assert kinds.count("login_failed") == 9 and "account_locked" in kinds and "login_refused_locked" in kinds
    # Password reset is still open while locked.
    response = client.post("/password/forgot", data={**csrf(client), "email": "astrid@example.com"})
    assert response.status_code == 200
    # Once the 120 minutes are over, the right password works again.
    with db.factory() as session:
        session.get_one(Account, account_id).locked_until = utcnow() - timedelta(seconds=1)
        session.commit()
    assert log_in(client).status_code == 303


def test_unknown_addresses_lock_the_same_way(db: Database, settings: Settings, client: TestClient) -> None:
    for _ in range(9):
        assert log_in(client, email="ghost@example.com", password="not-the-password-9").status_code == 401
    response = log_in(client, email="ghost@example.com", password="not-the-password-9")
    assert response.status_code == 423 and LOCKED in response.text


def test_a_correct_login_resets_the_failure_count(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    for _ in range(9):
        log_in(client, password="not-the-password-9")
    assert log_in(client).status_code == 303
    client.post("/logout", data=csrf(client))
    assert log_in(client, password="not-the-password-9").status_code == 401  # 1 of 10 again, not locked


def test_cross_site_login_post_is_refused(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow())
    no_token = client.post("/login", data={"email": "astrid@example.com", "password": PASSWORD})
    assert no_token.status_code == 403
    cross_site = client.post(
        "/login",
        data={**csrf(client), "email": "astrid@example.com", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403 and "onb_session" not in client.cookies
    forged = client.post(
        "/login",
        data={
            **csrf(client),
            "csrf_token": "forged-" + "x" * 40,
            "email": "astrid@example.com",
            "password": PASSWORD,
        },
    )
    assert forged.status_code == 403 and "onb_session" not in client.cookies  # must equal the cookie


def test_per_ip_limit_holds(db: Database, settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_login_per_ip": "5/minute"})
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        statuses = [
            log_in(client, email=f"user{n}@example.com", password="not-the-password-9").status_code
            for n in range(6)
        ]
    assert statuses == [401] * 5 + [429]


def test_the_email_forms_have_limits_per_address_and_per_ip(db: Database, settings: Settings) -> None:
    """Registration, the verification resend and the reset request each send email: limited per
    address and per IP, with the same "too many attempts" answer."""
    limited = settings.model_copy(
        update={"rate_limit_email_per_address": "2/minute", "rate_limit_email_per_ip": "4/minute"}
    )
    make_account(db.factory, settings, utcnow())
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        forgot = [
            client.post("/password/forgot", data={**csrf(client), "email": "astrid@example.com"}).status_code
            for _ in range(3)
        ]
        assert forgot == [200, 200, 429]
        # Per IP (counted first, so the refused request counted too): a second address has room once.
        assert (
            client.post("/password/forgot", data={**csrf(client), "email": "a@example.com"}).status_code
            == 200
        )
        refused = client.post("/password/forgot", data={**csrf(client), "email": "b@example.com"})
        assert refused.status_code == 429 and "Too many attempts" in refused.text
        form = {
            **csrf(client),
            "email": "nils@example.com",
            "first_name": "Nils",
            "last_name": "Berg",
            "birth_date": "1985-04-12",
            "country": "SE",
            "language": "en",
            "password": "a long and unusual passphrase 42",
            "password_confirmation": "a long and unusual passphrase 42",
            "accept_terms": "true",
            "accept_privacy": "true",
        }
        assert [client.post("/register", data=form).status_code for _ in range(3)] == [200, 200, 429]
        log_in(client, email="nils@example.com", password="a long and unusual passphrase 42")
        resent = [client.post("/register/resend", data=csrf(client)).status_code for _ in range(3)]
        assert resent == [200, 200, 429]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 2


@pytest.fixture
def redis_settings(settings: Settings) -> Iterator[Settings]:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("ONBOARDING_REQUIRE_REDIS") == "1":
            pytest.fail(reason + " (ONBOARDING_REQUIRE_REDIS=1 makes this an error)", pytrace=False)
        pytest.skip(reason)
    yield settings.model_copy(
        update={
            "redis_url": REDIS_URL,
            "rate_limit_namespace": f"test-{secrets.token_hex(6)}",
            "rate_limit_login_per_account": "4/minute",
        }
    )


def test_rate_limits_hold_across_two_instances_sharing_redis(db: Database, redis_settings: Settings) -> None:
    make_account(db.factory, redis_settings, utcnow())
    first = TestClient(create_app(redis_settings, session_factory=db.factory))
    second = TestClient(create_app(redis_settings, session_factory=db.factory))
    with first, second:
        statuses = [
            log_in(c, password="not-the-password-9").status_code for c in (first, second, first, second)
        ]
        assert statuses == [401] * 4
        # The fifth attempt, on either instance, is over the shared per-account limit.
        assert log_in(second, password="not-the-password-9").status_code == 429
        assert log_in(first).status_code == 429
    # Instances with memory storage would each have allowed 4: the limit really lives in Redis.
    alone = redis_settings.model_copy(update={"redis_url": None})
    with TestClient(create_app(alone, session_factory=db.factory)) as third:
        assert log_in(third).status_code == 303


# --- what keeps a login cheap and safe under load ------------------------------------------------------


def test_no_database_connection_is_held_while_argon2id_runs(
    db: Database, settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read, hash, write: the lookup's transaction has ended before the hash (on SQLite it would hold
    the single write lock, on PostgreSQL a pooled connection, for some 25 ms of CPU)."""
    make_account(db.factory, settings, utcnow())
    held_during_hash: list[int] = []
    real_verify = accounts.verify_password

    def verify_and_look(account: Account | None, password: str) -> bool:
        held_during_hash.append(db.engine.pool.checkedout())  # type: ignore[attr-defined]
        return real_verify(account, password)

    monkeypatch.setattr("onboarding.identity.login.verify_password", verify_and_look)
    assert log_in(client).status_code == 303
    assert log_in(client, password="not-the-password-9").status_code == 401
    assert log_in(client, email="ghost@example.com").status_code == 401
    assert held_during_hash == [0, 0, 0]


def test_failures_read_before_the_hash_all_count(db: Database, settings: Settings) -> None:
    """Two attempts that both read the account before either recorded its failure (as concurrent
    logins do while they hash) count as two, not one."""
    make_account(db.factory, settings, utcnow())
    now = utcnow()
    first, second = db.factory(), db.factory()
    try:
        attempts = []
        for session in (first, second):
            begin_read(session)
            account = find_account(session, "astrid@example.com")
            session.commit()
            assert account is not None and account.failed_logins == 0
            attempts.append(account)
        for session, account in zip((first, second), attempts, strict=True):
            login.record_failure(session, settings, account, now=now, ip="192.0.2.1", factor="password")
            session.commit()
    finally:
        first.close()
        second.close()
    with db.factory() as session:
        stored = find_account(session, "astrid@example.com")
        assert stored is not None and stored.failed_logins == 2


def test_at_most_one_argon2id_computation_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """More concurrent hashes than cores only slow each other down and multiply memory (19 MiB each)."""
    slots = ARGON2_CONCURRENCY
    hash_password("warms the dummy hash up")
    running, peak, lock = 0, 0, threading.Lock()
    real_verify = PasswordHasher.verify

    def verify_and_count(self: PasswordHasher, hashed: str, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for every thread to be waiting at once
            return real_verify(self, hashed, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(PasswordHasher, "verify", verify_and_count)
    threads = [threading.Thread(target=verify_password, args=(None, "x")) for _ in range(slots + 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == slots


def test_login_requests_run_one_per_core_and_the_rest_wait_on_the_event_loop(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python work beside both hashes preempts them (bench/README.md), so whole logins are admitted one
    per core; the others wait as coroutines, holding no worker thread, and are all answered."""
    make_account(db.factory, settings, utcnow())
    slots = ARGON2_CONCURRENCY
    running, peak, lock = 0, 0, threading.Lock()
    real_login = auth_pages.password_login

    def login_and_count(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for every request to have arrived
            return real_login(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(auth_pages, "password_login", login_and_count)
    app = create_app(settings, session_factory=db.factory)

    async def post_logins() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
            await browser.get("/login")
            form = {"csrf_token": browser.cookies["onb_csrf"], "email": "astrid@example.com"}
            return await asyncio.gather(
                *(browser.post("/login", data={**form, "password": PASSWORD}) for _ in range(slots + 3))
            )

    responses = asyncio.run(post_logins())
    assert [r.status_code for r in responses] == [303] * (slots + 3)
    assert peak == slots


def test_memory_rate_limits_start_no_thread_per_hit_and_still_free_expired_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = SweptMemoryStorage()
    limits = RateLimits(storage)
    monkeypatch.setattr(SweptMemoryStorage, "SWEEP_SECONDS", 0.2)
    timers: list[object] = []
    real_timer = threading.Timer

    def counted_timer(*args: Any, **kwargs: Any) -> threading.Timer:
        timer = real_timer(*args, **kwargs)
        timers.append(timer)
        return timer

    monkeypatch.setattr(limits_memory.threading, "Timer", counted_timer)  # type: ignore[attr-defined]
    for n in range(5):
        assert limits.hit("2/second", "test", "first")
        assert limits.hit("2/second", "test", "first") is True
        assert limits.hit("2/second", "test", "first") is False  # the window is full
        time.sleep(1.05)  # the window and the sweep interval pass
        assert limits.hit("2/second", "test", f"other {n}")  # sweeps: the full window is gone
        assert all(not key.endswith(limits._key("test", "first")[1]) for key in storage.events)
    assert timers == []  # the library would have started a timer thread after nearly every hit
