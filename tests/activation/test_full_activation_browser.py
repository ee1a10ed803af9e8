"""The whole activation in headless Chromium on a phone screen (issue 12): from the invitation email
to the done page and My vehicles, for a BEV with PIN, Data Pass and a company billing address in
Swedish, and for an ICE model (no PIN, no Data Pass, no VIN yet) in English. After every step the
browser is closed (only the cookies a browser keeps over a restart survive) and the buyer opens the
email's link again: the flow resumes at the step that is due.

The forms are driven by their fields' names and the forms' actions, so the same walk serves any
language; what the pages say is checked in the language of the walk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from onboarding.core.i18n import gettext_, use_language
from onboarding.identity.models import BillingAddress, Consent
from tests.activation.test_browser import BUYER, STRONG_PASSWORD, onboarding_state, order_and_invite
from tests.browser_support import CHROMIUM_ARGS, PHONE, LiveServer, live_server, require_chromium
from tests.conftest import Database, SmtpServer
from tests.sms_gateway import Gateway, wait_for_code
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Vehicle, VehicleService, VehicleUser

pytestmark = pytest.mark.browser

VIN = "WNL0E40A0R1234567"


@pytest.fixture
def live(smtp_settings: Any, db: Database, reference: None, sms_gateway: Gateway) -> Iterator[LiveServer]:
    http_sms = smtp_settings.model_copy(update={"sms_backend": "http", "sms_http_url": sms_gateway.url})
    with live_server(http_sms, db.factory) as server:
        yield server


@pytest.fixture
def api(live: LiveServer, api_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers=api_headers, timeout=30) as client:
        yield client


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Buyer:
    """One person's phone: a browser that is closed and opened again between the steps."""

    def __init__(self, chromium: Any, live: LiveServer, link: str, language: str) -> None:
        self.chromium, self.live, self.link, self.language = chromium, live, link, language
        self.context: Any = None
        self.page: Any = None
        self.restarts = 0
        self._open([])

    def _open(self, cookies: list[dict[str, Any]]) -> None:
        self.context = self.chromium.new_context(
            viewport=PHONE, is_mobile=True, device_scale_factor=2, locale=f"{self.language}-SE"
        )
        self.context.add_cookies(cookies)
        self.page = self.context.new_page()

    def restart_and_reopen_the_link(self) -> str:
        """Close the browser (session cookies go, persistent ones stay), open the email's link again, log
        in if the ID is signed out, and return the path of the step the flow resumes at."""
        kept = [cookie for cookie in self.context.cookies() if cookie["expires"] > 0]
        self.context.close()
        self._open(kept)
        self.restarts += 1
        self.page.goto(self.link)
        url = self.page.url
        if url.endswith("/activate"):
            self.page.locator("main a.button").first.click()
            url = self.page.url
        if "/login" in url:
            self.page.locator("input[name=email]").fill(BUYER)
            self.page.locator("input[name=password]").fill(STRONG_PASSWORD)
            self.submit("/login")
            url = self.page.url
        return str(url).removeprefix(self.live.url)

    def submit(self, action: str, button: str = "") -> None:
        form = self.page.locator(f'form[action="{action}"]').first
        form.locator(f"button[type=submit]{button}").first.click()
        self.page.wait_for_load_state()

    def text(self, message: str, **params: Any) -> str:
        with use_language(self.language):
            return gettext_(message) % params if params else gettext_(message)


def _id_and_phone(buyer: Buyer, sms_gateway: Gateway) -> None:
    page = buyer.page
    page.goto(buyer.link)
    page.locator("main a.button").first.click()
    assert page.url.endswith("/activate/id")
    page.locator("#first_name").fill("Astrid")
    page.locator("#last_name").fill("Lindqvist")
    page.locator("#birth_date").fill("1985-04-12")
    page.locator("input[name=password]").fill(STRONG_PASSWORD)
    page.locator("input[name=password_confirmation]").fill(STRONG_PASSWORD)
    page.locator("#accept_terms").check()
    page.locator("#accept_privacy").check()
    buyer.submit("/activate/id")
    assert buyer.restart_and_reopen_the_link() == "/activate/phone"
    buyer.submit("/activate/phone/send")
    buyer.page.locator("input[name=code]").fill(wait_for_code(sms_gateway, "+46701234567"))
    buyer.submit("/activate/phone")


def _terms(buyer: Buyer, *, share_with_dealer: bool) -> None:
    page = buyer.page
    expect = _expect()
    # Missing the required boxes: refused, named, nothing stored; then accepted.
    buyer.submit("/activate/terms")
    expect(page.locator("#accept_terms")).to_have_attribute("aria-invalid", "true")
    page.locator("#accept_terms").check()
    page.locator("#accept_privacy").check()
    if share_with_dealer:
        page.locator("#share_with_partner").check()
        assert page.locator("#partner").input_value() == "SE-01"  # the order's dealer, preselected
    buyer.submit("/activate/terms")


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_a_swedish_bev_buyer_with_pin_data_pass_and_a_company_address(
    chromium: Any, live: LiveServer, api: httpx.Client, db: Database, smtp: SmtpServer, sms_gateway: Gateway
) -> None:
    expect = _expect()
    link = order_and_invite(api, live, db, smtp, "B-2001", language="sv", vin=VIN)
    buyer = Buyer(chromium, live, link, "sv")
    _id_and_phone(buyer, sms_gateway)

    assert buyer.restart_and_reopen_the_link() == "/activate/pin"
    buyer.page.locator("#pin").fill("7291")
    buyer.page.locator("#pin_confirmation").fill("7291")
    buyer.submit("/activate/pin")

    assert buyer.restart_and_reopen_the_link() == "/activate/terms"
    expect(buyer.page.locator("html")).to_have_attribute("lang", "sv")
    _terms(buyer, share_with_dealer=True)

    assert buyer.restart_and_reopen_the_link() == "/activate/billing"
    page = buyer.page
    assert page.locator("#recipient_name").input_value() == "Astrid Lindqvist"
    page.locator("#kind-company").check()
    page.locator("#company_name").fill("Lindqvist Konsult AB")
    page.locator("#vat_id").fill("SE556036079401")  # a wrong check digit
    page.locator("#street").fill("Storgatan 1")
    page.locator("#postal_code").fill("114 51")
    page.locator("#city").fill("Stockholm")
    buyer.submit("/activate/billing")
    expect(page.locator("#vat_id")).to_have_attribute("aria-invalid", "true")
    page.locator("#vat_id").fill("SE556036079301")  # valid (mod 10)
    buyer.submit("/activate/billing")

    assert buyer.restart_and_reopen_the_link() == "/activate/data-pass"
    expect(buyer.page.locator("main")).to_contain_text("Nordnet Mobil")
    buyer.submit("/activate/data-pass", '[value="accept"]')

    assert buyer.restart_and_reopen_the_link() == "/activate/services"
    main = buyer.page.locator("main")
    # Exactly the model's services for Sweden (navigation, remote climate), in Swedish.
    expect(main).to_contain_text("Fjärrstyrd klimatanläggning")
    expect(main).to_contain_text("Onlinenavigering")
    expect(main).not_to_contain_text("Fjärrlåsning")
    buyer.submit("/activate/services")

    # The order has a VIN: the car is linked at once; an electric car is offered the charging service.
    expect(buyer.page).to_have_url(f"{live.url}/activate/charging")
    assert buyer.restart_and_reopen_the_link() == "/activate/charging"
    buyer.submit("/activate/charging", "")  # the first form books
    expect(buyer.page).to_have_url(f"{live.url}/activate/done")
    expect(buyer.page.locator("main")).to_contain_text(buyer.text("What happens next in your car"))
    buyer.page.locator('main a[href="/vehicles"]').first.click()
    expect(buyer.page).to_have_url(f"{live.url}/vehicles")
    expect(buyer.page.locator("main")).to_contain_text(VIN)
    with db.factory() as session:
        contract = session.scalars(select(ChargingContract)).one()
        card = session.scalars(select(ChargingCard)).one()
    # My vehicles shows the contract and its card on its way.
    expect(buyer.page.locator("main")).to_contain_text(contract.emaid)
    expect(buyer.page.locator("main")).to_contain_text(card.visual_number)
    assert buyer.restarts == 7

    state = onboarding_state(api, "B-2001")
    assert state["stage"] == "completed" and state["vehicle_linked_at"] is not None
    assert state["data_pass_at"] is not None and state["billing_checked_at"] is not None
    with db.factory() as session:
        billing = session.scalars(select(BillingAddress)).one()
        assert (billing.kind, billing.vat_id, billing.city) == ("company", "SE556036079301", "Stockholm")
        kinds = {
            (c.kind, c.subject)
            for c in session.scalars(select(Consent).where(Consent.withdrawn_at.is_(None)))
        }
        assert {("partner_data_sharing", "SE-01"), ("data_pass", "SE")} <= kinds
        vehicle = session.scalars(select(Vehicle)).one()
        assert vehicle.vin == VIN
        assert [u.role for u in session.scalars(select(VehicleUser))] == ["primary"]
        codes = sorted(s.service_code for s in session.scalars(select(VehicleService)))
        assert codes == ["navigation", "remote_climate"]


def test_an_english_ice_buyer_without_pin_data_pass_or_vin(
    chromium: Any, live: LiveServer, api: httpx.Client, db: Database, smtp: SmtpServer, sms_gateway: Gateway
) -> None:
    expect = _expect()
    link = order_and_invite(api, live, db, smtp, "B-2002", language="en", model_code="S90")
    buyer = Buyer(chromium, live, link, "en")
    _id_and_phone(buyer, sms_gateway)

    # No PIN for the S90.
    assert buyer.restart_and_reopen_the_link() == "/activate/terms"
    _terms(buyer, share_with_dealer=False)
    assert buyer.restart_and_reopen_the_link() == "/activate/billing"
    buyer.page.locator("#street").fill("Storgatan 1")
    buyer.page.locator("#postal_code").fill("11451")
    buyer.page.locator("#city").fill("Stockholm")
    buyer.submit("/activate/billing")
    # No Data Pass for the S90.
    assert buyer.restart_and_reopen_the_link() == "/activate/services"
    expect(buyer.page.locator("main")).to_contain_text("Online navigation")
    buyer.submit("/activate/services")
    # No VIN yet: the page says the link follows.
    assert buyer.restart_and_reopen_the_link() == "/activate/vehicle"
    expect(buyer.page.locator("main")).to_contain_text("VIN")
    buyer.submit("/activate/vehicle")
    expect(buyer.page).to_have_url(f"{live.url}/activate/done")
    assert onboarding_state(api, "B-2002")["vehicle_linked_at"] is None

    # The factory assigns the VIN: the car is linked to the ID, once, and My vehicles shows it.
    for _ in range(2):
        assert api.put("/api/v1/orders/B-2002/vin", json={"vin": VIN}).status_code == 200
    assert onboarding_state(api, "B-2002")["vehicle_linked_at"] is not None
    buyer.page.goto(f"{live.url}/vehicles")
    main = buyer.page.locator("main")
    expect(main).to_contain_text("Nordlicht S90")
    expect(main).to_contain_text(VIN)
    expect(main).to_contain_text("Online navigation")
    with db.factory() as session:
        assert len(session.scalars(select(VehicleUser)).all()) == 1
