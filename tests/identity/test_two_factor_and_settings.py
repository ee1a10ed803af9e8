"""Two-step verification (TOTP without reuse, backup codes once each, SMS as the alternative) and the
account settings pages (details, email change, password change, preferences, sign out everywhere),
in every language."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.core.clock import utcnow
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity.models import BackupCode, Consent, WebSession
from onboarding.ops.app import create_app
from tests.account_support import (
    NEW_PASSWORD,
    PASSWORD,
    PHONE,
    account,
    emails_to,
    link_to,
    log_in,
    make_account,
)
from tests.conftest import Database
from tests.core.test_i18n import TRANSLATED, extracted
from tests.helpers import csrf, sms_codes_sent


def _enrol_totp(client: TestClient) -> tuple[pyotp.TOTP, list[str]]:
    page = client.post("/account/security/totp/start", data=csrf(client))
    assert page.status_code == 200 and 'src="data:image/svg+xml' in page.text
    found = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
    assert found
    totp = pyotp.TOTP(found.group(1))
    wrong = client.post("/account/security/totp/confirm", data={**csrf(client), "code": "000000"})
    assert wrong.status_code == 422 or totp.now() == "000000"
    codes_page = client.post("/account/security/totp/confirm", data={**csrf(client), "code": totp.now()})
    assert codes_page.status_code == 200
    codes = re.findall(r"<li>([a-z2-7]{5}-[a-z2-7]{5})</li>", codes_page.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "download=" in codes_page.text
    return totp, codes


def _at_the_second_factor(client: TestClient) -> tuple[pyotp.TOTP, list[str]]:
    """Sign in, turn on the authenticator app, sign out and give the password again: the login now
    waits for the second factor."""
    log_in(client)
    enrolled = _enrol_totp(client)
    client.post("/logout", data=csrf(client))
    assert log_in(client).headers["location"].startswith("/login/verify")
    return enrolled


def test_totp_login_without_code_reuse_and_backup_codes_once(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    totp, codes = _enrol_totp(client)
    with db.factory() as session:
        stored = list(session.scalars(select(BackupCode)))
    assert len(stored) == 10 and not any(c.replace("-", "") in s.code_hash for c in codes for s in stored)
    client.post("/logout", data=csrf(client))

    # The password alone no longer signs in: the second factor is asked for.
    first = log_in(client, next="/account")
    assert first.headers["location"].startswith("/login/verify")
    assert client.get("/account", follow_redirects=False).headers["location"].startswith("/login")
    # The code used at enrolment (this time step) is spent; the next step's code is accepted once.
    code = totp.at(utcnow(), counter_offset=1)
    ok = client.post(
        "/login/verify",
        data={**csrf(client), "method": "totp", "code": code, "next": "/account"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/account"
    assert client.get("/account").status_code == 200
    client.post("/logout", data=csrf(client))
    log_in(client)
    replay = client.post("/login/verify", data={**csrf(client), "method": "totp", "code": code})
    assert replay.status_code == 401

    # A backup code works once and only once.
    used = client.post(
        "/login/verify",
        data={**csrf(client), "method": "backup", "code": codes[3].upper()},
        follow_redirects=False,
    )
    assert used.status_code == 303
    client.post("/logout", data=csrf(client))
    log_in(client)
    again = client.post("/login/verify", data={**csrf(client), "method": "backup", "code": codes[3]})
    assert again.status_code == 401
    assert (
        client.post(
            "/login/verify",
            data={**csrf(client), "method": "backup", "code": codes[4]},
            follow_redirects=False,
        ).status_code
        == 303
    )
    assert "Backup codes left: 8." in client.get("/account/security").text


def test_sms_as_the_second_factor(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow(), phone_verified=True)
    log_in(client)
    shown = client.post("/account/security/sms-factor", data=csrf(client))
    assert len(re.findall(r"<li>([a-z2-7]{5}-[a-z2-7]{5})</li>", shown.text)) == 10
    client.post("/logout", data=csrf(client))
    assert log_in(client).headers["location"].startswith("/login/verify")
    page = client.get("/login/verify")
    assert "••• ••• 45 67" in page.text
    assert client.post("/login/verify/sms", data=csrf(client)).status_code == 200
    [code] = sms_codes_sent(db.factory, PHONE)
    ok = client.post(
        "/login/verify", data={**csrf(client), "method": "sms", "code": code}, follow_redirects=False
    )
    assert ok.status_code == 303 and client.get("/account").status_code == 200


def test_the_second_factor_session_is_replaced_at_full_login(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    totp, _codes = _at_the_second_factor(client)
    half = client.cookies["onb_session"]
    client.post(
        "/login/verify", data={**csrf(client), "method": "totp", "code": totp.at(utcnow(), counter_offset=1)}
    )
    assert client.cookies["onb_session"] != half
    with db.factory() as session:
        reasons = {s.ended_reason for s in session.scalars(select(WebSession))}
    assert "rotated" in reasons


def test_change_password_needs_the_current_one_and_ends_other_sessions(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    other = TestClient(client.app)
    log_in(other)
    log_in(client)
    before = client.cookies["onb_session"]
    refused = client.post(
        "/account/password",
        data={
            **csrf(client),
            "current_password": "wrong-one-123",
            "password": NEW_PASSWORD,
            "password_confirmation": NEW_PASSWORD,
        },
    )
    assert refused.status_code == 422 and 'id="current_password-error"' in refused.text
    changed = client.post(
        "/account/password",
        data={
            **csrf(client),
            "current_password": PASSWORD,
            "password": NEW_PASSWORD,
            "password_confirmation": NEW_PASSWORD,
        },
        follow_redirects=False,
    )
    assert changed.status_code == 303
    assert client.cookies["onb_session"] != before
    assert client.get("/account").status_code == 200
    assert other.get("/account", follow_redirects=False).status_code == 303
    client.cookies.set("onb_session", before)
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_change_email_is_verified_again_and_the_old_address_is_told(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    response = client.post(
        "/account/email",
        data={**csrf(client), "new_email": "astrid.new@example.com", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert account(db.factory).email == "astrid@example.com"  # nothing changes before confirmation
    [notice] = emails_to(db.factory, "astrid@example.com")
    assert "a•••@example.com" in notice.text_body and "/account/email/confirm/" not in notice.text_body
    link = link_to(db.factory, "astrid.new@example.com", "/account/email/confirm/")
    assert client.get(link).status_code == 200
    assert account(db.factory, "astrid.new@example.com").email_verified_at is not None
    assert client.get(link).status_code == 410
    client.post("/logout", data=csrf(client))
    assert log_in(client, email="astrid.new@example.com").status_code == 303


def test_details_preferences_and_sign_out_everywhere(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    other = TestClient(client.app)
    log_in(other)
    log_in(client)
    bad = client.post(
        "/account/details",
        data={
            **csrf(client),
            "first_name": "",
            "last_name": "L",
            "birth_date": "1985-04-12",
            "language": "sv",
        },
    )
    assert bad.status_code == 422 and 'id="first_name-error"' in bad.text
    client.post(
        "/account/details",
        data={
            **csrf(client),
            "first_name": "Astri",
            "last_name": "L",
            "birth_date": "1985-04-12",
            "language": "sv",
        },
    )
    assert account(db.factory).first_name == "Astri" and account(db.factory).language == "sv"
    client.post("/account/communication", data={**csrf(client), "marketing_email": "true"})
    client.post("/account/communication", data={**csrf(client)})
    with db.factory() as session:
        consents = list(session.scalars(select(Consent).where(Consent.kind == "marketing_email")))
    assert (
        len(consents) == 1 and consents[0].withdrawn_at is not None
    )  # granted, then withdrawn: both recorded
    assert 'role="status"' in client.get("/account?notice=preferences").text  # the confirmation
    client.post("/account/sign-out-everywhere", data=csrf(client))
    assert client.get("/account", follow_redirects=False).status_code == 303
    assert other.get("/account", follow_redirects=False).status_code == 303


def test_settings_need_a_session_and_a_csrf_token(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    for path in ("/account", "/account/security", "/account/password", "/account/email"):
        assert client.get(path, follow_redirects=False).headers["location"] == f"/login?next={path}"
    log_in(client)
    cross_site = client.post(
        "/account/sign-out-everywhere", data={}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403 and client.get("/account").status_code == 200


def test_wrong_second_factor_codes_count_towards_the_lockout(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    _at_the_second_factor(client)
    statuses = [
        client.post(
            "/login/verify", data={**csrf(client), "method": "backup", "code": "aaaaa-bbbbb"}
        ).status_code
        for _ in range(10)
    ]
    assert statuses == [401] * 9 + [423]
    assert account(db.factory).locked_until is not None
    # The half-signed-in session ended with the lock.
    assert client.get("/login/verify", follow_redirects=False).headers["location"] == "/login"


def test_second_factor_codes_are_limited_per_account(db: Database, settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_login_per_account": "5/minute"})
    make_account(db.factory, settings, utcnow())
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        _at_the_second_factor(client)
        wrong = {**csrf(client), "method": "backup", "code": "aaaaa-bbbbb"}
        statuses = [client.post("/login/verify", data=wrong).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert account(db.factory).failed_logins == 5  # the refused sixth code was not checked


def test_backup_codes_can_be_regenerated_with_the_password(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    # Not while two-step verification is off: a backup code stands in for a second factor.
    off = client.post(
        "/account/security/backup-codes", data={**csrf(client), "password": PASSWORD}, follow_redirects=False
    )
    assert off.headers["location"] == "/account/security"
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(BackupCode)) == 0
    _totp, old = _enrol_totp(client)
    refused = client.post(
        "/account/security/backup-codes", data={**csrf(client), "password": "wrong-one-123"}
    )
    assert refused.status_code == 422 and 'id="password-backup-error"' in refused.text
    page = client.post("/account/security/backup-codes", data={**csrf(client), "password": PASSWORD})
    new = re.findall(r"<li>([a-z2-7]{5}-[a-z2-7]{5})</li>", page.text)
    assert len(new) == 10 and not set(new) & set(old)
    client.post("/logout", data=csrf(client))
    log_in(client)
    stale = client.post("/login/verify", data={**csrf(client), "method": "backup", "code": old[0]})
    assert stale.status_code == 401
    fresh = client.post(
        "/login/verify", data={**csrf(client), "method": "backup", "code": new[0]}, follow_redirects=False
    )
    assert fresh.status_code == 303


SETTINGS_PAGES = ("/account", "/account/email", "/account/password", "/account/security")


class _Texts(HTMLParser):
    """A page's text nodes and human-readable attribute values, each whole and stripped."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: set[str] = set()
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.update(
            v.strip() for k, v in attrs if k in ("alt", "title", "aria-label", "placeholder") and v
        )

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.found.add(" ".join(data.split()))


@pytest.mark.parametrize("lang", TRANSLATED)
def test_settings_pages_are_in_each_language(
    db: Database, settings: Settings, client: TestClient, lang: str
) -> None:
    """Every catalogue string an English settings page shows is shown translated in ``lang``, and
    no longer in English."""
    make_account(db.factory, settings, utcnow())
    log_in(client)

    def texts(language: str) -> dict[str, set[str]]:
        pages = {path: client.get(path, params={"lang": language}).text for path in SETTINGS_PAGES}
        pages["TOTP enrolment"] = client.post(
            "/account/security/totp/start", data=csrf(client), params={"lang": language}
        ).text
        assert all(f'<html lang="{language}"' in page for page in pages.values())
        return {where: _Texts(page).found for where, page in pages.items()}

    english, localized = texts("en"), texts(lang)
    for where, shown_in_english in english.items():
        shown = [m for m in extracted() if "%" not in m and m in shown_in_english]
        assert len(shown) >= 10, (where, shown)  # the page's own texts, not only the layout's
        with use_language(lang):
            translations = {m: gettext_(m) for m in shown}
        wrong = [
            m
            for m, text in translations.items()
            if text not in localized[where] or (text != m and m in localized[where])
        ]
        assert not wrong, (where, wrong)
