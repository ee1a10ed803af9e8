"""The charging offer in the activation (plug-in hybrids and electric cars, after the vehicle step) and
on My vehicles: booking, declining, the delivery promise from the settings, booking later, blocking a
lost card (primary user only)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.activation.models import Invitation
from onboarding.core.settings import Settings
from onboarding.web.rendering import LANGUAGE_COOKIE
from tests.conftest import Database
from tests.helpers import csrf
from tests.web.test_error_pages_and_titles import Visit
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Vehicle

VIN = "WNL0E40A0R1234567"


def _count(db: Database, table: type) -> int:
    with db.factory() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_a_linked_buyer_books_and_sees_the_card_on_my_vehicles(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.cookies.set(LANGUAGE_COOKIE, "en")  # the texts below are checked in English
    page = Visit(client, db, settings, api_headers).at_step("/activate/charging", vin=VIN)
    assert page.status_code == 200
    assert f"{settings.charging_card_delivery_days} days" in page.text and 'value="book"' in page.text
    refused = client.post(
        "/activate/charging", data={**csrf(client), "choice": "maybe"}, follow_redirects=False
    )
    assert refused.status_code == 422 and _count(db, ChargingContract) == 0
    booked = client.post(
        "/activate/charging", data={**csrf(client), "choice": "book"}, follow_redirects=False
    )
    assert (booked.status_code, booked.headers["location"]) == (303, "/activate/done")
    # A second tab's submit books nothing more.
    again = client.post("/activate/charging", data={**csrf(client), "choice": "book"}, follow_redirects=False)
    assert again.status_code == 303
    assert (_count(db, ChargingContract), _count(db, ChargingCard)) == (1, 1)
    with db.factory() as session:
        contract = session.scalars(select(ChargingContract)).one()
        card = session.scalars(select(ChargingCard)).one()
        vehicle_id = session.scalars(select(Vehicle.id)).one()
    mine = client.get("/vehicles")
    assert contract.emaid in mine.text and card.visual_number in mine.text
    assert "Block this card (lost or stolen)" in mine.text and "Book the charging service" not in mine.text
    # The lost card is blocked and a replacement ordered.
    blocked = client.post(
        f"/vehicles/{vehicle_id}/charging/cards/{card.id}/block", data=csrf(client), follow_redirects=False
    )
    assert blocked.status_code == 303
    with db.factory() as session:
        states = [c.state for c in session.scalars(select(ChargingCard).order_by(ChargingCard.id))]
    assert states == ["blocked", "requested"]
    # Another car's card id is not found through this car.
    assert (
        client.post(f"/vehicles/{vehicle_id}/charging/cards/999/block", data=csrf(client)).status_code == 404
    )


def test_declining_finishes_and_booking_follows_on_my_vehicles(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.cookies.set(LANGUAGE_COOKIE, "en")  # the texts below are checked in English
    Visit(client, db, settings, api_headers).at_step("/activate/charging", vin=VIN)
    declined = client.post(
        "/activate/charging", data={**csrf(client), "choice": "decline"}, follow_redirects=False
    )
    assert (declined.status_code, declined.headers["location"]) == (303, "/activate/done")
    with db.factory() as session:
        assert session.scalars(select(Invitation.charging_done_at)).one() is not None
        vehicle_id = session.scalars(select(Vehicle.id)).one()
    assert _count(db, ChargingContract) == 0
    assert "Book the charging service" in client.get("/vehicles").text
    booked = client.post(f"/vehicles/{vehicle_id}/charging", data=csrf(client), follow_redirects=False)
    assert booked.status_code == 303 and _count(db, ChargingContract) == 1
    assert client.post(f"/vehicles/{vehicle_id}/charging", data=csrf(client)).status_code == 200
    assert _count(db, ChargingContract) == 1
    # Without the CSRF token nothing is booked or blocked.
    assert client.post(f"/vehicles/{vehicle_id}/charging", data={}).status_code in (400, 403)


def test_without_a_linked_car_the_offer_waits_for_my_vehicles(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    page = Visit(client, db, settings, api_headers).at_step("/activate/charging")
    assert page.status_code == 200 and 'value="book"' not in page.text and 'value="decline"' in page.text
    early = client.post("/activate/charging", data={**csrf(client), "choice": "book"}, follow_redirects=False)
    assert early.status_code == 409 and _count(db, ChargingContract) == 0
    with db.factory() as session:
        assert session.scalars(select(Invitation.charging_done_at)).one() is None
