"""Password reset (SPEC §3.2): the same answer whether or not the address has an ID, a single-use
one-hour link, a second identity check, every session ended afterwards and no automatic login."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.clock import utcnow
from onboarding.core.crypto import token_hash
from onboarding.core.settings import Settings
from onboarding.identity import password_reset
from onboarding.identity.models import AccountToken, AuditEvent
from onboarding.identity.ratelimit import RateLimits
from tests.account_support import (
    BIRTH,
    NEW_PASSWORD,
    PASSWORD,
    PHONE,
    account,
    emails_to,
    link_to,
    log_in,
    make_account,
    run_and_send,
)
from tests.conftest import Database
from tests.helpers import csrf, sms_codes_sent


def _ask(client: TestClient, email: str) -> bytes:
    response = client.post("/password/forgot", data={**csrf(client), "email": email})
    assert response.status_code == 200
    body: bytes = response.content
    return body


def test_known_and_unknown_emails_get_byte_identical_answers(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    client.get("/password/forgot")
    known = _ask(client, "astrid@example.com")
    unknown = _ask(client, "nobody@example.com")
    assert known == unknown  # byte for byte: the page does not even repeat the address
    assert len(emails_to(db.factory, "astrid@example.com")) == 1
    assert emails_to(db.factory, "nobody@example.com") == []
    # Both requests were recorded alike (one row each), only the known one can ever be used.
    with db.factory() as session:
        rows = list(session.scalars(select(AccountToken).where(AccountToken.purpose == "password_reset")))
    assert sorted(r.account_id is None for r in rows) == [False, True]
    # The emailed token is stored only as its hash.
    token = link_to(db.factory, "astrid@example.com", "/password/reset/").rsplit("/", 1)[1]
    assert all(token not in r.token_hash for r in rows)
    assert [r.token_hash for r in rows].count(token_hash(token)) == 1
    # The same audited work on both paths.
    with db.factory() as session:
        kinds = list(session.scalars(select(AuditEvent.kind)))
    assert kinds.count("password_reset_requested") == 2


def test_no_sms_code_goes_to_a_number_that_is_not_verified(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())  # a number, but not verified
    _ask(client, "astrid@example.com")
    client.get(link_to(db.factory, "astrid@example.com", "/password/reset/"))
    assert "••• ••• 45 67" not in client.get("/password/reset").text
    client.post("/password/reset/sms", data=csrf(client))
    check = client.post(
        "/password/reset/sms-code", data={**csrf(client), "code": "123456"}, follow_redirects=False
    )
    assert check.status_code == 303 and sms_codes_sent(db.factory, PHONE) == []
    assert "Confirm who you are" in client.get("/password/reset").text  # still the identity check


def test_reset_with_birth_date_ends_sessions_unlocks_and_does_not_log_in(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    other_device = TestClient(client.app)
    log_in(other_device)
    assert other_device.get("/account").status_code == 200
    for _ in range(10):
        log_in(client, password="not-the-password-9")
    assert account(db.factory).locked_until is not None

    _ask(client, "astrid@example.com")
    link = link_to(db.factory, "astrid@example.com", "/password/reset/")
    opened = client.get(link, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/password/reset"
    page = client.get("/password/reset")
    assert "Confirm who you are" in page.text and 'name="password"' not in page.text
    # The new password cannot be set before the identity check.
    early = client.post(
        "/password/reset/new",
        data={**csrf(client), "password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD},
    )
    assert early.status_code == 422
    wrong = client.post("/password/reset/birth-date", data={**csrf(client), "birth_date": "1990-01-01"})
    assert wrong.status_code == 422 and 'id="birth_date-error"' in wrong.text
    right = client.post("/password/reset/birth-date", data={**csrf(client), "birth_date": BIRTH.isoformat()})
    assert right.status_code == 200 and 'name="password"' in right.text
    weak = client.post(
        "/password/reset/new",
        data={**csrf(client), "password": "password123", "password_confirmation": "password123"},
    )
    assert weak.status_code == 422 and 'id="password-error"' in weak.text
    done = client.post(
        "/password/reset/new",
        data={**csrf(client), "password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD},
    )
    assert done.status_code == 200 and "Log in with your new password" in done.text
    # No automatic login; every session ended; the lock is lifted; the link is used up.
    assert client.get("/account", follow_redirects=False).status_code == 303
    assert other_device.get("/account", follow_redirects=False).status_code == 303
    assert client.get(link, follow_redirects=False).status_code == 410
    assert log_in(client, password=PASSWORD).status_code == 401
    assert log_in(client, password=NEW_PASSWORD).status_code == 303
    notices = [m.subject for m in emails_to(db.factory, "astrid@example.com")]
    assert any("password was changed" in (s or "") for s in notices)
    with db.factory() as session:
        kinds = {e.kind for e in session.scalars(select(AuditEvent))}
    assert {"password_reset_requested", "password_reset", "password_reset_identity_failed"} <= kinds


def test_reset_with_an_sms_code_to_the_verified_phone(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), phone_verified=True)
    _ask(client, "astrid@example.com")
    client.get(link_to(db.factory, "astrid@example.com", "/password/reset/"))
    assert "••• ••• 45 67" in client.get("/password/reset").text
    assert client.post("/password/reset/sms", data=csrf(client)).status_code == 200
    [code] = sms_codes_sent(db.factory, PHONE)
    wrong = client.post(
        "/password/reset/sms-code", data={**csrf(client), "code": "000000" if code != "000000" else "111111"}
    )
    assert wrong.status_code == 422
    ok = client.post("/password/reset/sms-code", data={**csrf(client), "code": code}, follow_redirects=False)
    assert ok.status_code == 303
    assert 'name="password"' in client.get("/password/reset").text


def test_reset_link_expires_after_an_hour_and_a_newer_one_replaces_it(
    db: Database, settings: Settings
) -> None:
    limits = RateLimits.from_settings(settings)
    now = utcnow()
    make_account(db.factory, settings, now)
    run_and_send(
        db.factory,
        settings,
        lambda s: password_reset.request_reset(
            s, settings, limits, email="astrid@example.com", now=now, ip=None
        ),
    )
    first = link_to(db.factory, "astrid@example.com", "/password/reset/").rsplit("/", 1)[1]
    with db.factory() as session:
        assert password_reset.open_link(session, first, now=now + timedelta(minutes=59)) is not None
        assert password_reset.open_link(session, first, now=now + timedelta(minutes=61)) is None
    run_and_send(
        db.factory,
        settings,
        lambda s: password_reset.request_reset(
            s, settings, limits, email="astrid@example.com", now=now, ip=None
        ),
    )
    second = link_to(db.factory, "astrid@example.com", "/password/reset/").rsplit("/", 1)[1]
    with db.factory() as session:
        assert password_reset.open_link(session, first, now=now) is None
        assert password_reset.open_link(session, second, now=now) is not None


def test_five_wrong_birth_dates_cancel_the_link(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow())
    _ask(client, "astrid@example.com")
    client.get(link_to(db.factory, "astrid@example.com", "/password/reset/"))
    statuses = [
        client.post(
            "/password/reset/birth-date", data={**csrf(client), "birth_date": f"1990-01-0{n}"}
        ).status_code
        for n in range(1, 6)
    ]
    assert statuses == [422, 422, 422, 422, 403]
    right = client.post("/password/reset/birth-date", data={**csrf(client), "birth_date": BIRTH.isoformat()})
    assert right.status_code == 410


def test_every_reset_step_needs_an_open_link(db: Database, settings: Settings, client: TestClient) -> None:
    """Without the link's cookie, or with a forged one, every step answers "this link no longer works"
    and changes nothing."""
    account_id = make_account(db.factory, settings, utcnow())
    before = account(db.factory).password_hash
    steps = [
        ("get", "/password/reset", {}),
        ("post", "/password/reset/birth-date", {"birth_date": BIRTH.isoformat()}),
        ("post", "/password/reset/sms", {}),
        ("post", "/password/reset/sms-code", {"code": "123456"}),
        ("post", "/password/reset/new", {"password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD}),
    ]
    for cookie in (None, "forged-" + "x" * 40):
        if cookie:
            client.cookies.set("onb_reset", cookie, path="/password")
        for method, path, form in steps:
            data = {**csrf(client), **form} if method == "post" else None
            answer = client.request(method, path, data=data, follow_redirects=False)
            assert answer.status_code == 410 and "This link no longer works" in answer.text, (cookie, path)
    assert account(db.factory).password_hash == before and account(db.factory).id == account_id
