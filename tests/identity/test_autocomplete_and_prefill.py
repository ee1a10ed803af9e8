"""Forms a password manager and a phone fill in (issue 11, items 11 and 12): the invitation's read-only
email is the login name (``autocomplete="username"``), "Forgot your password?" passes on the address
the page knows and the forgot-password page shows it, and the authenticator key is shown in groups that
do not break, with a tap-to-add ``otpauth://`` link carrying the QR code's URI."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient

from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from onboarding.identity import two_factor
from tests.account_support import account, log_in, make_account
from tests.conftest import Database
from tests.helpers import csrf, invite_through_api, path_of

EMAIL = "astrid@example.com"


class Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def by_id(self, element_id: str) -> dict[str, str | None]:
        [found] = [attrs for _tag, attrs in self.tags if attrs.get("id") == element_id]
        return found

    def links(self) -> list[str]:
        return [str(attrs["href"]) for tag, attrs in self.tags if tag == "a" and attrs.get("href")]


def _invited(client: TestClient, db: Database, settings: Settings, api_headers: dict[str, str]) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers)
    assert client.get(path_of(link)).status_code == 200


def test_the_invitations_read_only_email_is_the_login_name(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _invited(client, db, settings, api_headers)
    email = Elements(client.get("/activate/id").text).by_id("email")
    assert email["value"] == EMAIL
    assert "readonly" in email
    assert email["autocomplete"] == "username"


def test_logging_in_from_an_invitation_offers_a_reset_for_the_invitations_address(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    make_account(db.factory, settings, utcnow())
    _invited(client, db, settings, api_headers)
    forgot = "/password/forgot?email=astrid%40example.com"
    page = Elements(client.get("/activate/id").text)
    assert page.by_id("email")["value"] == EMAIL and page.by_id("email")["autocomplete"] == "username"
    assert forgot in page.links()
    # A wrong password: the login page again, the address still filled in and passed on.
    failed = client.post("/activate/login", data={**csrf(client), "password": "not-the-password"})
    assert failed.status_code == 401
    page = Elements(failed.text)
    assert page.by_id("email")["value"] == EMAIL
    assert forgot in page.links()
    prefilled = Elements(client.get(forgot).text).by_id("email")
    assert prefilled["value"] == EMAIL and prefilled["autocomplete"] == "username"


def test_the_login_pages_forgot_link_passes_on_the_typed_address(
    db: Database, settings: Settings, client: TestClient
) -> None:
    assert "/password/forgot" in Elements(client.get("/login").text).links()
    failed = client.post("/login", data={**csrf(client), "email": "berit+car@example.com", "password": "x"})
    assert failed.status_code == 401
    assert "/password/forgot?email=berit%2Bcar%40example.com" in Elements(failed.text).links()
    page = client.get("/password/forgot", params={"email": "berit+car@example.com"})
    assert Elements(page.text).by_id("email")["value"] == "berit+car@example.com"


def test_the_forgot_page_shows_any_given_address_safely(db: Database, client: TestClient) -> None:
    hostile = '"><script>alert(1)</script>'
    page = client.get("/password/forgot", params={"email": hostile})
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert Elements(page.text).by_id("email")["value"] == hostile
    for odd in ("a" * 5000 + "@example.com", "a\x00b@example.com"):
        page = client.get("/password/forgot", params={"email": odd})
        assert page.status_code == 200
        assert Elements(page.text).by_id("email")["value"] == ""
    assert Elements(client.get("/password/forgot").text).by_id("email")["value"] == ""


def _totp_page(client: TestClient, db: Database, settings: Settings) -> tuple[Elements, str]:
    make_account(db.factory, settings, utcnow())
    assert log_in(client).status_code == 303
    page = client.post("/account/security/totp/start", data=csrf(client))
    assert page.status_code == 200, page.text[:300]
    return Elements(page.text), page.text


def test_the_authenticator_key_is_shown_in_groups_that_do_not_break(
    db: Database, settings: Settings, client: TestClient
) -> None:
    page, text = _totp_page(client, db, settings)
    secret = str(page.by_id("totp-secret")["data-secret"])
    groups = [secret[i : i + 4] for i in range(0, len(secret), 4)]
    shown = text.split('id="totp-secret"', 1)[1].split(">", 1)[1].split("</code>", 1)[0]
    assert re.sub(r"<[^>]+>", "", shown).split(" ") == groups
    assert shown.count("<span>") == len(groups)
    for group in groups:
        assert f"<span>{group}</span>" in shown
    assert "code.secret span { white-space: nowrap; }" in text


def test_a_phone_can_add_the_key_with_one_tap(db: Database, settings: Settings, client: TestClient) -> None:
    page, text = _totp_page(client, db, settings)
    secret = str(page.by_id("totp-secret")["data-secret"])
    uri = two_factor.provisioning_uri(settings, account(db.factory), secret)
    assert uri.startswith("otpauth://totp/") and "&" in uri
    assert uri in page.links()  # the parser unescapes the attribute: exactly the QR code's URI
    assert 'href="' + uri.replace("&", "&amp;") + '"' in text
    [tag] = [attrs for tag, attrs in page.tags if tag == "a" and attrs.get("href") == uri]
    assert "button" in str(tag.get("class"))
