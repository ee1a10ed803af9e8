"""The buyer's path in headless Chromium (Playwright, sync API) against a real uvicorn server:
order through the API → scheduler → email received by a real aiosmtpd server → link opened →
ID created → order state updated. Also the form's errors, link problems and the language switch.

Needs Debian's ``chromium`` package (``/usr/bin/chromium``); without it these tests are skipped,
unless ``ONBOARDING_REQUIRE_BROWSER=1`` (CI) turns the absence into a failure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from onboarding.activation.models import SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from tests.browser_support import (
    LiveServer,
    live_server,
    run_jobs_in_thread,
)
from tests.conftest import Database, SmtpServer
from tests.helpers import link_in, order_payload, put_order
from tests.sms_gateway import Gateway, wait_for_code

pytestmark = pytest.mark.browser

BUYER = "astrid@example.com"
STRONG_PASSWORD = "violet-tundra-harbour-9"
SE_SUPPORT = "smartmobility@se.nordlicht-motors.example"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def live(
    smtp_settings: Settings, db: Database, reference: None, sms_gateway: Gateway
) -> Iterator[LiveServer]:
    http_sms = smtp_settings.model_copy(update={"sms_backend": "http", "sms_http_url": sms_gateway.url})
    with live_server(http_sms, db.factory) as server:
        yield server


@pytest.fixture
def api(live: LiveServer, api_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers=api_headers, timeout=30) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------------


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def order_and_invite(
    api: httpx.Client, live: LiveServer, db: Database, smtp: SmtpServer, number: str, **overrides: Any
) -> str:
    """PUT the order through the API (delivery in 5 days, so the invitation is due at once), run the
    scheduler with the real clock and return the link from the one email the SMTP server received."""
    delivery = utcnow().date() + timedelta(days=5)
    response = api.put(f"/api/v1/orders/{number}", json=order_payload(delivery, **overrides))
    assert response.status_code == 201, response.text
    assert response.json()["onboarding"]["stage"] == "due"

    report = run_jobs_in_thread(db.factory, live.settings, utcnow())
    assert (report.invited, report.sent, report.failed) == (1, 1, 0), report

    messages = smtp.mailbox.to(BUYER)
    assert len(messages) == 1, [m["Subject"] for m in smtp.mailbox.messages]
    link = link_in(messages[0])
    assert link.startswith(f"{live.url}/i/"), link
    return link


def onboarding_state(api: httpx.Client, number: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/orders/{number}")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()["onboarding"]
    return state


def fill_id_form(page: Any, *, password: str, confirmation: str) -> None:
    page.get_by_label("First name").fill("Astrid")
    page.get_by_label("Last name").fill("Lindqvist")
    page.get_by_label("Date of birth").fill("1985-04-12")
    page.get_by_label("Country or region").select_option("SE")
    page.get_by_role("combobox", name="Language", exact=True).select_option("en")
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Repeat password").fill(confirmation)
    page.get_by_label("I accept the terms of use.").check()
    page.get_by_label("I have read the privacy notice.").check()


def accounts(db: Database) -> int:
    with db.factory() as session:
        return int(session.scalar(select(func.count()).select_from(Account)) or 0)


# --- tests ---------------------------------------------------------------------------------------


def test_order_to_activated_id_in_chromium(
    page: Any,
    live: LiveServer,
    api: httpx.Client,
    db: Database,
    smtp: SmtpServer,
    sms_gateway: Gateway,
    tmp_path: Path,
) -> None:
    expect = _expect()
    link = order_and_invite(api, live, db, smtp, "B-1001", language="en")
    assert onboarding_state(api, "B-1001")["stage"] == "invited"

    response = page.goto(link)
    assert response is not None and response.ok
    expect(page).to_have_url(f"{live.url}/activate")  # the token left the address bar
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Welcome, Astrid")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("Nordlicht E40")
    expect(page.locator("dl.facts")).to_contain_text("Centre Stockholm")
    expect(page.locator("footer")).to_contain_text(SE_SUPPORT)
    page.screenshot(path=str(tmp_path / "landing.png"), full_page=True)
    assert onboarding_state(api, "B-1001")["stage"] == "opened"

    page.get_by_role("link", name="Continue to activation").click()
    expect(page).to_have_url(f"{live.url}/activate/id")
    expect(page.get_by_label("Email address")).to_have_value(BUYER)
    fill_id_form(page, password=STRONG_PASSWORD, confirmation=STRONG_PASSWORD)
    page.get_by_role("button", name="Create ID and continue").click()

    # The mobile number: a code texted through the real HTTP gateway, typed in.
    expect(page).to_have_url(f"{live.url}/activate/phone")
    expect(page.locator("main")).to_contain_text("••• ••• 45 67")
    page.get_by_role("button", name="Send the code").click()
    code = wait_for_code(sms_gateway, "+46701234567")
    page.get_by_label("Code from the SMS").fill(code)
    page.get_by_role("button", name="Verify and continue").click()
    # The E40 needs a security PIN; a trivial one is refused with the reason.
    expect(page).to_have_url(f"{live.url}/activate/pin")
    page.get_by_label("New PIN").fill("1234")
    page.get_by_label("Repeat the PIN").fill("1234")
    page.get_by_role("button", name="Save the PIN").click()
    expect(page.locator("#pin-error")).to_contain_text("run in order")
    page.get_by_label("New PIN").fill("7291")
    page.get_by_label("Repeat the PIN").fill("7291")
    page.get_by_role("button", name="Save the PIN").click()

    # Terms and consents, billing address, Data Pass, services, the vehicle (no VIN yet).
    expect(page).to_have_url(f"{live.url}/activate/terms")
    page.locator("#accept_terms").check()
    page.locator("#accept_privacy").check()
    page.get_by_role("button", name="Accept and continue").click()
    expect(page).to_have_url(f"{live.url}/activate/billing")
    page.get_by_label("Street and house number").fill("Storgatan 1")
    page.get_by_label("Postal code").fill("114 51")
    page.get_by_label("City").fill("Stockholm")
    page.get_by_role("button", name="Save and continue").click()
    expect(page).to_have_url(f"{live.url}/activate/data-pass")
    page.get_by_role("button", name="Not now").click()
    expect(page).to_have_url(f"{live.url}/activate/services")
    page.get_by_role("button", name="Activate the services and continue").click()
    expect(page).to_have_url(f"{live.url}/activate/vehicle")
    page.get_by_role("button", name="Continue").click()
    # An electric car: the charging service is offered (booked later, once the car is linked).
    expect(page).to_have_url(f"{live.url}/activate/charging")
    page.get_by_role("button", name="Not now").click()

    expect(page).to_have_url(f"{live.url}/activate/done")
    expect(page.get_by_role("heading", name="Your ID is ready")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Nordlicht E40")
    expect(page.locator("main")).to_contain_text("Centre Stockholm")

    state = onboarding_state(api, "B-1001")
    assert state["stage"] == "completed"
    assert state["id_created_at"] is not None
    assert state["completed_at"] is not None
    assert accounts(db) == 1

    # The link is single use: opening it again explains that it has been used.
    page.goto(link)
    expect(page.get_by_role("heading", name="This invitation has already been used")).to_be_visible()


def test_form_errors_are_shown_next_to_the_fields(
    page: Any, live: LiveServer, api: httpx.Client, db: Database, smtp: SmtpServer, tmp_path: Path
) -> None:
    expect = _expect()
    link = order_and_invite(api, live, db, smtp, "B-1002", language="en")
    page.goto(link)
    page.get_by_role("link", name="Continue to activation").click()
    expect(page).to_have_url(f"{live.url}/activate/id")

    fill_id_form(page, password="password123", confirmation="password124")
    with page.expect_response(
        lambda r: r.url.endswith("/activate/id") and r.request.method == "POST"
    ) as info:
        page.get_by_role("button", name="Create ID and continue").click()
    assert info.value.status == 422

    expect(page).to_have_url(f"{live.url}/activate/id")
    expect(page.get_by_role("alert")).to_contain_text("Please correct the highlighted fields.")
    password_error = page.locator("#password-error")
    expect(password_error).to_be_visible()
    expect(password_error).to_contain_text("too common")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute(
        "aria-describedby", "password-error password-hint"
    )
    confirmation_error = page.locator("#password_confirmation-error")
    expect(confirmation_error).to_be_visible()
    expect(confirmation_error).to_have_text("The two passwords differ.")
    expect(page.get_by_label("Repeat password")).to_have_attribute("aria-invalid", "true")
    # Fields without a problem are not marked, and what the buyer typed is kept (but never a password).
    expect(page.get_by_label("First name")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("First name")).to_have_value("Astrid")
    expect(page.get_by_label("Date of birth")).to_have_value("1985-04-12")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    page.screenshot(path=str(tmp_path / "form-errors.png"), full_page=True)

    state = onboarding_state(api, "B-1002")
    assert state["stage"] == "opened"
    assert state["id_created_at"] is None
    assert accounts(db) == 0


def test_expired_link_offers_a_new_invitation(
    page: Any, live: LiveServer, db: Database, smtp: SmtpServer
) -> None:
    expect = _expect()
    sent = utcnow() - timedelta(days=20)  # sent 20 days ago: its 14 days have run out
    put_order(
        db.factory,
        live.settings,
        "B-1003",
        sent,
        **order_payload(sent.date() + timedelta(days=5), language="en"),
    )
    report = run_jobs_in_thread(db.factory, live.settings, sent)
    assert (report.invited, report.sent) == (1, 1), report
    link = link_in(smtp.mailbox.to(BUYER)[0])

    response = page.goto(link)
    assert response is not None and response.status == 410
    expect(page.get_by_role("heading", name="This invitation link has expired")).to_be_visible()
    expect(page.locator("main")).to_contain_text("valid for 14 days")
    expect(page.locator("footer")).to_contain_text(SE_SUPPORT)

    page.get_by_label("Message to support (optional)").fill("My link has expired.")
    page.get_by_role("button", name="Request a new invitation").click()
    expect(page.get_by_role("heading", name="Request received")).to_be_visible()
    expect(page.locator("main")).to_contain_text(SE_SUPPORT)

    with db.factory() as session:
        request = session.scalars(select(SupportRequest)).one()
        assert (request.kind, request.country, request.routed_to) == ("new_invitation", "SE", SE_SUPPORT)
        assert request.contact_email == BUYER
        assert request.order_id is not None


def test_unknown_link_offers_a_new_invitation(page: Any, live: LiveServer, db: Database) -> None:
    expect = _expect()
    response = page.goto(f"{live.url}/i/this-is-not-a-real-invitation-token")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="We don't recognise this link")).to_be_visible()
    expect(page.locator("footer")).to_contain_text("support@nordlicht-motors.example")

    page.get_by_label("Your email address").fill(BUYER)
    page.get_by_label("Country or region").select_option("SE")
    page.get_by_role("button", name="Request a new invitation").click()
    expect(page.get_by_role("heading", name="Request received")).to_be_visible()
    expect(page.locator("main")).to_contain_text(SE_SUPPORT)

    with db.factory() as session:
        request = session.scalars(select(SupportRequest)).one()
        assert (request.country, request.routed_to, request.contact_email) == ("SE", SE_SUPPORT, BUYER)
        assert request.order_id is None


def test_language_switch_in_the_header(
    page: Any, live: LiveServer, api: httpx.Client, db: Database, smtp: SmtpServer
) -> None:
    expect = _expect()
    link = order_and_invite(api, live, db, smtp, "B-1004", language="en")
    page.goto(link)
    expect(page.locator("html")).to_have_attribute("lang", "en")

    page.get_by_role("navigation").get_by_role("link", name="Svenska").click()
    expect(page).to_have_url(f"{live.url}/activate?lang=sv")
    expect(page.locator("html")).to_have_attribute("lang", "sv")
    expect(page.get_by_role("navigation").get_by_role("link", name="Svenska")).to_have_attribute(
        "aria-current", "true"
    )
    # The choice is remembered for the following pages.
    page.goto(f"{live.url}/activate/id")
    expect(page.locator("html")).to_have_attribute("lang", "sv")
