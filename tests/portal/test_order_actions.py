"""What staff do to an order, each audited with the staff member and the reason, and dated on the
order's timeline: a resent invitation kills the old link and a new one arrives; a corrected email
address re-invites to it; a corrected mobile number closes the wrong-number request and the buyer's
next code goes there; a cancelled order's link stops working. Bad input names the field and changes
nothing."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation.models import SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from tests.account_support import link_to, make_account
from tests.conftest import NOW, Database
from tests.helpers import (
    csrf,
    dev_mailbox_links,
    id_form,
    invite_through_api,
    path_of,
    run_jobs,
    sms_codes_sent,
)
from tests.portal.portal_support import make_staff, signed_in_staff
from vehicles import links
from vehicles.models import Order, VehicleRole


def _order(db: Database) -> Order:
    with db.factory() as session:
        return session.scalars(select(Order).where(Order.order_number == "SO-1")).one()


def _staff_client(client: TestClient, db: Database, settings: Settings) -> tuple[TestClient, int]:
    staff_id, secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    staff = TestClient(client.app)
    signed_in_staff(staff, "agent@se01.example", secret)
    return staff, staff_id


def _audit(db: Database, kind: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))


def test_resend_and_email_correction(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    first_link = path_of(invite_through_api(client, db.factory, settings, api_headers))
    staff, staff_id = _staff_client(client, db, settings)

    no_reason = staff.post("/portal/orders/SO-1/resend", data={**csrf(staff), "reason": " "})
    assert no_reason.status_code == 422 and 'id="resend-reason-error"' in no_reason.text
    assert _audit(db, "staff_resent_invitation") == []
    done = staff.post("/portal/orders/SO-1/resend", data={**csrf(staff), "reason": "Buyer lost the email"})
    assert done.status_code == 200 and "A new invitation is on its way" in done.text
    assert client.get(first_link).status_code != 200  # the old link no longer works
    run_jobs(db.factory, settings, utcnow())
    second_link = path_of(dev_mailbox_links(db.factory)[-1])
    assert second_link != first_link and client.get(second_link).status_code == 200
    [event] = _audit(db, "staff_resent_invitation")
    assert event.actor == f"staff:{staff_id} agent@se01.example"
    assert (event.details or {})["reason"] == "Buyer lost the email" and (event.details or {})[
        "order"
    ] == "SO-1"

    bad = staff.post(
        "/portal/orders/SO-1/email", data={**csrf(staff), "email": "not-an-address", "reason": "Typo"}
    )
    assert bad.status_code == 422 and 'id="email-email-error"' in bad.text
    assert _order(db).buyer_email == "astrid@example.com"
    fixed = staff.post(
        "/portal/orders/SO-1/email",
        data={**csrf(staff), "email": "Astrid.L@example.com", "reason": "Typo in the order"},
    )
    assert fixed.status_code == 200
    assert _order(db).buyer_email == "astrid.l@example.com"
    assert client.get(second_link).status_code != 200
    run_jobs(db.factory, settings, utcnow())
    assert client.get(link_to(db.factory, "astrid.l@example.com", "/i/")).status_code == 200
    page = staff.get("/portal/orders/SO-1")
    assert "<td>email_corrected</td>" in page.text and "<td>invitation_reissued</td>" in page.text
    assert len(_audit(db, "staff_corrected_email")) == 1


def test_phone_correction_closes_the_request_and_the_next_code_goes_there(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    assert client.post("/activate/id", data=id_form(client), follow_redirects=False).status_code == 303
    assert (
        client.post("/activate/phone/wrong", data={**csrf(client), "kind": "wrong_phone"}).status_code == 200
    )
    staff, _staff_id = _staff_client(client, db, settings)

    bad = staff.post(
        "/portal/orders/SO-1/phone", data={**csrf(staff), "phone": "12", "reason": "Buyer called"}
    )
    assert bad.status_code == 422 and 'id="phone-phone-error"' in bad.text
    with db.factory() as session:
        assert session.scalars(select(SupportRequest.status)).all() == ["open"]
    fixed = staff.post(
        "/portal/orders/SO-1/phone",
        data={**csrf(staff), "phone": "+46 70 765 43 21", "reason": "Buyer called"},
    )
    assert fixed.status_code == 200 and "The mobile number is corrected" in fixed.text
    with db.factory() as session:
        assert session.scalars(select(SupportRequest.status)).all() == ["done"]
    assert client.post("/activate/phone/send", data=csrf(client)).status_code == 200
    assert sms_codes_sent(db.factory, "+46707654321") and not sms_codes_sent(db.factory, "+46701234567")
    [event] = _audit(db, "staff_corrected_phone")
    assert json.loads(json.dumps(event.details))["closed_requests"] == 1


def test_cancelling_stops_the_link(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    link = path_of(invite_through_api(client, db.factory, settings, api_headers))
    staff, _staff_id = _staff_client(client, db, settings)
    assert (
        staff.post("/portal/orders/SO-1/cancel", data={**csrf(staff), "reason": "Buyer withdrew"}).status_code
        == 200
    )
    assert _order(db).production_status == "cancelled"
    assert client.get(link).status_code != 200
    again = staff.post("/portal/orders/SO-1/cancel", data={**csrf(staff), "reason": "Buyer withdrew"})
    assert again.status_code == 422 and 'id="cancel-order-error"' in again.text
    assert staff.post("/portal/orders/SO-1/fly", data={**csrf(staff), "reason": "x"}).status_code == 404


def test_used_car_linked_to_its_new_owner_after_the_papers(
    client: TestClient, db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    vin = "YV1DZ8256C2271234"
    invite_through_api(client, db.factory, settings, api_headers, vin=vin)
    first = make_account(db.factory, settings, NOW, email="first@example.com")
    buyer = make_account(db.factory, settings, NOW, email="second@example.com")
    with transaction(db.factory) as session:
        order = session.scalars(select(Order).where(Order.order_number == "SO-1")).one()
        vehicle = links.vehicle_for_order(session, order, now=NOW)
        vehicle.vin = vin
        links.link_user(session, vehicle, first, VehicleRole.PRIMARY, now=NOW, actor="test")
        vehicle_id = vehicle.id
    staff, staff_id = _staff_client(client, db, settings)
    form = {"email": "second@example.com", "reason": "Sold privately; papers seen at the dealer"}

    unchecked = staff.post("/portal/orders/SO-1/used_car", data={**csrf(staff), **form})
    assert unchecked.status_code == 422 and 'id="used_car-papers-error"' in unchecked.text
    nobody = staff.post(
        "/portal/orders/SO-1/used_car",
        data={**csrf(staff), **form, "email": "nobody@example.com", "papers_checked": "yes"},
    )
    assert nobody.status_code == 422 and 'id="used_car-email-error"' in nobody.text
    with db.factory() as session:
        assert [(u.account_id, u.role) for u in links.live_links(session, vehicle_id)] == [(first, "primary")]
    done = staff.post("/portal/orders/SO-1/used_car", data={**csrf(staff), **form, "papers_checked": "yes"})
    assert done.status_code == 200 and "<td>used_car_linked</td>" in done.text
    with db.factory() as session:
        assert [(u.account_id, u.role) for u in links.live_links(session, vehicle_id)] == [(buyer, "primary")]
    [event] = _audit(db, "staff_linked_used_car")
    assert (
        event.actor == f"staff:{staff_id} agent@se01.example"
        and (event.details or {})["new_owner"] == "second@example.com"
    )
