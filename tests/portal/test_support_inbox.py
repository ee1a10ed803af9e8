"""Support requests as records: the inbox lists a tenant's waiting requests, longest waiting first;
a staff member takes one (in progress, named), adds notes (an empty one is refused, naming the
field), and marks it done, which tells the buyer by email; done requests leave the inbox. Each step
is audited with the staff member."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from notifications.models import OutboxMessage
from onboarding.activation.models import SupportRequest
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from tests.account_support import emails_to
from tests.conftest import NOW, Database
from tests.helpers import csrf, id_form, invite_through_api, path_of, run_jobs
from tests.portal.portal_support import make_staff, signed_in_staff


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
    noted = staff.post(f"/portal/requests/{ids[1]}/note", data={**csrf(staff), "note": "Called the buyer."})
    assert noted.status_code == 200 and "Called the buyer." in noted.text
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
