"""Staff members, dealers and orders for the portal tests, and a signed-in staff client."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.crypto import unseal_text
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.portal import staff as staff_service
from onboarding.portal.models import StaffMember
from tests.conftest import NOW
from tests.helpers import csrf, order_payload, put_order
from vehicles.schemas import DealerIn
from vehicles.service import upsert_dealer

STAFF_PASSWORD = "amber-harbour-violin-42"


def add_dealer(factory: sessionmaker[Session], code: str, country: str) -> None:
    with transaction(factory) as session:
        upsert_dealer(
            session,
            code,
            DealerIn(
                name=f"Dealer {code}", country=country, email=f"{code.lower()}@dealer.example", language="en"
            ),
            NOW,
        )


def make_staff(
    factory: sessionmaker[Session],
    email: str,
    role: str,
    *,
    dealer: str | None = None,
    country: str | None = None,
    enrolled_with: Settings | None = None,
) -> tuple[int, str]:
    """A staff member with the test password; with ``enrolled_with``, the authenticator enrolled too.
    Returns the id and the authenticator's secret ("" when not enrolled)."""
    with transaction(factory) as session:
        staff, _token = staff_service.create_staff(
            session,
            email=email,
            name="Test Staff",
            role=role,
            dealer_code=dealer,
            country=country,
            language="en",
            creator=None,
            now=NOW,
        )
        staff_service.accept_invitation(
            session, staff, password=STAFF_PASSWORD, confirmation=STAFF_PASSWORD, now=NOW, ip=None
        )
        secret = ""
        if enrolled_with is not None:
            secret = staff_service.enrolment_secret(enrolled_with, staff)
            staff.totp_confirmed_at = NOW
        return staff.id, secret


def totp_secret(factory: sessionmaker[Session], settings: Settings, staff_id: int) -> str:
    with factory() as session:
        staff = session.get(StaffMember, staff_id)
        assert staff is not None and staff.totp_secret_sealed
        return unseal_text(
            settings.secret_key_value(), staff_service.TOTP_SEAL_PURPOSE, staff.totp_secret_sealed
        )


def code_at(secret: str, at: datetime) -> str:
    return str(pyotp.TOTP(secret).at(at))


def staff_login(client: TestClient, email: str, password: str = STAFF_PASSWORD) -> Any:
    return client.post(
        "/portal/login", data={**csrf(client), "email": email, "password": password}, follow_redirects=False
    )


def signed_in_staff(client: TestClient, email: str, secret: str, *, offset_steps: int = 0) -> TestClient:
    """``client`` signed in as an enrolled staff member (password, then a code of the current step)."""
    assert staff_login(client, email).status_code == 303
    code = code_at(secret, datetime.now().astimezone() + timedelta(seconds=30 * offset_steps))
    answer = client.post("/portal/login/verify", data={**csrf(client), "code": code}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client


def add_orders(
    factory: sessionmaker[Session],
    settings: Settings,
    prefix: str,
    count: int,
    *,
    dealer: str,
    country: str,
    **extra: Any,
) -> list[str]:
    numbers = []
    for n in range(count):
        number = f"{prefix}-{n:04d}"
        payload = order_payload(
            date(2026, 6, 1) + timedelta(days=n % 30),
            dealer_code=dealer,
            country=country,
            buyer_email=f"{prefix.lower()}{n}@example.com",
            buyer_last_name=f"Buyer{n}",
            **extra,
        )
        put_order(factory, settings, number, NOW, **payload)
        numbers.append(number)
    return numbers


def order_numbers(html: str) -> list[str]:
    return re.findall(r'href="/portal/orders/([^"?]+)"', html)
