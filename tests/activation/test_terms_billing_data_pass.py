"""The activation's steps after the PIN, through the pages: terms and consents, the billing address,
the Data Pass; and withdrawing a consent later under My ID. Each test stops where the connected
services step begins (``/activate/services``)."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import DataPassProvider, Settings
from onboarding.identity.models import Account, BillingAddress, Consent
from onboarding.ops.app import create_app
from tests.conftest import NOW, Database
from tests.helpers import (
    billing_step,
    csrf,
    data_pass_step,
    id_form,
    invite_through_api,
    path_of,
    set_pin_step,
    terms_step,
)
from tests.helpers import (
    verify_phone_step as verify_phone,
)
from vehicles.models import OrderEvent
from vehicles.schemas import DealerIn
from vehicles.service import upsert_dealer

SERVICES_URL = "/activate/services"


def _to_terms(
    client: TestClient, db: Database, settings: Settings, api_headers: dict[str, str], **order: str
) -> None:
    """Invitation opened, ID created, mobile verified, PIN set (E40): the terms step is due."""
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers, **order)))
    created = client.post("/activate/id", data=id_form(client), follow_redirects=False)
    assert created.headers["location"] == "/activate/phone", created.text[:300]
    phone = order.get("buyer_phone", "+46701234567").replace(" ", "")
    assert verify_phone(client, db.factory, phone).headers["location"] == "/activate/pin"
    assert set_pin_step(client).headers["location"] == "/activate/terms"


def _due(client: TestClient) -> str:
    """The step the landing page sends the buyer to."""
    found = re.search(r'href="(/activate/[a-z-]+)"', client.get("/activate").text)
    assert found
    return found.group(1)


def _consents(db: Database) -> list[Consent]:
    with db.factory() as session:
        return list(session.scalars(select(Consent).order_by(Consent.id)))


def _invitation(db: Database) -> Invitation:
    with db.factory() as session:
        return session.scalars(select(Invitation)).one()


def _events(db: Database) -> list[str]:
    with db.factory() as session:
        return list(session.scalars(select(OrderEvent.kind).order_by(OrderEvent.id)))


def test_terms_need_both_boxes_and_store_nothing_without_them(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    page = client.get("/activate/terms")
    assert page.status_code == 200
    # Each text with its version and its link; optional boxes unticked.
    assert settings.terms_version in page.text and settings.privacy_version in page.text
    assert 'href="/terms"' in page.text and 'href="/privacy"' in page.text
    for name in ("share_with_partner", "marketing_email", "marketing_sms"):
        box = re.search(rf'<input type="checkbox" id="{name}"[^>]*>', page.text)
        assert box and "checked" not in box.group(0)
    before = len(_consents(db))

    refused = client.post(
        "/activate/terms",
        data={**csrf(client), "marketing_email": "yes", "share_with_partner": "yes", "partner": "SE-01"},
        follow_redirects=False,
    )
    assert refused.status_code == 422
    for name in ("accept_terms", "accept_privacy"):
        assert re.search(rf'id="{name}"[^>]*aria-invalid="true"', refused.text), name
        assert f'id="{name}-error"' in refused.text
    # What was ticked stays ticked.
    assert re.search(r'id="marketing_email"[^>]*checked', refused.text)
    assert len(_consents(db)) == before
    assert _invitation(db).terms_done_at is None
    assert "terms_accepted" not in _events(db)

    only_terms = terms_step(client, accept_privacy="")
    assert only_terms.status_code == 422 and 'id="accept_privacy-error"' in only_terms.text
    assert 'id="accept_terms-error"' not in only_terms.text
    assert len(_consents(db)) == before
    assert _due(client) == "/activate/terms"


def test_terms_record_each_consent_with_its_text_version(
    db: Database, reference: None, settings: Settings, api_headers: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"terms_version": "2027-01", "privacy_version": "2027-02"})
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        _to_terms(client, db, settings, api_headers)
        page = client.get("/activate/terms")
        # The partner list is the order's country's dealers, the order's dealer preselected.
        assert re.search(r'<option value="SE-01" selected>', page.text)
        assert 'value="US-01"' not in page.text
        answer = terms_step(
            client, share_with_partner="yes", partner="SE-01", marketing_email="yes", marketing_sms=""
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/activate/billing")

    live = {(c.kind, c.subject): c for c in _consents(db) if c.withdrawn_at is None}
    assert set(live) == {
        ("terms", None),
        ("privacy_notice", None),
        ("partner_data_sharing", "SE-01"),
        ("marketing_email", None),
    }
    assert live[("terms", None)].text_version == "2027-01"
    for key in (("privacy_notice", None), ("partner_data_sharing", "SE-01"), ("marketing_email", None)):
        assert live[key].text_version == "2027-02", key
    assert live[("partner_data_sharing", "SE-01")].source == "activation"
    assert _invitation(db).terms_done_at is not None
    assert "terms_accepted" in _events(db)
    assert _due(client) == "/activate/billing"


def test_the_partner_must_be_a_dealer_of_the_orders_country(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    with db.factory() as session:
        upsert_dealer(
            session,
            "SE-02",
            DealerIn(name="Centre Göteborg", country="SE", email="gbg@dealer.example", language="sv"),
            NOW,
        )
        session.commit()
    _to_terms(client, db, settings, api_headers)
    page = client.get("/activate/terms")
    assert 'value="SE-02"' in page.text and re.search(r'<option value="SE-01" selected>', page.text)
    before = len(_consents(db))
    for unknown in ("US-01", "XX-99"):
        refused = terms_step(client, share_with_partner="yes", partner=unknown)
        assert refused.status_code == 422 and 'id="partner-error"' in refused.text, unknown
    assert len(_consents(db)) == before

    assert (
        terms_step(client, share_with_partner="yes", partner="SE-02").headers["location"]
        == "/activate/billing"
    )
    shared = [c for c in _consents(db) if c.kind == "partner_data_sharing"]
    assert [(c.subject, c.withdrawn_at) for c in shared] == [("SE-02", None)]


def test_a_withdrawn_consent_stays_on_record(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    terms_step(client, share_with_partner="yes", partner="SE-01", marketing_sms="yes")
    listing = client.get("/account/consents")
    assert listing.status_code == 200
    assert "Centre Stockholm" in listing.text and settings.privacy_version in listing.text
    [partner] = [c for c in _consents(db) if c.kind == "partner_data_sharing"]
    [terms] = [c for c in _consents(db) if c.kind == "terms"]
    # The terms are the ID's basis: no withdraw button, and a forged request is refused.
    assert f'name="consent" value="{partner.id}"' in listing.text
    assert f'name="consent" value="{terms.id}"' not in listing.text
    forged = client.post("/account/consents", data={**csrf(client), "consent": str(terms.id)})
    assert forged.status_code == 409

    withdrawn = client.post(
        "/account/consents", data={**csrf(client), "consent": str(partner.id)}, follow_redirects=False
    )
    assert (withdrawn.status_code, withdrawn.headers["location"]) == (
        303,
        "/account/consents?notice=withdrawn",
    )
    rows = {c.id: c for c in _consents(db)}
    assert rows[partner.id].withdrawn_at is not None and rows[partner.id].subject == "SE-01"
    assert rows[terms.id].withdrawn_at is None
    assert f'name="consent" value="{partner.id}"' not in client.get("/account/consents").text
    again = client.post("/account/consents", data={**csrf(client), "consent": str(partner.id)})
    assert again.status_code == 409

    client.cookies.delete("onb_session")
    signed_out = client.get("/account/consents", follow_redirects=False)
    assert signed_out.headers["location"] == "/login?next=/account/consents"


def test_billing_is_prefilled_and_a_company_needs_a_valid_vat_id(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    assert terms_step(client).headers["location"] == "/activate/billing"
    page = client.get("/activate/billing")
    assert page.status_code == 200
    assert 'id="recipient_name" name="recipient_name" value="Astrid Lindqvist"' in page.text
    assert re.search(r'<option value="SE" selected>', page.text)
    assert re.search(r'id="kind-private"[^>]*checked', page.text)

    refused = billing_step(client, kind="company", company_name="Lindqvist AB", vat_id="SE556703748502")
    assert refused.status_code == 422
    assert re.search(
        r'id="vat_id"[^>]*aria-describedby="vat_id-error[^"]*"[^>]*aria-invalid="true"', refused.text
    )
    assert 'value="Lindqvist AB"' in refused.text  # shown again
    with db.factory() as session:
        assert session.scalars(select(BillingAddress)).first() is None
    assert _invitation(db).billing_done_at is None

    answer = billing_step(client, kind="company", company_name="Lindqvist AB", vat_id="5567037485-01")
    assert (answer.status_code, answer.headers["location"]) == (303, "/activate/data-pass")
    with db.factory() as session:
        stored = session.scalars(select(BillingAddress)).one()
        assert (stored.kind, stored.company_name, stored.vat_id) == (
            "company",
            "Lindqvist AB",
            "SE556703748501",
        )
        assert (stored.street, stored.postal_code, stored.country) == ("Storgatan 1", "114 51", "SE")
        assert stored.checked_at is not None
    assert "billing_checked" in _events(db)
    assert _due(client) == "/activate/data-pass"


def test_billing_names_every_bad_address_field(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    terms_step(client)
    refused = billing_step(client, recipient_name="", street="", postal_code="12", city="")
    assert refused.status_code == 422
    for name in ("recipient_name", "street", "postal_code", "city"):
        assert f'id="{name}-error"' in refused.text, name
    with db.factory() as session:
        assert session.scalars(select(BillingAddress)).first() is None


def test_data_pass_accepted_records_the_consent_and_shows_the_provider(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    terms_step(client)
    billing_step(client)
    page = client.get("/activate/data-pass")
    provider = settings.data_pass_providers["SE"]
    assert page.status_code == 200 and provider.name in page.text and f'href="{provider.url}"' in page.text

    bad = client.post("/activate/data-pass", data={**csrf(client), "choice": "maybe"}, follow_redirects=False)
    assert bad.status_code == 422 and _invitation(db).data_pass_done_at is None

    answer = data_pass_step(client, "accept")
    assert (answer.status_code, answer.headers["location"]) == (303, SERVICES_URL)
    [data_pass] = [c for c in _consents(db) if c.kind == "data_pass"]
    assert (data_pass.subject, data_pass.text_version, data_pass.source) == (
        "SE",
        settings.privacy_version,
        "activation",
    )
    assert _invitation(db).data_pass_done_at is not None
    assert "data_pass_accepted" in _events(db)
    # The note to register on the provider's site stays under My ID.
    assert f'href="{provider.url}"' in client.get("/account/consents").text
    assert client.get("/activate/data-pass", follow_redirects=False).headers["location"] == SERVICES_URL


def test_data_pass_declined_records_no_consent(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    terms_step(client)
    billing_step(client)
    answer = data_pass_step(client, "decline")
    assert (answer.status_code, answer.headers["location"]) == (303, SERVICES_URL)
    assert not [c for c in _consents(db) if c.kind == "data_pass"]
    assert _invitation(db).data_pass_done_at is not None
    assert "data_pass_declined" in _events(db)


def test_data_pass_where_the_country_has_no_provider(
    db: Database, reference: None, settings: Settings, api_headers: dict[str, str]
) -> None:
    settings = settings.model_copy(
        update={"data_pass_providers": {"DE": DataPassProvider(name="Funkwerk", url="https://x.example/de")}}
    )
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        _to_terms(client, db, settings, api_headers)
        terms_step(client)
        billing_step(client)
        page = client.get("/activate/data-pass")
        assert page.status_code == 200
        with use_language("sv"):
            unavailable = gettext_("The Data Pass is not available in your country yet.")
        assert unavailable in page.text and 'value="accept"' not in page.text
        answer = client.post(
            "/activate/data-pass", data={**csrf(client), "choice": "continue"}, follow_redirects=False
        )
        assert (answer.status_code, answer.headers["location"]) == (303, SERVICES_URL)
    assert not [c for c in _consents(db) if c.kind == "data_pass"]
    assert _invitation(db).data_pass_done_at is not None


def test_each_step_resumes_where_the_buyer_left(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    assert _due(client) == "/activate/terms"
    # A later step's page sends back to the one due.
    for later in ("/activate/billing", "/activate/data-pass"):
        assert client.get(later, follow_redirects=False).headers["location"] == "/activate/terms"
    terms_step(client)
    assert _due(client) == "/activate/billing"
    assert client.get("/activate/terms", follow_redirects=False).headers["location"] == "/activate/billing"
    billing_step(client)
    assert _due(client) == "/activate/data-pass"
    # A new browser (a new login) resumes at the same step.
    client.cookies.delete("onb_session")
    assert client.get("/activate/data-pass", follow_redirects=False).headers["location"].startswith("/login")
    data_pass_step(client, "decline")  # signed out: refused, nothing stored
    assert _invitation(db).data_pass_done_at is None


def test_models_without_data_pass_skip_it(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers, model_code="S90")))
    client.post("/activate/id", data=id_form(client), follow_redirects=False)
    assert verify_phone(client, db.factory).headers["location"] == "/activate/terms"
    terms_step(client)
    answer = billing_step(client)
    assert (answer.status_code, answer.headers["location"]) == (303, SERVICES_URL)
    assert client.get("/activate/data-pass", follow_redirects=False).headers["location"] == SERVICES_URL


def test_an_existing_billing_address_is_shown_again(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    _to_terms(client, db, settings, api_headers)
    terms_step(client)
    with db.factory() as session:
        account = session.scalars(select(Account)).one()
        session.add(
            BillingAddress(
                account_id=account.id,
                kind="company",
                recipient_name="Ekonomi",
                company_name="Lindqvist AB",
                vat_id="SE556703748501",
                street="Kungsgatan 2",
                postal_code="111 43",
                city="STOCKHOLM",
                country="SE",
                checked_at=utcnow() - timedelta(days=30),
            )
        )
        session.commit()
    page = client.get("/activate/billing")
    assert 'value="Ekonomi"' in page.text and 'value="Kungsgatan 2"' in page.text
    assert re.search(r'id="kind-company"[^>]*checked', page.text)
