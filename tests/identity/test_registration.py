"""Self-registration (SPEC §3.2, seed 000): a 72-hour verification link, resend, no access until
verified, the same answer for an address that has an ID, take-over of an abandoned registration."""

from __future__ import annotations

import re
from datetime import date, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.core.clock import utcnow
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity import registration
from onboarding.identity.accounts import NewAccount
from onboarding.identity.models import Account, Consent
from onboarding.identity.ratelimit import RateLimits
from tests.account_support import (
    BIRTH,
    PASSWORD,
    account,
    emails_to,
    link_to,
    log_in,
    make_account,
    run_and_send,
)
from tests.conftest import Database
from tests.helpers import csrf


def _form(client: TestClient, **overrides: str) -> dict[str, str]:
    form = {
        **csrf(client),
        "email": "Nils@Example.com",
        "first_name": "Nils",
        "last_name": "Berg",
        "birth_date": BIRTH.isoformat(),
        "country": "NO",
        "language": "nb",
        "password": PASSWORD,
        "password_confirmation": PASSWORD,
        "accept_terms": "true",
        "accept_privacy": "true",
        "marketing_email": "true",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v != ""}


def test_register_verify_then_log_in(db: Database, settings: Settings, client: TestClient) -> None:
    form_page = client.get("/register")
    assert form_page.status_code == 200
    title = form_page.text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("Create your Nordlicht Motors ID") and "<" not in title  # as its heading
    response = client.post("/register", data=_form(client))
    assert response.status_code == 200 and "nils@example.com" in response.text
    created = account(db.factory, "nils@example.com")
    assert created.email_verified_at is None and created.country == "NO"
    with db.factory() as session:
        kinds = {c.kind for c in session.scalars(select(Consent).where(Consent.account_id == created.id))}
    assert kinds == {"terms", "privacy_notice", "marketing_email"}

    # No access before verification: a correct login leads to the resend page only.
    login = log_in(client, email="nils@example.com")
    assert login.headers["location"] == "/register/pending"
    pending = client.get("/register/pending")
    assert "nils@example.com" in pending.text
    assert client.get("/account", follow_redirects=False).headers["location"] == "/register/pending"
    resent = client.post("/register/resend", data=csrf(client), follow_redirects=False)
    assert resent.status_code == 303
    assert len(emails_to(db.factory, "nils@example.com")) == 2
    # "Do this later" ends the unverified session; the emailed link still works afterwards.
    with use_language(created.language):
        do_this_later = gettext_("Do this later")
    form = rf'action="/logout">\s*<input[^>]*csrf_token[^>]*>\s*<button[^>]*>{do_this_later}</button>'
    assert re.search(form, pending.text)
    later = client.post("/logout", data=csrf(client), follow_redirects=False)
    assert later.headers["location"] == "/login?signed_out=1"
    assert client.get("/register/pending", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login?next=/account"
    # The newest link works once; the first was replaced by it.
    first, newest = [
        m.text_body.split("/register/verify/")[1].split()[0]
        for m in emails_to(db.factory, "nils@example.com")
    ]
    assert client.get(f"/register/verify/{first}").status_code == 410
    assert client.get(f"/register/verify/{newest}").status_code == 200
    assert client.get(f"/register/verify/{newest}").status_code == 410
    assert account(db.factory, "nils@example.com").email_verified_at is not None
    assert log_in(client, email="nils@example.com").headers["location"] == "/account"


def test_an_address_with_an_id_gets_the_same_answer_and_its_owner_a_notice(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow(), email="nils@example.com")
    fresh = client.post("/register", data=_form(client, email="other@example.com"))
    taken = client.post("/register", data=_form(client))  # country NO; the ID is SE's: one email, one country
    assert fresh.status_code == taken.status_code == 200
    assert fresh.content.replace(b"other@example.com", b"X") == taken.content.replace(
        b"nils@example.com", b"X"
    )
    [notice] = emails_to(db.factory, "nils@example.com")
    assert "tried to create" in (notice.subject or "")
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 2


def test_bad_registration_names_the_fields_and_stores_nothing(
    db: Database, settings: Settings, client: TestClient
) -> None:
    response = client.post(
        "/register", data=_form(client, email="not-an-email", password="password123", accept_terms="")
    )
    assert response.status_code == 422
    for name in ("email", "password", "accept_terms"):
        assert f'id="{name}-error"' in response.text
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0


def test_a_birth_date_in_another_form_is_named_as_such_on_every_form(
    db: Database, settings: Settings, client: TestClient
) -> None:
    """The rule is the service's (accounts.check_birth_date), so registration and account details say
    the same."""
    response = client.post("/register", data=_form(client, birth_date="12/04/1985", language="en"))
    assert response.status_code == 422 and "Use the form YYYY-MM-DD." in response.text
    assert client.post("/register", data=_form(client, birth_date="", language="en")).status_code == 422
    make_account(db.factory, settings, utcnow())
    log_in(client)
    details = {"first_name": "Astrid", "last_name": "L", "language": "en"}
    bad = client.post("/account/details", data={**csrf(client), **details, "birth_date": "12.04.1985"})
    assert bad.status_code == 422 and "Use the form YYYY-MM-DD." in bad.text
    empty = client.post("/account/details", data={**csrf(client), **details, "birth_date": " "})
    assert empty.status_code == 422 and "Enter your date of birth." in empty.text
    good = client.post(
        "/account/details",
        data={**csrf(client), **details, "birth_date": " 1985-04-12 "},
        follow_redirects=False,
    )
    assert good.status_code == 303 and account(db.factory).birth_date == date(1985, 4, 12)


def _data(email: str, first: str) -> NewAccount:
    return NewAccount(
        email=email,
        password=PASSWORD,
        password_confirmation=PASSWORD,
        first_name=first,
        last_name="Berg",
        birth_date=BIRTH,
        country="SE",
        language="sv",
        accept_terms=True,
        accept_privacy=True,
    )


def test_an_abandoned_registration_is_taken_over_after_72_hours(db: Database, settings: Settings) -> None:
    start = utcnow()
    limits = RateLimits.from_settings(settings)
    run_and_send(
        db.factory,
        settings,
        lambda s: registration.register(
            s, settings, limits, _data("nils@example.com", "Nils"), now=start, ip=None
        ),
    )
    old_link = link_to(db.factory, "nils@example.com", "/register/verify/").rsplit("/", 1)[1]
    # Within 72 hours the address is still taken by the unverified registration.
    again = run_and_send(
        db.factory,
        settings,
        lambda s: registration.register(
            s, settings, limits, _data("nils@example.com", "Eve"), now=start + timedelta(hours=71), ip=None
        ),
    )
    assert again is None and account(db.factory, "nils@example.com").first_name == "Nils"
    later = start + timedelta(hours=73)
    with db.factory() as session:
        assert registration.verify(session, old_link, now=later, ip=None) is None  # expired
    taken = run_and_send(
        db.factory,
        settings,
        lambda s: registration.register(
            s, settings, limits, _data("nils@example.com", "Nina"), now=later, ip=None
        ),
    )
    assert taken is not None
    assert account(db.factory, "nils@example.com").first_name == "Nina"
    new_link = link_to(db.factory, "nils@example.com", "/register/verify/").rsplit("/", 1)[1]
    run_and_send(db.factory, settings, lambda s: registration.verify(s, new_link, now=later, ip=None))
    assert account(db.factory, "nils@example.com").email_verified_at is not None
