"""Link problems and new-invitation requests: explained, routed by the support directory, tracked."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from notifications.models import DevMailboxMessage, OutboxMessage
from onboarding.activation.models import Invitation, SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from tests.conftest import Database
from tests.helpers import invite_through_api, path_of, run_jobs


def test_unknown_link_explains_and_takes_a_request(db: Database, reference: None, client: TestClient) -> None:
    page = client.get("/i/not-a-real-token", headers={"Accept-Language": "en"})
    assert page.status_code == 404
    assert "recognise this link" in page.text
    request = client.post(
        "/invitation/request",
        data={"csrf_token": client.cookies["onb_csrf"], "email": "lost@example.com", "country": "NO"},
    )
    assert request.status_code == 200
    assert "smartmobility@no.nordlicht-motors.example" in request.text
    with db.factory() as session:
        [row] = session.scalars(select(SupportRequest))
        assert (row.kind, row.country, row.routed_to, row.contact_email) == (
            "new_invitation",
            "NO",
            "smartmobility@no.nordlicht-motors.example",
            "lost@example.com",
        )
        [notice] = session.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "support_request"))
        assert notice.recipient == row.routed_to


def test_request_form_names_the_bad_field(db: Database, client: TestClient) -> None:
    client.get("/invitation/request")
    response = client.post(
        "/invitation/request",
        data={"csrf_token": client.cookies["onb_csrf"], "email": "nope", "country": "SE"},
    )
    assert response.status_code == 422 and 'id="email-error"' in response.text
    with db.factory() as session:
        assert list(session.scalars(select(SupportRequest))) == []


def test_expired_link_request_is_routed_to_the_buyers_country(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers)
    with db.engine.begin() as conn:
        conn.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = client.get(path_of(link))
    assert page.status_code == 410 and 'lang="sv"' in page.text  # in the order's language
    token = link.rsplit("/", 1)[1]
    response = client.post(
        "/invitation/request", data={"csrf_token": client.cookies["onb_csrf"], "token": token}
    )
    assert response.status_code == 200
    run_jobs(db.factory, settings, utcnow())
    with db.factory() as session:
        [row] = session.scalars(select(SupportRequest))
        assert (row.country, row.routed_to, row.dealer_code) == (
            "SE",
            "smartmobility@se.nordlicht-motors.example",
            "SE-01",
        )
        assert row.order_id is not None and row.contact_email == "astrid@example.com"
        notices = [m for m in session.scalars(select(DevMailboxMessage)) if m.recipient == row.routed_to]
        assert len(notices) == 1 and "SO-1" in notices[0].text_body


def test_unlisted_country_routes_to_the_dealer_with_a_note(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(
        client,
        db.factory,
        settings,
        api_headers,
        country="ZA",
        dealer_code="ZA-01",
        buyer_phone="+27 82 123 4567",
        language="en",
    )
    with db.factory() as session:
        [mail] = session.scalars(select(DevMailboxMessage))
    assert "capetown@dealer.example" in mail.text_body
    assert "fewer connected services" in mail.text_body
    client.get(path_of(link))
    landing = client.get("/activate")
    assert "capetown@dealer.example" in landing.text and "fewer connected services" in landing.text


def test_language_switcher_and_security_headers(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers)
    client.get(path_of(link))
    page = client.get("/activate")
    assert 'lang="sv"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    german = client.get("/activate?lang=de")
    assert 'lang="de"' in german.text and client.cookies["onb_lang"] == "de"
    assert 'lang="de"' in client.get("/activate").text  # remembered


def test_dev_mailbox_lists_and_shows_messages(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    invite_through_api(client, db.factory, settings, api_headers)
    listing = client.get("/dev/mailbox")
    assert listing.status_code == 200 and "astrid@example.com" in listing.text
    with db.factory() as session:
        [mail] = session.scalars(select(DevMailboxMessage))
    shown = client.get(f"/dev/mailbox/{mail.id}")
    assert shown.status_code == 200 and "/i/" in shown.text


def test_dev_mailbox_is_off_when_smtp_is_configured(db: Database, smtp_settings: Settings) -> None:
    from onboarding.ops.app import create_app

    with TestClient(create_app(smtp_settings, session_factory=db.factory)) as client:
        assert client.get("/dev/mailbox").status_code == 404
