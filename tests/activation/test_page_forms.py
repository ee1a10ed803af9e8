"""Every form control on the buyer's pages has a label and every state-changing form a CSRF field."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

from fastapi.testclient import TestClient
from sqlalchemy import update

from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from tests.conftest import Database
from tests.helpers import invite_through_api, path_of


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label" and a.get("for"):
            self.label_for.add(a["for"] or "")
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        elif tag == "input" and a.get("name") == "csrf_token" and self.forms:
            self.forms[-1]["csrf"] = "yes"
        elif tag == "form":
            self.forms.append({"method": a.get("method"), "csrf": None})


def _check(html: str) -> int:
    parser = _Form()
    parser.feed(html)
    for control in parser.controls:
        assert control.get("id") in parser.label_for, f"unlabelled control: {control}"
    for form in parser.forms:
        if form["method"] == "post":
            assert form["csrf"], "a POST form without a CSRF field"
    return len(parser.controls)


def test_every_control_is_labelled(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    now = utcnow()
    link = invite_through_api(client, db.factory, settings, api_headers)
    client.get(path_of(link))
    pages = [
        client.get("/activate/id").text,
        client.get("/invitation/request").text,
        client.get("/i/unknown-token").text,
    ]
    with db.engine.begin() as conn:
        conn.execute(update(Invitation).values(expires_at=now - timedelta(seconds=1)))
    pages.append(client.get(path_of(link)).text)
    counts = [_check(page) for page in pages]
    assert counts[0] >= 9 and all(counts)  # the ID form and each request form have controls


def test_account_pages_label_every_control_and_protect_every_form(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    from tests.account_support import log_in, make_account
    from tests.helpers import csrf, id_form

    link = invite_through_api(client, db.factory, settings, api_headers)
    client.get(path_of(link))
    form = id_form(client, language="en")
    client.post("/activate/id", data=form)
    activation_pages = [client.get(p).text for p in ("/activate/phone", "/activate/phone/wrong")]
    client.cookies.clear()
    public = [client.get(p).text for p in ("/login", "/register", "/password/forgot")]
    make_account(db.factory, settings, utcnow(), email="nils@example.com", phone_verified=True)
    log_in(client, email="nils@example.com")
    settings_pages = [
        client.get(p).text
        for p in (
            "/account",
            "/account/email",
            "/account/password",
            "/account/security",
            "/account/security/pin",
        )
    ]
    settings_pages.append(client.post("/account/security/totp/start", data=csrf(client)).text)
    counts = [_check(page) for page in activation_pages + public + settings_pages]
    assert sum(counts) >= 30 and counts[2] >= 2, counts  # the login form and the settings forms have controls


def test_every_state_changing_page_route_checks_csrf() -> None:
    """Every POST of the page routers carries the CSRF dependency, so a new form cannot forget it."""
    from fastapi.routing import APIRoute

    from onboarding.activation import pages
    from onboarding.identity import account_pages
    from onboarding.identity import pages as auth_pages
    from onboarding.ops import mailbox_pages as dev_pages
    from onboarding.web.forms import csrf_protect

    posts = [
        route
        for router in (pages.router, auth_pages.router, account_pages.router, dev_pages.router)
        for route in router.routes
        if isinstance(route, APIRoute) and (route.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}
    ]
    assert len(posts) >= 20
    unprotected = [
        route.path for route in posts if csrf_protect not in [d.call for d in route.dependant.dependencies]
    ]
    assert unprotected == []
