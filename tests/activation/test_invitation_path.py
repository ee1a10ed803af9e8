"""The spine end to end: order through the API → scheduler → email at a real SMTP server → link
opened → ID created → the order's onboarding state updated."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from notifications.email import body_parts
from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from onboarding.identity.accounts import verify_password
from onboarding.identity.models import Account, Consent
from tests.conftest import Database, SmtpServer
from tests.helpers import (
    ID_PASSWORD,
    dev_mailbox_links,
    finish_after_pin,
    invite_through_api,
    link_in,
    order_payload,
    path_of,
    run_jobs,
    set_pin_step,
    verify_phone_step,
)

PASSWORD = ID_PASSWORD


def _create_form(client: TestClient, **overrides: str) -> dict[str, str]:
    page = client.get("/activate/id")
    assert page.status_code == 200
    form = {
        "csrf_token": client.cookies["onb_csrf"],
        "first_name": "Astrid",
        "last_name": "Lindqvist",
        "birth_date": "1985-04-12",
        "country": "SE",
        "language": "sv",
        "password": PASSWORD,
        "password_confirmation": PASSWORD,
        "accept_terms": "true",
        "accept_privacy": "true",
    }
    form.update(overrides)
    return form


def test_order_to_created_id(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer, api_headers: dict[str, str]
) -> None:
    from onboarding.ops.app import create_app

    now = utcnow()
    app = create_app(smtp_settings, session_factory=db.factory)
    with TestClient(app) as client:
        created = client.put(
            "/api/v1/orders/SO-1", json=order_payload((now + timedelta(days=5)).date()), headers=api_headers
        )
        assert created.status_code == 201, created.text
        assert created.json()["onboarding"]["stage"] == "due"

        report = run_jobs(db.factory, smtp_settings, now)
        assert (report.invited, report.sent) == (1, 1)
        [message] = smtp.mailbox.to("astrid@example.com")
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Content-Language"] == "sv" and "Hej Astrid," in body_parts(message)[0]
        assert message["Message-ID"] and message["Date"]
        assert "Nordlicht E40" in message["Subject"]
        link = link_in(message)
        assert link.startswith("http://testserver/i/")

        state = client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]
        assert state["stage"] == "invited"
        assert state["invitation"]["state"] == "valid" and state["invitation"]["sent_at"]

        opened = client.get(path_of(link), follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/activate"
        landing = client.get("/activate")
        assert landing.status_code == 200
        for fact in ("Nordlicht E40", "Centre Stockholm"):
            assert fact in landing.text
        assert (
            client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]["stage"] == "opened"
        )

        # A marketing consent the activation's form does not offer is not recorded, even if sent.
        form = {**_create_form(client), "marketing_email": "true"}
        created = client.post("/activate/id", data=form, follow_redirects=False)
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/activate/phone"
        state = client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]
        assert state["stage"] == "id_created"
        # The mobile number of the order, verified by a code texted to it (development SMS outbox).
        phone_page = client.get("/activate/phone")
        assert "••• ••• 45 67" in phone_page.text
        verified = verify_phone_step(client, db.factory)
        assert verified.status_code == 303 and verified.headers["location"] == "/activate/pin"
        state = client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]
        assert state["stage"] == "phone_verified" and state["phone_verified_at"] is not None
        # The E40 needs a security PIN.
        after_pin = set_pin_step(client)
        assert after_pin.status_code == 303 and after_pin.headers["location"] == "/activate/terms"
        done = finish_after_pin(client)
        assert done.status_code == 303 and done.headers["location"] == "/activate/done"
        assert client.get("/activate/done").status_code == 200

        state = client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]
        assert state["stage"] == "completed"
        assert state["id_created_at"] is not None and state["pin_set_at"] is not None

        # Single use: the link no longer opens the flow once activation is complete.
        assert client.get(path_of(link), follow_redirects=False).status_code == 410

    with db.factory() as session:
        account = session.scalar(select(Account).where(Account.email == "astrid@example.com"))
        assert account is not None and account.email_verified_at is not None
        assert account.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert verify_password(account, PASSWORD) and not verify_password(account, PASSWORD + "x")
        # Recorded when the ID was made (the activation's terms step records its own, with its source).
        consents = {
            (c.kind, c.text_version)
            for c in session.scalars(select(Consent).where(Consent.source == "invitation"))
        }
        assert consents == {
            ("terms", smtp_settings.terms_version),
            ("privacy_notice", smtp_settings.privacy_version),
        }
        invitation = session.scalars(select(Invitation)).one()
        assert invitation.account_id == account.id and invitation.completed_at is not None
        # Only a hash of the token and nothing recoverable is kept once the flow is complete.
        assert invitation.token_sealed is None
        assert link.rsplit("/", 1)[1] not in invitation.token_hash


def test_existing_id_logs_in_and_the_car_joins_it(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    now = utcnow()
    delivery = (now + timedelta(days=3)).date()
    for number in ("SO-1", "SO-2"):
        client.put(f"/api/v1/orders/{number}", json=order_payload(delivery), headers=api_headers)
    run_jobs(db.factory, settings, now)
    links = dev_mailbox_links(db.factory)
    assert len(links) == 2

    client.get(path_of(links[0]))
    assert client.post("/activate/id", data=_create_form(client), follow_redirects=False).status_code == 303
    assert verify_phone_step(client, db.factory).status_code == 303
    assert set_pin_step(client).headers["location"] == "/activate/terms"
    assert finish_after_pin(client).headers["location"] == "/activate/done"

    client.cookies.clear()
    client.get(path_of(links[1]))
    page = client.get("/activate/id")
    assert 'action="/activate/login"' in page.text and "Du har redan ett ID" in page.text
    wrong = client.post(
        "/activate/login", data={"csrf_token": client.cookies["onb_csrf"], "password": "not-the-password-1"}
    )
    assert wrong.status_code == 401
    ok = client.post(
        "/activate/login",
        data={"csrf_token": client.cookies["onb_csrf"], "password": PASSWORD},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/activate/id"
    # Signed in as the invitation's ID: the car joins it, and a verified phone and a PIN carry over.
    joined = client.get("/activate/id", follow_redirects=False)
    # The terms, billing check, services and link are this car's own.
    assert joined.headers["location"] == "/activate/terms"
    assert finish_after_pin(client).headers["location"] == "/activate/done"
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 1
    for number in ("SO-1", "SO-2"):
        assert (
            client.get(f"/api/v1/orders/{number}", headers=api_headers).json()["onboarding"]["stage"]
            == "completed"
        )


def test_id_form_refuses_bad_input_and_stores_nothing(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    today = utcnow().date()
    too_young = today.replace(year=today.year - 15).isoformat()
    cases = {
        "password": {"password": "password123", "password_confirmation": "password123"},
        "password_confirmation": {"password_confirmation": PASSWORD + "-different"},
        "birth_date": {"birth_date": too_young},
        "accept_terms": {"accept_terms": ""},
        "accept_privacy": {"accept_privacy": ""},
        "first_name": {"first_name": "  "},
    }
    for field_name, overrides in cases.items():
        form = _create_form(client, **overrides)
        form = {k: v for k, v in form.items() if v != ""}
        response = client.post("/activate/id", data=form)
        assert response.status_code == 422, field_name
        assert f'id="{field_name}-error"' in response.text, field_name
    # Messages come in the page's language (Swedish order), with their values filled in; what the
    # buyer ticked stays ticked.
    response = client.post("/activate/id", data=_create_form(client, birth_date=too_young))
    assert "Du måste vara minst 16 år" in response.text
    assert 'name="accept_terms" value="true" checked' in response.text
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0


def test_the_email_in_the_form_is_ignored(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    form = _create_form(client)
    form["email"] = "attacker@example.com"
    assert client.post("/activate/id", data=form, follow_redirects=False).status_code == 303
    with db.factory() as session:
        assert [a.email for a in session.scalars(select(Account))] == ["astrid@example.com"]


def test_form_post_without_csrf_token_is_refused(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    form = _create_form(client)
    del form["csrf_token"]
    assert client.post("/activate/id", data=form).status_code == 403
    cross_site = _create_form(client)
    assert (
        client.post("/activate/id", data=cross_site, headers={"Origin": "https://evil.example"}).status_code
        == 403
    )
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
