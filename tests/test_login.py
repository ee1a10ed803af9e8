"""Login, sessions, lockout and rate limits (SPEC §3.2): generic failure, 120-minute lock after 10
failures (audited), the same answers for unknown addresses, rotation of the session at login,
limits shared across instances through Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.app import create_app
from onboarding.clock import utcnow
from onboarding.models import AuditEvent, WebSession
from onboarding.settings import Settings
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
    client.post("/logout", data=csrf(client))
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


def test_per_ip_limit_holds(db: Database, settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_login_per_ip": "5/minute"})
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        statuses = [
            log_in(client, email=f"user{n}@example.com", password="not-the-password-9").status_code
            for n in range(6)
        ]
    assert statuses == [401] * 5 + [429]


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
