"""A vehicle's users through the pages (SPEC §3.5): the primary user invites, the invitee accepts with
the texted code; every primary-only route, found from the route table, refuses a secondary user (403)
and a stranger (404) and changes nothing."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.activation.secondary_pages import primary_user_of_vehicle
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from tests.account_support import link_to, log_in, make_account
from tests.conftest import NOW, Database
from tests.helpers import app_routes, csrf, sms_codes_sent
from vehicles import links, secondary
from vehicles.models import SecondaryInvitation, Vehicle, VehicleRole, VehicleUser

VIN = "YV1DZ8256C2271234"
INVITEE_PHONE = "+46707654321"


def make_vehicle(db: Database, settings: Settings) -> tuple[int, int]:
    primary_id = make_account(db.factory, settings, NOW, email="astrid@example.com")
    with transaction(db.factory) as session:
        vehicle = Vehicle(vin=VIN, model_code="E40", country="SE", created_at=NOW)
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, primary_id, VehicleRole.PRIMARY, now=NOW, actor="test")
        return vehicle.id, primary_id


def sign_in_as(client: TestClient, email: str) -> None:
    client.cookies.clear()
    response = log_in(client, email)
    assert response.status_code == 303, response.text


def live(db: Database, vehicle_id: int) -> list[tuple[int, str]]:
    with db.factory() as session:
        return [(link.account_id, link.role) for link in links.live_links(session, vehicle_id)]


def test_the_primary_user_invites_and_the_invitee_accepts_with_the_texted_code(
    client: TestClient, db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    sign_in_as(client, "astrid@example.com")
    page = client.get(f"/vehicles/{vehicle_id}/users")
    assert page.status_code == 200 and "Nordlicht E40" in page.text
    form = {"first_name": "Erik", "last_name": "Berg", "email": "erik@example.com", "phone": "070 765 43 21"}
    refused = client.post(f"/vehicles/{vehicle_id}/users", data={**csrf(client), **form, "email": "nope"})
    assert refused.status_code == 422 and 'aria-invalid="true"' in refused.text
    sent = client.post(f"/vehicles/{vehicle_id}/users", data={**csrf(client), **form}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    assert "erik@example.com" in client.get(sent.headers["location"]).text
    path = link_to(db.factory, "erik@example.com", "/secondary/")

    # Not signed in: the page says who invited to which car, and how to log in or create an ID.
    client.cookies.clear()
    anonymous = client.get(path)
    assert anonymous.status_code == 200
    assert "Astrid Lindqvist" in anonymous.text and VIN in anonymous.text
    assert f'href="/login?next={path}"' in anonymous.text and 'href="/register"' in anonymous.text
    assert client.post(f"{path}/send", data=csrf(client), follow_redirects=False).status_code == 303

    erik = make_account(db.factory, settings, NOW, email="erik@example.com")
    sign_in_as(client, "erik@example.com")
    assert "Send the code" in client.get(path).text
    texted = client.post(f"{path}/send", data=csrf(client))
    assert texted.status_code == 200 and "12 hours" in texted.text
    [code] = sms_codes_sent(db.factory, INVITEE_PHONE)
    wrong = client.post(path, data={**csrf(client), "code": "000000" if code != "000000" else "111111"})
    assert wrong.status_code == 422 and live(db, vehicle_id) == [(primary_id, "primary")]
    accepted = client.post(path, data={**csrf(client), "code": code})
    assert accepted.status_code == 200, accepted.text
    assert live(db, vehicle_id) == [(primary_id, "primary"), (erik, "secondary")]
    assert client.get(path).status_code == 410  # used
    assert client.get("/secondary/not-a-real-token").status_code == 404

    # The secondary user may leave (the primary user is sent to remove the car instead).
    assert "Stop using this car" in client.get(f"/vehicles/{vehicle_id}/leave").text
    left = client.post(f"/vehicles/{vehicle_id}/leave", data=csrf(client))
    assert left.status_code == 200 and live(db, vehicle_id) == [(primary_id, "primary")]
    sign_in_as(client, "astrid@example.com")
    assert client.post(f"/vehicles/{vehicle_id}/leave", data=csrf(client)).status_code == 409
    assert live(db, vehicle_id) == [(primary_id, "primary")]


def test_the_primary_user_removes_a_secondary_user_an_invitation_and_the_car(
    client: TestClient, db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    link_id, invitation_id, _stranger = _secondary_and_invitation(db, settings, vehicle_id, primary_id)
    sign_in_as(client, "astrid@example.com")
    removed = client.post(
        f"/vehicles/{vehicle_id}/users/{link_id}/remove", data=csrf(client), follow_redirects=False
    )
    assert removed.status_code == 303
    revoked = client.post(
        f"/vehicles/{vehicle_id}/invitations/{invitation_id}/revoke",
        data=csrf(client),
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert client.post(f"/vehicles/{vehicle_id}/users/{link_id}/remove", data=csrf(client)).status_code == 404
    assert client.get(f"/vehicles/{vehicle_id}/remove").status_code == 200
    assert client.post(f"/vehicles/{vehicle_id}/remove", data=csrf(client)).status_code == 200
    assert live(db, vehicle_id) == []
    with db.factory() as session:
        reasons = sorted(r for r in session.scalars(select(VehicleUser.ended_reason)) if r)
        assert reasons == [links.CAR_REMOVED, links.REMOVED_BY_PRIMARY]
    assert client.get(f"/vehicles/{vehicle_id}/users").status_code == 404  # no longer theirs


def _secondary_and_invitation(
    db: Database, settings: Settings, vehicle_id: int, primary_id: int
) -> tuple[int, int, int]:
    """A linked secondary user (maja@) and an open invitation, made directly; an unrelated ID
    (stranger@). Returns (the secondary link's id, the invitation's id, the stranger's id)."""
    maja = make_account(db.factory, settings, NOW, email="maja@example.com")
    stranger = make_account(db.factory, settings, NOW, email="stranger@example.com")
    with transaction(db.factory) as session:
        vehicle = session.get_one(Vehicle, vehicle_id)
        link, _ = links.link_user(session, vehicle, maja, VehicleRole.SECONDARY, now=NOW, actor="test")
        invitation, _token = secondary.invite(
            session,
            settings,
            vehicle,
            session.get_one(Account, primary_id),
            "Erik",
            "Berg",
            "erik@example.com",
            "070 765 43 21",
            "sv",
            now=NOW,
        )
        return link.id, invitation.id, stranger


def _depends_on(dependant: Any, target: Any) -> bool:
    return any(dep.call is target or _depends_on(dep, target) for dep in dependant.dependencies)


def _snapshot(session: Session) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    users = [
        (u.id, u.account_id, u.role, u.ended_at)
        for u in session.scalars(select(VehicleUser).order_by(VehicleUser.id))
    ]
    invitations = [
        (i.id, i.accepted_at, i.revoked_at)
        for i in session.scalars(select(SecondaryInvitation).order_by(SecondaryInvitation.id))
    ]
    return users, invitations


PRIMARY_ONLY = {
    ("GET", "/vehicles/{vehicle_id}/users"),
    ("POST", "/vehicles/{vehicle_id}/users"),
    ("POST", "/vehicles/{vehicle_id}/users/{link_id}/remove"),
    ("POST", "/vehicles/{vehicle_id}/invitations/{invitation_id}/revoke"),
    ("GET", "/vehicles/{vehicle_id}/remove"),
    ("POST", "/vehicles/{vehicle_id}/remove"),
}


def test_every_primary_only_route_refuses_a_secondary_user_and_a_stranger_and_changes_nothing(
    client: TestClient, db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    link_id, invitation_id, _stranger = _secondary_and_invitation(db, settings, vehicle_id, primary_id)
    guarded = [
        (method, path)
        for path, route in app_routes(client.app.routes)  # type: ignore[attr-defined]
        if _depends_on(route.dependant, primary_user_of_vehicle)
        for method in sorted(route.methods or ())
    ]
    assert guarded and set(guarded) >= PRIMARY_ONLY, guarded
    # Every route about one vehicle is primary-only unless it is named here as open to its secondary
    # users too: a new vehicle route without the guard fails this test.
    open_to_secondary_users = {
        ("GET", "/vehicles/{vehicle_id}/leave"),
        ("POST", "/vehicles/{vehicle_id}/leave"),
    }
    about_a_vehicle = {
        (method, path)
        for path, route in app_routes(client.app.routes)  # type: ignore[attr-defined]
        if "{vehicle_id}" in path
        for method in route.methods or ()
    }
    assert about_a_vehicle - open_to_secondary_users == set(guarded), about_a_vehicle
    values = {"vehicle_id": vehicle_id, "link_id": link_id, "invitation_id": invitation_id, "card_id": 1}
    form = {"first_name": "Nils", "last_name": "Ek", "email": "nils@example.com", "phone": "070 111 22 33"}
    with db.factory() as session:
        before = _snapshot(session)
    for email, status in (("maja@example.com", 403), ("stranger@example.com", 404)):
        sign_in_as(client, email)
        for method, template in guarded:
            path = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)
            if method == "GET":
                response = client.get(path, follow_redirects=False)
            else:
                response = client.post(path, data={**csrf(client), **form}, follow_redirects=False)
            assert response.status_code == status, (email, method, path, response.status_code)
            with db.factory() as session:
                assert _snapshot(session) == before, (email, method, path)
    # The same requests as the primary user do work (the refusals above were not for another reason).
    sign_in_as(client, "astrid@example.com")
    assert client.get(f"/vehicles/{vehicle_id}/users").status_code == 200
