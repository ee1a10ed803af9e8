"""Account security in headless Chromium against a real uvicorn server: TOTP enrolment from the QR
code as drawn (decoded with zxing-cpp) and the key as shown, login with a TOTP code computed by
pyotp, backup codes downloaded and shown once, a backup code that works once and only once, the
lockout after 10 wrong passwords and its message, and the whole password-reset flow with the link
from a real SMTP server.

(SMS verification with the code read from a real HTTP gateway is in tests/activation/test_browser.py.)"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import zxingcpp

from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from tests.account_support import BIRTH, NEW_PASSWORD, PASSWORD, make_account
from tests.browser_support import LiveServer, live_server
from tests.conftest import Database, SmtpServer

pytestmark = pytest.mark.browser

EMAIL = "astrid@example.com"


@pytest.fixture
def live(smtp_settings: Settings, db: Database) -> Iterator[LiveServer]:
    with live_server(smtp_settings, db.factory) as server:
        make_account(db.factory, server.settings, utcnow())
        yield server


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _log_in(page: Any, live: LiveServer, password: str = PASSWORD) -> None:
    page.goto(f"{live.url}/login")
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def _log_out(page: Any) -> None:
    page.get_by_role("button", name="Log out").click()


def _scan_qr_code(png: bytes) -> str:
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert [barcode.format for barcode in found] == [zxingcpp.BarcodeFormat.QRCode]
    return str(found[0].text)


def test_totp_login_and_a_backup_code_works_once(page: Any, live: LiveServer) -> None:
    expect = _expect()
    _log_in(page, live)
    expect(page).to_have_url(f"{live.url}/account")
    page.get_by_role("link", name="Security").click()
    page.get_by_role("button", name="Use an authenticator app").click()
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    # What a phone gets: the QR code as Chromium draws it, decoded, and the key as typed by hand.
    scanned = _scan_qr_code(qr.screenshot())
    typed = page.locator("#totp-secret").inner_text().replace(" ", "")
    otpauth = urlsplit(scanned)
    query = parse_qs(otpauth.query)
    assert (otpauth.scheme, otpauth.netloc) == ("otpauth", "totp")
    assert unquote(otpauth.path) == f"/{live.settings.brand_name}:{EMAIL}"
    assert query["issuer"] == [live.settings.brand_name]
    assert query["secret"] == [typed] and re.fullmatch(r"[A-Z2-7]{32}", typed)
    totp = pyotp.TOTP(typed)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-step verification").click()
    expect(page.get_by_role("heading", name="Your backup codes")).to_be_visible()
    codes = page.locator("#backup-codes li").all_inner_texts()
    assert len(codes) == len(set(codes)) == 10
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the codes").click()
    assert download.value.suggested_filename.endswith("backup-codes.txt")
    assert Path(download.value.path()).read_text().split() == codes
    page.get_by_role("link", name="Done").click()
    expect(page).to_have_url(f"{live.url}/account/security")
    assert not any(code in page.content() for code in codes)  # shown once: no page shows them again
    _log_out(page)

    # Password, then the app's code (the next time step: the enrolment code is spent).
    _log_in(page, live)
    expect(page.get_by_role("heading", name="Two-step verification")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(totp.at(utcnow(), counter_offset=1))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{live.url}/account")
    _log_out(page)

    for attempt in range(2):
        _log_in(page, live)
        page.get_by_role("link", name="Use a backup code").click()
        page.get_by_label("One of your backup codes").fill(codes[0])
        page.get_by_role("button", name="Verify").click()
        if attempt == 0:
            expect(page).to_have_url(f"{live.url}/account")
            _log_out(page)
        else:
            expect(page.get_by_role("alert")).to_contain_text("not correct, or was already used")
            expect(page).to_have_url(re.compile(r"/login/verify$"))


def test_lockout_after_ten_wrong_passwords_and_its_message(page: Any, live: LiveServer) -> None:
    expect = _expect()
    for _ in range(9):
        _log_in(page, live, password="not-the-password-1")
        expect(page.get_by_role("alert")).to_contain_text("The email address or password is not correct.")
    _log_in(page, live, password="not-the-password-1")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The maximum number of failed login attempts has been reached")
    expect(alert).to_contain_text("120 minutes")
    # The right password does not get in while locked; the reset link is offered.
    _log_in(page, live)
    expect(page.get_by_role("alert")).to_contain_text("locked")
    expect(page.get_by_role("alert").get_by_role("link", name="Reset your password")).to_be_visible()


def test_the_whole_password_reset_flow(page: Any, live: LiveServer, smtp: SmtpServer) -> None:
    expect = _expect()
    page.goto(f"{live.url}/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    def reset_links() -> list[str]:
        found = []
        for message in smtp.mailbox.to(EMAIL):
            body = message.get_body(("plain",))
            assert body is not None
            found += re.findall(r"https?://\S+/password/reset/[A-Za-z0-9_\-]+", body.get_content())
        return found

    for _ in range(100):  # the email leaves right after the response
        if reset_links():
            break
        page.wait_for_timeout(100)
    [link] = reset_links()
    page.goto(link)
    expect(page).to_have_url(f"{live.url}/password/reset")  # the token left the address bar
    expect(page.get_by_role("heading", name="Confirm who you are")).to_be_visible()
    page.get_by_label("Date of birth").fill("1990-01-01")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#birth_date-error")).to_contain_text("does not match")
    page.get_by_label("Date of birth").fill(BIRTH.isoformat())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Repeat password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save the new password").click()
    expect(page.get_by_role("heading", name="Your password was changed")).to_be_visible()
    # No automatic login: the account page asks to log in; the used link is dead.
    page.goto(f"{live.url}/account")
    expect(page).to_have_url(re.compile(r"/login\?next=/account$"))
    page.goto(link)
    expect(page.get_by_role("heading", name="This link no longer works")).to_be_visible()
    _log_in(page, live, password=NEW_PASSWORD)
    expect(page).to_have_url(f"{live.url}/account")
