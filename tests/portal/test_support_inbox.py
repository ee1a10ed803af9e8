"""Support requests as records: the inbox lists a tenant's waiting requests, longest waiting first;
a staff member takes one (in progress, named), adds notes (an empty one is refused, naming the
field), and marks it done, which tells the buyer by email; done requests leave the inbox. Each step
is audited with the staff member. A charging card not delivered in time becomes a request too."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from notifications.models import OutboxMessage
from onboarding.activation.models import SupportRequest
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import Account, AuditEvent
from tests.account_support import emails_to, make_account
from tests.conftest import NOW, Database
from tests.helpers import csrf, id_form, invite_through_api, path_of, run_jobs
from tests.portal.portal_support import add_dealer, add_orders, make_staff, signed_in_staff
from vehicles import links
from vehicles.charging import contracts
from vehicles.charging.models import ChargingCard
from vehicles.models import Order, Vehicle, VehicleRole


def _inbox_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/portal/requests/(\d+)"', html)]


def test_a_request_is_taken_noted_and_done(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    assert client.post("/activate/id", data=id_form(client), follow_redirects=False).status_code == 303
    for kind in ("no_sms", "wrong_phone"):
        assert client.post("/activate/phone/wrong", data={**csrf(client), "kind": kind}).status_code == 200
    with transaction(db.factory) as session:  # the first one has waited longer
        first, second = session.scalars(select(SupportRequest).order_by(SupportRequest.id)).all()
        first.created_at = NOW - timedelta(days=2)
        second.created_at = NOW - timedelta(days=1)
        ids = [first.id, second.id]
    staff_id, secret = make_staff(
        db.factory, "market@se.example", "market_agent", country="SE", enrolled_with=settings
    )
    staff = TestClient(client.app)
    signed_in_staff(staff, "market@se.example", secret)

    assert _inbox_ids(staff.get("/portal/requests").text) == ids
    taken = staff.post(f"/portal/requests/{ids[1]}/take", data=csrf(staff))
    assert (
        taken.status_code == 200 and 'data-status="in_progress"' in taken.text and "Test Staff" in taken.text
    )
    empty = staff.post(f"/portal/requests/{ids[1]}/note", data={**csrf(staff), "note": "  "})
    assert empty.status_code == 422 and 'id="note-error"' in empty.text
    note = "Called the buyer.\r\nThe number ends in 67, not 76."  # a textarea's lines
    noted = staff.post(f"/portal/requests/{ids[1]}/note", data={**csrf(staff), "note": note})
    assert noted.status_code == 200 and "Called the buyer." in noted.text and "not 76." in noted.text
    done = staff.post(f"/portal/requests/{ids[1]}/done", data=csrf(staff))
    assert done.status_code == 200 and 'data-status="done"' in done.text
    again = staff.post(f"/portal/requests/{ids[1]}/done", data=csrf(staff))
    assert again.status_code == 422 and 'id="request-error"' in again.text

    assert _inbox_ids(staff.get("/portal/requests").text) == [ids[0]]
    assert _inbox_ids(staff.get("/portal/requests", params={"status": "done"}).text) == [ids[1]]
    run_jobs(db.factory, settings, datetime.now(UTC) + timedelta(minutes=1))
    with db.factory() as session:
        done_mail = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.purpose == "support_request_done")
        ).all()
    told = [m for m in emails_to(db.factory, "astrid@example.com") if m.outbox_id in done_mail]
    # In the order's language (Swedish here), naming the request.
    assert len(told) == 1 and told[0].subject == "Ditt supportärende är klart"
    assert f"nummer {ids[1]}" in told[0].text_body
    with db.factory() as session:
        kinds = [
            e.kind
            for e in session.scalars(select(AuditEvent).where(AuditEvent.actor.like(f"staff:{staff_id} %")))
        ]
    assert {"staff_took_request", "staff_noted_request", "staff_finished_request"} <= set(kinds)


def test_a_late_charging_card_becomes_a_request_of_the_order_s_dealer_and_market(
    client: TestClient, db: Database, settings: Settings, reference: None
) -> None:
    add_dealer(db.factory, "SE7", "SE")
    add_dealer(db.factory, "SE8", "SE")
    (number,) = add_orders(db.factory, settings, "LATE", 1, dealer="SE7", country="SE")
    holder_id = make_account(db.factory, settings, NOW, email="holder@example.com")
    with transaction(db.factory) as session:
        order = session.scalars(select(Order).where(Order.order_number == number)).one()
        vehicle = Vehicle(
            vin="YV1DZ8256C2271234", model_code="E40", country="SE", order_id=order.id, created_at=NOW
        )
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, holder_id, VehicleRole.PRIMARY, now=NOW, actor="test")
        contracts.book(session, settings, vehicle, session.get_one(Account, holder_id), now=NOW)
    days = settings.charging_card_delivery_days
    # The scheduler's pass: not late on the expected day, one request the day after, never a second.
    assert run_jobs(db.factory, settings, NOW + timedelta(days=days)).cards_overdue == 0
    assert run_jobs(db.factory, settings, NOW + timedelta(days=days + 1)).cards_overdue == 1
    assert run_jobs(db.factory, settings, NOW + timedelta(days=days + 2)).cards_overdue == 0
    with db.factory() as session:
        (late,) = session.scalars(select(SupportRequest)).all()
        card = session.get_one(ChargingCard, late.charging_card_id)
        routed = session.scalars(
            select(OutboxMessage.recipient).where(
                OutboxMessage.purpose == "support_request", OutboxMessage.reference_id == late.id
            )
        ).all()
    assert (late.kind, late.dealer_code, late.country) == ("charging_card_overdue", "SE7", "SE")
    assert late.contact_email == "holder@example.com" and routed == [late.routed_to]
    assert "@se." in late.routed_to  # the Swedish market's support mailbox, as the directory says

    _other, other_secret = make_staff(
        db.factory, "agent@se8.example", "dealer_agent", dealer="SE8", enrolled_with=settings
    )
    other = signed_in_staff(TestClient(client.app), "agent@se8.example", other_secret)
    assert other.get(f"/portal/requests/{late.id}").status_code == 404
    assert late.id not in _inbox_ids(other.get("/portal/requests").text)
    _agent, secret = make_staff(
        db.factory, "agent@se7.example", "dealer_agent", dealer="SE7", enrolled_with=settings
    )
    agent = signed_in_staff(TestClient(client.app), "agent@se7.example", secret)
    assert _inbox_ids(agent.get("/portal/requests").text) == [late.id]
    page = agent.get(f"/portal/requests/{late.id}")
    assert page.status_code == 200 and 'id="request-card"' in page.text and card.visual_number in page.text
    assert agent.post(f"/portal/requests/{late.id}/done", data=csrf(agent)).status_code == 200
    with db.factory() as session:
        told = session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.purpose == "support_request_done")
        ).all()
    assert told == ["holder@example.com"]
