"""Pages say what they are and who to ask (issue 11, items 7, 8 and 18): error pages branded and
translated with the support contact, a specific <title> matching the page's heading on every page,
the terms and privacy texts the consents refer to, and support addresses as mailto: links."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select, update

from notifications.models import DevMailboxMessage
from notifications.support import FALLBACK_NOTE
from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity.models import Consent
from onboarding.ops.app import create_app
from onboarding.web.problems import ERROR_PAGES
from tests.account_support import BIRTH, link_to, log_in, make_account
from tests.conftest import Database
from tests.helpers import (
    csrf,
    finish_after_pin,
    id_form,
    invite_through_api,
    path_of,
    set_pin_step,
    verify_phone_step,
)
from vehicles.incar import clients, device_login
from vehicles.models import Vehicle

BRAND = "Nordlicht Motors"
GENERAL_SUPPORT = "support@nordlicht-motors.example"
SE_SUPPORT = "smartmobility@se.nordlicht-motors.example"
OLD_NOTE = "Your country is not in the support directory"
LANGS = ("en", "de", "sv", "nb")


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def title_of(page: str) -> str:
    found = re.search(r"<title>(.*?)</title>", page, re.DOTALL)
    assert found, page[:500]
    return _text(found.group(1))


def h1_of(page: str) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", page, re.DOTALL)
    assert len(found) == 1, found
    return _text(found[0])


def footer_of(page: str) -> str:
    found = re.search(r"<footer>(.*?)</footer>", page, re.DOTALL)
    assert found
    return found.group(1)


def translated(lang: str, message: str) -> str:
    with use_language(lang):
        return gettext_(message)


# --- every page's title ---------------------------------------------------------------------------------


@dataclass
class Visit:
    """A browser's way to a page, with what it needs on the way (an invitation, an ID)."""

    client: TestClient
    db: Database
    settings: Settings
    api_headers: dict[str, str]
    link: str = ""
    seen: dict[str, Any] = field(default_factory=dict)

    def invited(self, **order: Any) -> Visit:
        self.link = invite_through_api(self.client, self.db.factory, self.settings, self.api_headers, **order)
        assert self.client.get(path_of(self.link)).status_code == 200
        return self

    def with_id(self) -> Visit:
        self.invited()
        created = self.client.post("/activate/id", data=id_form(self.client), follow_redirects=False)
        assert created.status_code == 303, created.text
        return self

    def phone_verified(self) -> Visit:
        self.with_id()
        assert verify_phone_step(self.client, self.db.factory).status_code == 303
        return self

    def at_step(self, url: str, **order: Any) -> Any:
        """The buyer's page of the activation step ``url`` (after the PIN), the steps before it done."""
        self.invited(**order)
        assert self.client.post("/activate/id", data=id_form(self.client)).status_code == 200
        verify_phone_step(self.client, self.db.factory)
        if set_pin_step(self.client).status_code != 303:
            raise AssertionError("the PIN step failed")
        finish_after_pin(self.client, stop_at=url)
        return self.client.get(url)

    def with_car(self) -> Visit:
        """A buyer whose car (with its VIN) is linked to their ID, signed in."""
        self.at_step("/activate/done", vin="WNL0E40A0R1234567")
        return self

    def vehicle_id(self) -> int:
        with self.db.factory() as session:
            return int(session.scalars(select(Vehicle.id)).one())

    def link_in_state(self, **values: Any) -> Any:
        self.invited()
        with self.db.engine.begin() as conn:
            conn.execute(update(Invitation).values(**values))
        return self.client.get(path_of(self.link))

    def signed_in(self) -> Visit:
        make_account(self.db.factory, self.settings, utcnow())
        assert log_in(self.client).status_code == 303
        return self

    def reset_link_opened(self) -> Visit:
        make_account(self.db.factory, self.settings, utcnow())
        self.client.post("/password/forgot", data={**csrf(self.client), "email": "astrid@example.com"})
        self.client.get(link_to(self.db.factory, "astrid@example.com", "/password/reset/"))
        return self


def _wrong_number_sent(v: Visit) -> Any:
    v.with_id()
    data = {**csrf(v.client), "kind": "wrong_phone", "message": "It is +46 70 765 43 21"}
    return v.client.post("/activate/phone/wrong", data=data)


def _request_received(v: Visit) -> Any:
    v.client.get("/invitation/request")
    data = {**csrf(v.client), "email": "lost@example.com", "country": "NO"}
    return v.client.post("/invitation/request", data=data)


def _existing_id(v: Visit) -> Any:
    make_account(v.db.factory, v.settings, utcnow())
    v.invited()
    return v.client.get("/activate/id")


def _pending(v: Visit) -> Any:
    make_account(v.db.factory, v.settings, utcnow(), verified=False)
    log_in(v.client)
    return v.client.get("/register/pending")


def _password_chosen(v: Visit) -> Any:
    v.reset_link_opened()
    v.client.post("/password/reset/birth-date", data={**csrf(v.client), "birth_date": BIRTH.isoformat()})
    return v.client.get("/password/reset")


def _done(v: Visit) -> Any:
    v.phone_verified()
    assert set_pin_step(v.client).status_code == 303
    finish_after_pin(v.client)
    return v.client.get("/activate/done")


def _secondary_invitation(v: Visit) -> Any:
    v.with_car()
    form = {**csrf(v.client), "first_name": "Nils", "last_name": "Lindqvist", "email": "nils@example.com"}
    invited = v.client.post(f"/vehicles/{v.vehicle_id()}/users", data={**form, "phone": "+46 70 765 43 21"})
    assert invited.status_code == 200, invited.text
    link = link_to(v.db.factory, "nils@example.com", "/secondary/")
    v.client.cookies.delete("onb_session")  # the invitee, not signed in (the page language stays)
    return v.client.get(link)


def _device_login(v: Visit) -> Any:
    """A car of the signed-in buyer asks to log in: the confirmation page for its user code."""
    v.with_car()
    with transaction(v.db.factory) as session:
        client, _secret = clients.provision(session, "WNL0E40A0R1234567", now=utcnow())
        authorization, _device_code = device_login.start(session, v.settings, client, "", now=utcnow())
        user_code = authorization.user_code
    return v.client.get(f"/device?user_code={user_code}")


PAGES: dict[str, Callable[[Visit], Any]] = {
    "home": lambda v: v.client.get("/"),
    "login": lambda v: v.client.get("/login"),
    "register": lambda v: v.client.get("/register"),
    "register pending": _pending,
    "forgot password": lambda v: v.client.get("/password/forgot"),
    "reset: confirm who you are": lambda v: v.reset_link_opened().client.get("/password/reset"),
    "reset: choose a new password": _password_chosen,
    "used email link": lambda v: v.client.get("/register/verify/not-a-real-token"),
    "request an invitation": lambda v: v.client.get("/invitation/request"),
    "request received": _request_received,
    "unknown invitation link": lambda v: v.client.get("/i/not-a-real-token"),
    "expired invitation link": lambda v: v.link_in_state(expires_at=utcnow() - timedelta(seconds=1)),
    "revoked invitation link": lambda v: v.link_in_state(revoked_at=utcnow(), revoked_reason="resent"),
    "used invitation link": lambda v: v.link_in_state(completed_at=utcnow()),
    "activation landing": lambda v: v.invited().client.get("/activate"),
    "activation: create ID": lambda v: v.invited().client.get("/activate/id"),
    "activation: existing ID": _existing_id,
    "activation: phone": lambda v: v.with_id().client.get("/activate/phone"),
    "activation: wrong number": lambda v: v.with_id().client.get("/activate/phone/wrong"),
    "activation: wrong number sent": _wrong_number_sent,
    "activation: PIN": lambda v: v.phone_verified().client.get("/activate/pin"),
    "activation: terms": lambda v: v.at_step("/activate/terms"),
    "activation: billing": lambda v: v.at_step("/activate/billing"),
    "activation: Data Pass": lambda v: v.at_step("/activate/data-pass"),
    "activation: services": lambda v: v.at_step("/activate/services"),
    "activation: vehicle without VIN": lambda v: v.at_step("/activate/vehicle"),
    "activation: charging": lambda v: v.at_step("/activate/charging"),
    "activation: done": _done,
    "my vehicles": lambda v: v.with_car().client.get("/vehicles"),
    "my vehicles: none yet": lambda v: v.signed_in().client.get("/vehicles"),
    "vehicle users": lambda v: v.with_car().client.get(f"/vehicles/{v.vehicle_id()}/users"),
    "remove a vehicle": lambda v: v.with_car().client.get(f"/vehicles/{v.vehicle_id()}/remove"),
    "secondary user invitation": _secondary_invitation,
    "account: consents": lambda v: v.with_car().client.get("/account/consents"),
    "car login: enter the code": lambda v: v.signed_in().client.get("/device"),
    "car login: confirm": _device_login,
    "add a car with a pairing code": lambda v: v.signed_in().client.get("/vehicles/pair"),
    "account": lambda v: v.signed_in().client.get("/account"),
    "account: email": lambda v: v.signed_in().client.get("/account/email"),
    "account: password": lambda v: v.signed_in().client.get("/account/password"),
    "account: security": lambda v: v.signed_in().client.get("/account/security"),
    "terms": lambda v: v.client.get("/terms"),
    "privacy": lambda v: v.client.get("/privacy"),
    "page not found": lambda v: v.client.get("/no-such-page"),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_has_a_title_naming_it_and_matching_its_heading(
    db: Database,
    reference: None,
    settings: Settings,
    client: TestClient,
    api_headers: dict[str, str],
    name: str,
) -> None:
    client.headers["Accept-Language"] = "en"
    response = PAGES[name](Visit(client, db, settings, api_headers))
    assert "text/html" in response.headers["content-type"], (name, response.status_code, response.text[:300])
    title, heading = title_of(response.text), h1_of(response.text)
    assert title != BRAND and BRAND in title, (name, title)
    assert heading in title, (name, title, heading)


# --- error pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_page_not_found_is_branded_translated_and_names_support(
    db: Database, client: TestClient, lang: str
) -> None:
    response = client.get("/no-such-page", headers={"Accept-Language": lang})
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    heading, explanation = (translated(lang, text) for text in ERROR_PAGES[404])
    assert h1_of(response.text) == heading
    assert title_of(response.text) == f"{heading} · {BRAND}"
    assert escape(explanation) in response.text
    assert "Not Found" not in response.text and "Something went wrong" not in response.text
    assert f'href="mailto:{GENERAL_SUPPORT}"' in footer_of(response.text)
    if lang != "en":
        assert heading != ERROR_PAGES[404][0] and explanation != ERROR_PAGES[404][1]


@pytest.mark.parametrize("lang", LANGS)
def test_a_method_the_page_does_not_take_is_a_translated_page(
    db: Database, client: TestClient, lang: str
) -> None:
    response = client.delete("/login", headers={"Accept-Language": lang})
    assert response.status_code == 405
    assert "text/html" in response.headers["content-type"]
    assert "GET" in response.headers["allow"]
    assert h1_of(response.text) == translated(lang, ERROR_PAGES[405][0])
    assert "Method Not Allowed" not in response.text
    assert f'href="mailto:{GENERAL_SUPPORT}"' in response.text


@pytest.fixture
def raising_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app with a page that fails with any status it is asked for."""
    app = create_app(settings, session_factory=db.factory)

    @app.get("/fails/{status}")
    def fails(status: int) -> None:
        raise HTTPException(status)

    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("lang", LANGS)
def test_every_error_status_has_its_own_translated_page(raising_client: TestClient, lang: str) -> None:
    headings = set()
    for status, (heading, explanation) in ERROR_PAGES.items():
        response = raising_client.get(f"/fails/{status}", headers={"Accept-Language": lang})
        assert response.status_code == status
        assert "text/html" in response.headers["content-type"]
        assert h1_of(response.text) == translated(lang, heading)
        assert escape(translated(lang, explanation)) in response.text
        assert title_of(response.text) == f"{translated(lang, heading)} · {BRAND}"
        assert f'href="mailto:{GENERAL_SUPPORT}"' in response.text
        headings.add(heading)
    assert len(headings) == len(ERROR_PAGES)


def test_api_errors_stay_problem_documents(
    db: Database, client: TestClient, api_headers: dict[str, str]
) -> None:
    for response in (
        client.get("/api/v1/no-such-thing", headers=api_headers),
        client.delete("/api/v1/orders/SO-1", headers=api_headers),
    ):
        assert response.status_code in (404, 405)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("lang", ["de", "nb"])
def test_a_refused_form_says_why_in_the_pages_language(db: Database, client: TestClient, lang: str) -> None:
    response = client.post(
        "/login", data={"email": "a@example.com", "password": "x"}, headers={"Accept-Language": lang}
    )
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    reason = "The form has expired or came from another site. Reload the page and try again."
    assert escape(translated(lang, reason)) in response.text
    assert h1_of(response.text) == translated(lang, ERROR_PAGES[403][0])


def test_a_form_that_does_not_fit_its_fields_is_a_page_not_a_problem_document(
    db: Database, client: TestClient
) -> None:
    response = client.post(
        "/register",
        data={**csrf(client), "email": "a@example.com", "first_name": "A" * 300},
        headers={"Accept-Language": "sv"},
    )
    assert response.status_code == 422
    assert "text/html" in response.headers["content-type"]
    assert h1_of(response.text) == translated("sv", ERROR_PAGES[422][0])


# --- terms and privacy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("path", "heading"), [("/terms", "Terms of use"), ("/privacy", "Privacy notice")])
def test_terms_and_privacy_are_real_pages_with_their_version(
    db: Database, client: TestClient, settings: Settings, lang: str, path: str, heading: str
) -> None:
    response = client.get(path, headers={"Accept-Language": lang})
    assert response.status_code == 200
    assert h1_of(response.text) == translated(lang, heading)
    version = settings.terms_version if path == "/terms" else settings.privacy_version
    assert translated(lang, "Version %(version)s") % {"version": version} in _text(response.text)
    assert f'href="mailto:{GENERAL_SUPPORT}"' in response.text
    if lang != "en":
        assert translated(lang, heading) != heading


def test_the_pages_show_the_versions_the_consents_record(db: Database, settings: Settings) -> None:
    versions = settings.model_copy(update={"terms_version": "2026-07", "privacy_version": "2026-05"})
    make_account(db.factory, versions, utcnow())
    with db.factory() as session:
        recorded = {
            kind: version for kind, version in session.execute(select(Consent.kind, Consent.text_version))
        }
    app = create_app(versions, session_factory=db.factory)
    with TestClient(app) as client:
        assert f"Version {recorded['terms']}" in _text(client.get("/terms").text)
        assert f"Version {recorded['privacy_notice']}" in _text(client.get("/privacy").text)


def test_the_consent_checkboxes_link_to_the_texts(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    register = client.get("/register").text
    activation = Visit(client, db, settings, api_headers).invited().client.get("/activate/id").text
    for page in (register, activation):
        assert 'href="/terms"' in page and 'href="/privacy"' in page


# --- support contacts -----------------------------------------------------------------------------------


def _emails(db: Database, recipient: str) -> list[DevMailboxMessage]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(DevMailboxMessage).where(
                    DevMailboxMessage.channel == "email", DevMailboxMessage.recipient == recipient
                )
            )
        )


def test_support_addresses_are_mailto_links_in_footers_and_html_emails(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    page = Visit(client, db, settings, api_headers).invited().client.get("/activate")
    assert f'<a href="mailto:{SE_SUPPORT}">{SE_SUPPORT}</a>' in footer_of(page.text)
    [invitation] = _emails(db, "astrid@example.com")
    assert invitation.html_body is not None and f'href="mailto:{SE_SUPPORT}"' in invitation.html_body
    # An email about the ID (password reset), to its holder.
    make_account(db.factory, settings, utcnow(), email="berit@example.com")
    client.post("/password/forgot", data={**csrf(client), "email": "berit@example.com"})
    [reset] = _emails(db, "berit@example.com")
    assert reset.html_body is not None and f'href="mailto:{SE_SUPPORT}"' in reset.html_body


@pytest.mark.parametrize("lang", LANGS)
def test_a_country_without_support_is_explained_as_a_buyer_understands_it(
    db: Database,
    reference: None,
    settings: Settings,
    client: TestClient,
    api_headers: dict[str, str],
    lang: str,
) -> None:
    visit = Visit(client, db, settings, api_headers).invited(
        dealer_code="ZA-01", country="ZA", buyer_phone="+27 82 123 4567", language=lang
    )
    footer = footer_of(visit.client.get("/activate").text)
    assert 'href="mailto:capetown@dealer.example"' in footer
    assert escape(translated(lang, FALLBACK_NOTE)) in footer
    assert OLD_NOTE not in footer and "directory" not in footer
    [invitation] = _emails(db, "astrid@example.com")
    assert invitation.html_body is not None
    assert 'href="mailto:capetown@dealer.example"' in invitation.html_body
    assert escape(translated(lang, FALLBACK_NOTE)) in invitation.html_body
    assert translated(lang, FALLBACK_NOTE) in invitation.text_body
    assert OLD_NOTE not in invitation.html_body + invitation.text_body
    if lang != "en":
        assert translated(lang, FALLBACK_NOTE) != FALLBACK_NOTE
