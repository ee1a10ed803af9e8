"""The staff portal in headless Chromium on a tablet screen (issue 15): a staff member's first login
from the invitation email (password, then the authenticator enrolled from the key on the page, and
the backup codes); a buyer's "wrong number" request taken from the inbox, the number corrected on
the order (which closes the request), and the buyer's next code arriving at the new number; the
invitation resent (the old link stops working); the email address corrected, which re-invites to it.
Real SMTP and SMS gateway servers on loopback receive what is sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
import pytest

from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.portal import staff as staff_service
from tests.activation.test_browser import BUYER, STRONG_PASSWORD, order_and_invite
from tests.browser_support import (
    CHROMIUM_ARGS,
    PHONE,
    LiveServer,
    live_server,
    require_chromium,
    run_jobs_in_thread,
)
from tests.conftest import Database, SmtpServer
from tests.helpers import link_in
from tests.portal.portal_support import STAFF_PASSWORD, make_staff
from tests.sms_gateway import Gateway, wait_for_code

pytestmark = pytest.mark.browser

TABLET = {"width": 1024, "height": 768}
STAFF = "support@brand.example"
NEW_PHONE = "+46707654321"


@pytest.fixture
def live(
    smtp_settings: Settings, db: Database, reference: None, sms_gateway: Gateway
) -> Iterator[LiveServer]:
    http_sms = smtp_settings.model_copy(update={"sms_backend": "http", "sms_http_url": sms_gateway.url})
    with live_server(http_sms, db.factory) as server:
        yield server


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _submit(page: Any, action: str) -> None:
    page.locator(f'form[action="{action}"] button[type=submit]').first.click()
    page.wait_for_load_state()


def _first_login(page: Any, live: LiveServer, db: Database, smtp: SmtpServer) -> None:
    with transaction(db.factory) as session:
        member, token = staff_service.create_staff(
            session,
            email=STAFF,
            name="Sara Support",
            role="market_agent",
            dealer_code=None,
            country="SE",
            language="en",
            creator=None,
            now=utcnow(),
        )
        staff_service.send_invitation(session, live.settings, member, token, now=utcnow())
    run_jobs_in_thread(db.factory, live.settings, utcnow())
    [invitation] = smtp.mailbox.to(STAFF)
    body = invitation.get_body(("plain",))
    assert body is not None
    link = re.search(r"https?://\S+/portal/invite/[A-Za-z0-9_\-]+", body.get_content())
    assert link is not None
    page.goto(link.group(0))
    page.locator("#password").fill(STAFF_PASSWORD)
    page.locator("#password_confirmation").fill(STAFF_PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    assert page.url.endswith("/portal/login?set=1")
    page.locator("#email").fill(STAFF)
    page.locator("#password").fill(STAFF_PASSWORD)
    _submit(page, "/portal/login")
    assert "/portal/login/enrol" in page.url
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.locator("#code").fill(pyotp.TOTP(secret).at(datetime.now(UTC)))
    _submit(page, "/portal/login/enrol")
    codes = page.locator("#backup-codes li").all_inner_texts()
    assert len(codes) == 10
    page.locator("main a", has_text="Continue to the portal").click()
    page.wait_for_load_state()
    assert page.url.endswith("/portal/orders")


def test_staff_first_login_and_the_support_actions(
    chromium: Any,
    live: LiveServer,
    db: Database,
    smtp: SmtpServer,
    sms_gateway: Gateway,
    api_headers: dict[str, str],
) -> None:
    staff = chromium.new_context(viewport=TABLET, locale="en-GB").new_page()
    _first_login(staff, live, db, smtp)

    with httpx.Client(base_url=live.url, headers=api_headers, timeout=30) as api:
        link = order_and_invite(api, live, db, smtp, "SO-7")

    # The buyer creates the ID and, at the phone step, says the number is wrong.
    buyer = chromium.new_context(viewport=PHONE, is_mobile=True, locale="en-GB").new_page()
    buyer.goto(link)
    buyer.locator("main a.button").first.click()
    buyer.locator("#first_name").fill("Astrid")
    buyer.locator("#last_name").fill("Lindqvist")
    buyer.locator("#birth_date").fill("1985-04-12")
    buyer.locator("input[name=password]").fill(STRONG_PASSWORD)
    buyer.locator("input[name=password_confirmation]").fill(STRONG_PASSWORD)
    buyer.locator("#accept_terms").check()
    buyer.locator("#accept_privacy").check()
    _submit(buyer, "/activate/id")
    assert buyer.url.endswith("/activate/phone")
    buyer.goto(f"{live.url}/activate/phone/wrong")
    buyer.locator("#message").fill(f"My number is {NEW_PHONE}")
    _submit(buyer, "/activate/phone/wrong")

    # Staff take it from the inbox, correct the number on the order; the request is closed.
    staff.goto(f"{live.url}/portal/requests")
    staff.locator("#requests a[href^='/portal/requests/']").first.click()
    staff.wait_for_load_state()
    request_url = staff.url
    staff.locator("form[action$='/take'] button").click()
    staff.wait_for_load_state()
    assert staff.locator("#request-status").get_attribute("data-status") == "in_progress"
    staff.locator("dd a[href='/portal/orders/SO-7']").click()
    staff.wait_for_load_state()
    staff.locator("#phone-phone").fill(NEW_PHONE)
    staff.locator("#phone-reason").fill("The buyer wrote the right number in the request")
    _submit(staff, "/portal/orders/SO-7/phone")
    assert staff.locator(".notice").is_visible()
    staff.goto(request_url)
    assert staff.locator("#request-status").get_attribute("data-status") == "done"

    # The buyer's next code goes to the corrected number.
    buyer.goto(f"{live.url}/activate/phone")
    _submit(buyer, "/activate/phone/send")
    assert wait_for_code(sms_gateway, NEW_PHONE)
    assert sms_gateway.codes_to("+46701234567") == []

    # Resend: the old link stops working and a new one arrives.
    staff.goto(f"{live.url}/portal/orders/SO-7")
    staff.locator("#resend-reason").fill("The buyer asked for a fresh link")
    _submit(staff, "/portal/orders/SO-7/resend")
    assert httpx.get(link, follow_redirects=True).status_code != 200
    run_jobs_in_thread(db.factory, live.settings, utcnow())
    assert len(smtp.mailbox.to(BUYER)) == 2

    # The email address corrected: the invitation goes to the new one.
    staff.locator("#email-email").fill("astrid.lindqvist@example.com")
    staff.locator("#email-reason").fill("Typo in the order")
    _submit(staff, "/portal/orders/SO-7/email")
    run_jobs_in_thread(db.factory, live.settings, utcnow())
    [corrected] = smtp.mailbox.to("astrid.lindqvist@example.com")
    assert httpx.get(link_in(corrected), follow_redirects=True).status_code == 200
    timeline = staff.locator("#timeline").inner_text()
    assert "phone_corrected" in timeline and "email_corrected" in timeline


def test_csv_dry_run_shows_the_row_errors(
    chromium: Any, live: LiveServer, db: Database, tmp_path: Any
) -> None:
    _id, secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=live.settings
    )
    page = chromium.new_context(viewport=TABLET, locale="en-GB").new_page()
    page.goto(f"{live.url}/portal/login")
    page.locator("#email").fill("agent@se01.example")
    page.locator("#password").fill(STAFF_PASSWORD)
    _submit(page, "/portal/login")
    page.locator("#code").fill(pyotp.TOTP(secret).at(datetime.now(UTC)))
    _submit(page, "/portal/login/verify")
    csv_file = tmp_path / "orders.csv"
    csv_file.write_text(
        "order_number,dealer_code,model_code,vin,buyer_first_name,buyer_last_name,buyer_email,buyer_phone,"
        "country,language,planned_delivery_date\n"
        "B-1,SE-01,E40,,Kim,Berg,kim@example.com,+46701234567,SE,sv,2027-05-01\n"
        "B-2,SE-01,E40,,Lo,Berg,not-an-address,+46701234567,SE,sv,2027-13-01\n"
    )
    page.goto(f"{live.url}/portal/import")
    page.locator("#file").set_input_files(str(csv_file))
    _submit(page, "/portal/import")
    page.locator("#job-state[data-state='done']").wait_for(timeout=20_000)  # the page refreshes itself
    rows = page.locator("#row-errors tbody tr").all_inner_texts()
    assert any("buyer_email" in row and row.startswith("3") for row in rows), rows
    assert any("planned_delivery_date" in row for row in rows), rows
    assert page.locator("form[action$='/run']").count() == 0  # nothing to import from a file with errors
