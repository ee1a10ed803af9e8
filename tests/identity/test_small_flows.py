"""Small flows of issue 11: what the expired-link page and the support notice say (13), the "password
changed" email (14), confirmations and SMS-code texts (15), signed-in devices and signing one out
(16), the current password refused as the new one (17)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from notifications.models import DevMailboxMessage
from onboarding.activation.models import Invitation, SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity import pages as identity_pages
from onboarding.identity.devices import describe
from onboarding.identity.models import AuditEvent, WebSession
from onboarding.ops.app import create_app
from tests.account_support import (
    BIRTH,
    NEW_PASSWORD,
    PASSWORD,
    PHONE,
    emails_to,
    link_to,
    log_in,
    make_account,
)
from tests.conftest import Database
from tests.helpers import csrf, invite_through_api, path_of, run_jobs

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


def _in(language: str, message: str, **values: object) -> str:
    with use_language(language):
        return gettext_(message, **values)


# --- 13: the expired link and the request to support ------------------------------------------------


def test_expired_link_says_support_is_asked_and_the_notice_to_support_has_no_support_footer(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers, language="en")
    with db.engine.begin() as conn:
        conn.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = client.get(path_of(link))
    assert page.status_code == 410
    assert "fresh link" not in page.text  # nothing is sent by itself: support is asked
    assert "we pass your request to support, who will send you a new link or contact you" in page.text
    received = client.post("/invitation/request", data={**csrf(client), "token": link.rsplit("/", 1)[1]})
    assert received.status_code == 200
    assert "They will send you a new invitation link or contact you." in received.text
    run_jobs(db.factory, settings, utcnow())
    with db.factory() as session:
        routed_to = session.scalars(select(SupportRequest.routed_to)).one()
        [notice] = session.scalars(select(DevMailboxMessage).where(DevMailboxMessage.recipient == routed_to))
    assert "SO-1" in notice.text_body
    # Written to support: no "Questions? Contact … support" in either part.
    for part in (notice.text_body, notice.html_body or ""):
        assert "Questions?" not in part and "support for your country" not in part
    # The buyer's emails keep it.
    [invitation] = emails_to(db.factory, "astrid@example.com")
    assert "Questions? Contact" in invitation.text_body


# --- 14: the "password changed" email -----------------------------------------------------------------


def test_the_password_changed_email_is_never_to_be_ignored(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), language="de")
    log_in(client)
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
    client.post("/password/forgot", data={**csrf(client), "email": "astrid@example.com"})
    ignore = _in(
        "de", "If you did not ask for this, you can ignore this email, or tell support if it keeps happening."
    )
    act = _in("de", "If that was not you, reset your password now and contact support.")
    emails = emails_to(db.factory, "astrid@example.com")
    [notice] = [m for m in emails if "/password/reset/" not in m.text_body]
    [reset_link] = [m for m in emails if "/password/reset/" in m.text_body]
    assert act in notice.text_body and act in (notice.html_body or "")
    assert ignore not in notice.text_body and ignore not in (notice.html_body or "")
    # A link the reader may not have asked for still says it can be ignored.
    assert ignore in reset_link.text_body


# --- 15: confirmations and the SMS code texts ----------------------------------------------------------


def test_logging_out_and_signing_out_everywhere_are_confirmed_in_the_page_language(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    page = client.post("/logout", data=csrf(client))
    assert page.url.path == "/login"
    assert re.search(r'role="status"><p>You have logged out\.</p>', page.text)
    log_in(client)
    client.cookies.set("onb_lang", "de")
    page = client.post("/account/sign-out-everywhere", data=csrf(client))
    everywhere = _in("de", "You have been signed out of all devices.")
    assert everywhere != "You have been signed out of all devices."
    assert page.url.path == "/login" and everywhere in page.text
    # A plain visit to the login page confirms nothing.
    assert 'role="status"' not in client.get("/login").text


def test_the_preferences_notice_says_it_once(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow())
    log_in(client)
    page = client.post("/account/communication", data={**csrf(client), "marketing_email": "true"})
    assert "Your communication preferences were saved." in page.text
    assert "recorded your choice" not in page.text


def test_the_first_code_is_a_code_and_the_waits_agree_with_the_setting(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = settings.model_copy(update={"sms_resend_seconds": 45})
    make_account(db.factory, rules, utcnow(), phone_verified=True)
    with TestClient(create_app(rules, session_factory=db.factory)) as client:
        client.post("/password/forgot", data={**csrf(client), "email": "astrid@example.com"})
        client.get(link_to(db.factory, "astrid@example.com", "/password/reset/"))
        clock = [utcnow()]
        monkeypatch.setattr(identity_pages, "utcnow", lambda: clock[0])

        def send() -> tuple[int, str]:
            page = client.post("/password/reset/sms", data=csrf(client))
            return page.status_code, page.text

        status, text = send()
        assert status == 200 and "We sent a code. It is valid for 10 minutes." in text
        assert "new code. It is valid" not in text
        assert "You can ask for a new code in 45 seconds." in text  # not 44
        status, text = send()
        assert status == 429
        assert "Wait 45 seconds before asking for another code." in text
        assert "You can ask for a new code in 45 seconds." in text
        clock[0] += timedelta(seconds=15)
        status, text = send()
        assert status == 429
        assert "Wait 30 seconds before asking for another code." in text
        assert "You can ask for a new code in 30 seconds." in text
        clock[0] += timedelta(seconds=29, milliseconds=500)  # half a second left: not yet
        status, text = send()
        assert status == 429 and "You can ask for a new code in 1 seconds." in text
        clock[0] += timedelta(seconds=1)
        status, text = send()
        assert status == 200 and "We sent a new code. It is valid for 10 minutes." in text
    assert len([m for m in _sms_to(db, PHONE)]) == 2


def _sms_to(db: Database, phone: str) -> list[DevMailboxMessage]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(DevMailboxMessage).where(
                    DevMailboxMessage.channel == "sms", DevMailboxMessage.recipient == phone
                )
            )
        )


# --- 16: signed-in devices -----------------------------------------------------------------------------


def _device(client: TestClient, user_agent: str, email: str = "astrid@example.com") -> TestClient:
    device = TestClient(client.app, headers={"User-Agent": user_agent})
    assert log_in(device, email=email).status_code == 303
    return device


def _session_ids(db: Database, email_user_agent: str) -> list[int]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(WebSession.id).where(
                    WebSession.user_agent == email_user_agent, WebSession.ended_at.is_(None)
                )
            )
        )


def test_the_parser_names_browser_and_system() -> None:
    browser, system = describe(CHROME_LINUX)
    assert (str(browser), str(system)) == ("Chrome 124", "Linux")
    browser, system = describe(IPHONE)
    assert (str(browser), str(system)) == ("Mobile Safari 17", "iOS 17.4")
    browser, system = describe("x" * 5000)  # anything at all: named nothing, no error
    assert browser.name is None and system.name is None
    assert describe(None)[0].name is None


def test_security_page_names_each_device_and_its_last_use(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), language="de")
    laptop = _device(client, CHROME_LINUX)
    _device(client, IPHONE)
    _device(client, "curl/8.5.0")
    page = laptop.get("/account/security").text
    assert "Mozilla/5.0" not in page and "curl/8.5.0" not in page  # no raw strings
    on = "%(browser)s on %(system)s"
    assert _in("de", on, browser="Chrome 124", system="Linux") in page
    assert _in("de", on, browser="Mobile Safari 17", system="iOS 17.4") in page
    assert _in("de", "Last used %(when)s", when=_in("de", "just now")) in page
    assert page.count(_in("de", "this device")) == 1
    # Three devices; the two others each have a button to sign them out.
    assert len(re.findall(r'action="/account/security/sessions/\d+/sign-out"', page)) == 2


def test_security_page_says_how_long_ago_a_device_was_used(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), language="sv")
    laptop = _device(client, CHROME_LINUX)
    _device(client, IPHONE)
    [phone] = _session_ids(db, IPHONE)
    with db.engine.begin() as conn:
        conn.execute(
            update(WebSession)
            .where(WebSession.id == phone)
            .values(last_seen_at=utcnow() - timedelta(minutes=5, seconds=10))
        )
    page = laptop.get("/account/security").text
    assert _in("sv", "Last used %(when)s", when="för 5 minuter sedan") in page


def _events(db: Database, kind: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))


def _ended(db: Database, session_id: int) -> datetime | None:
    with db.factory() as session:
        row = session.get(WebSession, session_id)
        assert row is not None
        return row.ended_at


def test_signing_out_one_device(db: Database, settings: Settings, client: TestClient) -> None:
    make_account(db.factory, settings, utcnow())
    make_account(db.factory, settings, utcnow(), email="other@example.com")
    laptop = _device(client, CHROME_LINUX)
    phone = _device(client, IPHONE)
    stranger = _device(client, "Stranger/1.0", email="other@example.com")
    [phone_id] = _session_ids(db, IPHONE)
    [stranger_id] = _session_ids(db, "Stranger/1.0")
    [laptop_id] = _session_ids(db, CHROME_LINUX)

    # Without the form's CSRF token: refused, nothing changes.
    forged = laptop.post(
        f"/account/security/sessions/{phone_id}/sign-out", headers={"Origin": "https://evil.example"}
    )
    assert forged.status_code == 403 and _ended(db, phone_id) is None

    # Another ID's session, or none at all: 404, nothing changes, nothing audited.
    for other in (str(stranger_id), "0", "-1", "abc", "9" * 40, str(2**31), str(stranger_id + 100)):
        answer = laptop.post(f"/account/security/sessions/{other}/sign-out", data=csrf(laptop))
        assert answer.status_code == 404, other
    assert _ended(db, stranger_id) is None and stranger.get("/account").status_code == 200
    assert _events(db, "signed_out_device") == []

    done = laptop.post(
        f"/account/security/sessions/{phone_id}/sign-out", data=csrf(laptop), follow_redirects=False
    )
    assert (
        done.status_code == 303 and done.headers["location"] == "/account/security?notice=device_signed_out"
    )
    assert "The device was signed out." in laptop.get(done.headers["location"]).text
    assert phone.get("/account", follow_redirects=False).status_code == 303
    assert laptop.get("/account").status_code == 200 and stranger.get("/account").status_code == 200
    [event] = _events(db, "signed_out_device")
    assert event.details == {"session_id": phone_id} and event.account_id is not None
    with db.factory() as session:
        assert session.scalar(select(WebSession.ended_reason).where(WebSession.id == phone_id)) == (
            "signed_out_device"
        )

    # Again (a second click): nothing more to do, nothing audited twice.
    again = laptop.post(f"/account/security/sessions/{phone_id}/sign-out", data=csrf(laptop))
    assert again.status_code == 200 and len(_events(db, "signed_out_device")) == 1

    # This device's own entry: signed out, like logging out.
    own = laptop.post(
        f"/account/security/sessions/{laptop_id}/sign-out", data=csrf(laptop), follow_redirects=False
    )
    assert own.status_code == 303 and own.headers["location"] == "/login?signed_out=1"
    assert laptop.get("/account", follow_redirects=False).status_code == 303
    assert _ended(db, stranger_id) is None


# --- 17: the current password is not a new one ---------------------------------------------------------


def test_reset_and_change_refuse_the_current_password(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), language="nb")
    refusal = _in("nb", "That is your current password. Choose a new one.")
    assert refusal != "That is your current password. Choose a new one."

    client.post("/password/forgot", data={**csrf(client), "email": "astrid@example.com"})
    client.get(link_to(db.factory, "astrid@example.com", "/password/reset/"))
    client.post("/password/reset/birth-date", data={**csrf(client), "birth_date": BIRTH.isoformat()})
    same = client.post(
        "/password/reset/new",
        data={**csrf(client), "password": PASSWORD, "password_confirmation": PASSWORD},
    )
    assert same.status_code == 422
    assert re.search(r'id="password-error"[^>]*>\s*<p>' + re.escape(refusal), same.text)
    # The link still works for a new password; nothing was ended or sent meanwhile.
    assert _events(db, "password_reset") == []
    done = client.post(
        "/password/reset/new",
        data={**csrf(client), "password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD},
    )
    assert done.status_code == 200

    log_in(client, password=NEW_PASSWORD)
    unchanged = client.post(
        "/account/password",
        data={
            **csrf(client),
            "current_password": NEW_PASSWORD,
            "password": NEW_PASSWORD,
            "password_confirmation": NEW_PASSWORD,
        },
    )
    assert unchanged.status_code == 422 and refusal in unchanged.text
    assert _events(db, "password_changed") == []
    assert client.get("/account").status_code == 200  # still signed in
