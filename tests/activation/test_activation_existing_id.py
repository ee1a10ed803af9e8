"""An invited buyer who already has an ID without a verified mobile number (one made through
``/register`` has none) logs in and verifies the number on the order, like a new ID does."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from tests.account_support import PASSWORD, make_account
from tests.conftest import Database
from tests.helpers import csrf, invite_through_api, path_of, sms_codes_sent, verify_phone_step

ORDER_PHONE = "+46701234567"  # tests.helpers.order_payload's "+46 70 123 45 67"


def _existing_id(db: Database, settings: Settings, phone: str | None) -> None:
    account_id = make_account(db.factory, settings, utcnow())
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        account.phone, account.phone_verified_at = phone, None


def _log_in_from_the_invitation(
    client: TestClient, db: Database, settings: Settings, api: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api)))
    assert 'action="/activate/login"' in client.get("/activate/id").text
    logged_in = client.post(
        "/activate/login", data={**csrf(client), "password": PASSWORD}, follow_redirects=False
    )
    assert logged_in.status_code == 303, logged_in.text
    assert client.get("/activate/id", follow_redirects=False).headers["location"] == "/activate/phone"


@pytest.mark.parametrize("phone", [None, "+46709998877"], ids=["no number", "another unverified number"])
def test_an_existing_id_verifies_the_number_on_the_order(
    db: Database,
    reference: None,
    settings: Settings,
    client: TestClient,
    api_headers: dict[str, str],
    phone: str | None,
) -> None:
    _existing_id(db, settings, phone)
    _log_in_from_the_invitation(client, db, settings, api_headers)

    page = client.get("/activate/phone")
    assert page.status_code == 200 and "45 67" in page.text
    wrong = client.get("/activate/phone/wrong")
    assert wrong.status_code == 200 and "45 67" in wrong.text

    verified = verify_phone_step(client, db.factory, ORDER_PHONE)
    assert verified.status_code == 303 and verified.headers["location"] == "/activate/pin"
    assert phone is None or sms_codes_sent(db.factory, phone) == []
    with db.factory() as session:
        account = session.scalar(select(Account).where(Account.email == "astrid@example.com"))
        assert account is not None
        assert (account.phone, account.phone_verified_at is not None) == (ORDER_PHONE, True)
