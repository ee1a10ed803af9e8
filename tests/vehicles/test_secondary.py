"""Secondary users, removing a car and replacing the primary user, at the service level (SPEC §3.5):
at most five secondary users (open invitations counted), an SMS code valid 12 hours, links ended
with their reason and announced to ``on_link_ended`` subscribers, every change audited."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications.models import OutboxMessage
from onboarding.core.crypto import token_hash
from onboarding.core.db import transaction
from onboarding.core.errors import Forbidden, ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity import sms_codes
from onboarding.identity.models import Account, AuditEvent
from tests.account_support import make_account, run_and_send
from tests.conftest import NOW, Database
from tests.helpers import sms_codes_sent
from vehicles import links, secondary
from vehicles.models import SecondaryInvitation, Vehicle, VehicleRole, VehicleUser

VIN = "YV1DZ8256C2271234"
INVITEE_PHONE = "+46707654321"


def make_vehicle(
    db: Database, settings: Settings, primary_email: str = "astrid@example.com"
) -> tuple[int, int]:
    """A vehicle with a primary user, made directly: (vehicle id, primary account id)."""
    primary_id = make_account(db.factory, settings, NOW, email=primary_email)
    with transaction(db.factory) as session:
        vehicle = Vehicle(vin=VIN, model_code="E40", country="SE", created_at=NOW)
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, primary_id, VehicleRole.PRIMARY, now=NOW, actor="test")
        return vehicle.id, primary_id


def invite(
    db: Database, settings: Settings, vehicle_id: int, inviter_id: int, email: str, *, now: datetime = NOW
) -> str:
    def work(session: Session) -> str:
        vehicle, inviter = session.get_one(Vehicle, vehicle_id), session.get_one(Account, inviter_id)
        _invitation, token = secondary.invite(
            session, settings, vehicle, inviter, "Erik", "Berg", email, "070 765 43 21", "sv", now=now
        )
        return token

    return run_and_send(db.factory, settings, work)


def send_code(db: Database, settings: Settings, token: str, account_id: int, now: datetime) -> str:
    def work(session: Session) -> sms_codes.SendOutcome:
        state, invitation = secondary.resolve(session, token, now)
        assert state is secondary.InvitationState.VALID and invitation is not None
        return secondary.send_code(
            session, settings, invitation, session.get_one(Account, account_id), now=now
        )

    assert run_and_send(db.factory, settings, work) is sms_codes.SendOutcome.SENT
    return sms_codes_sent(db.factory, INVITEE_PHONE)[-1]


def accept(
    db: Database, settings: Settings, token: str, account_id: int, code: str, now: datetime
) -> sms_codes.CheckOutcome:
    with transaction(db.factory) as session:
        _state, invitation = secondary.resolve(session, token, now)
        assert invitation is not None
        return secondary.accept(
            session, settings, invitation, session.get_one(Account, account_id), code=code, now=now
        )


def live(db: Database, vehicle_id: int) -> list[tuple[int, str]]:
    with db.factory() as session:
        return [(link.account_id, link.role) for link in links.live_links(session, vehicle_id)]


def audit_kinds(db: Database) -> list[str]:
    with db.factory() as session:
        return list(session.scalars(select(AuditEvent.kind).order_by(AuditEvent.id)))


def test_the_sixth_invitation_is_refused_with_a_field_error(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    for n in range(settings.secondary_users_max):
        invite(db, settings, vehicle_id, primary_id, f"user{n}@example.com")
    with pytest.raises(ValidationFailed) as refused:
        invite(db, settings, vehicle_id, primary_id, "sixth@example.com")
    assert [e.field for e in refused.value.errors] == ["email"]
    assert refused.value.errors[0].params == {"count": 5}
    with db.factory() as session:
        invitations = session.scalars(select(SecondaryInvitation)).all()
        emails = session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.channel == "email")
        ).all()
    assert len(invitations) == 5 and "sixth@example.com" not in emails
    assert audit_kinds(db).count("secondary_invited") == 5
    # Only the SHA-256 of the token is stored, and the emailed link carries the token.
    token = invite(db, settings, vehicle_id, primary_id, "user0@example.com")  # replaces an open one
    with db.factory() as session:
        stored = session.scalar(
            select(SecondaryInvitation).where(SecondaryInvitation.token_hash == token_hash(token))
        )
    assert stored is not None and stored.phone == INVITEE_PHONE and stored.language == "sv"


def test_an_accepted_invitation_takes_its_place_and_an_expired_one_frees_it(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    tokens = [invite(db, settings, vehicle_id, primary_id, f"user{n}@example.com") for n in range(5)]
    invitee = make_account(db.factory, settings, NOW, email="user0@example.com")
    code = send_code(db, settings, tokens[0], invitee, NOW)
    assert accept(db, settings, tokens[0], invitee, code, NOW) is sms_codes.CheckOutcome.OK
    with pytest.raises(ValidationFailed):
        invite(db, settings, vehicle_id, primary_id, "late@example.com")
    later = NOW + timedelta(days=settings.secondary_invitation_valid_days, seconds=1)
    invite(db, settings, vehicle_id, primary_id, "late@example.com", now=later)


def test_only_the_primary_user_invites_and_not_themselves_or_a_current_user(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    stranger = make_account(db.factory, settings, NOW, email="stranger@example.com")
    with pytest.raises(Forbidden):
        invite(db, settings, vehicle_id, stranger, "friend@example.com")
    with pytest.raises(ValidationFailed) as own:
        invite(db, settings, vehicle_id, primary_id, "Astrid@Example.com")
    assert own.value.errors[0].message == secondary.OWN_ADDRESS
    with pytest.raises(ValidationFailed) as bad, transaction(db.factory) as session:
        secondary.invite(
            session,
            settings,
            session.get_one(Vehicle, vehicle_id),
            session.get_one(Account, primary_id),
            "",
            "Berg",
            "not-an-address",
            "12",
            "sv",
            now=NOW,
        )
    assert {e.field for e in bad.value.errors} == {"first_name", "email", "phone"}
    with db.factory() as session:
        assert session.scalars(select(SecondaryInvitation)).all() == []


def test_a_wrong_or_expired_code_does_not_link_and_a_right_one_within_12_hours_does(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    token = invite(db, settings, vehicle_id, primary_id, "erik@example.com")
    invitee = make_account(db.factory, settings, NOW, email="erik@example.com")
    code = send_code(db, settings, token, invitee, NOW)
    wrong = "000000" if code != "000000" else "111111"
    assert accept(db, settings, token, invitee, wrong, NOW) is sms_codes.CheckOutcome.WRONG
    expired_at = NOW + timedelta(hours=settings.secondary_code_valid_hours, seconds=1)
    assert accept(db, settings, token, invitee, code, expired_at) is sms_codes.CheckOutcome.EXPIRED
    assert live(db, vehicle_id) == [(primary_id, "primary")]
    with db.factory() as session:
        assert secondary.resolve(session, token, expired_at)[0] is secondary.InvitationState.VALID
    # A new code, entered 11 hours later (an ordinary SMS code lasts 10 minutes): linked.
    sent_at = expired_at + timedelta(minutes=2)
    code = send_code(db, settings, token, invitee, sent_at)
    assert (
        accept(db, settings, token, invitee, code, sent_at + timedelta(hours=11)) is sms_codes.CheckOutcome.OK
    )
    assert live(db, vehicle_id) == [(primary_id, "primary"), (invitee, "secondary")]
    with db.factory() as session:
        assert secondary.resolve(session, token, sent_at)[0] is secondary.InvitationState.USED
        invitation = session.scalars(select(SecondaryInvitation)).one()
        assert invitation.account_id == invitee and invitation.accepted_at is not None
    assert {"secondary_invited", "sms_code_sent", "vehicle_linked", "secondary_accepted"} <= set(
        audit_kinds(db)
    )


def test_an_unknown_or_revoked_link_and_a_linked_id_cannot_accept(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    token = invite(db, settings, vehicle_id, primary_id, "erik@example.com")
    with db.factory() as session:
        assert secondary.resolve(session, "nonsense", NOW) == (secondary.InvitationState.UNKNOWN, None)
        _state, invitation = secondary.resolve(session, token, NOW)
        assert invitation is not None
        # The primary user cannot take the invitation themselves.
        with pytest.raises(ValidationFailed):
            secondary.send_code(session, settings, invitation, session.get_one(Account, primary_id), now=NOW)
    with transaction(db.factory) as session:
        secondary.revoke_invitation(
            session,
            session.get_one(Vehicle, vehicle_id),
            session.get_one(Account, primary_id),
            invitation.id,
            now=NOW,
        )
    with db.factory() as session:
        assert secondary.resolve(session, token, NOW)[0] is secondary.InvitationState.REVOKED
    assert "secondary_invitation_revoked" in audit_kinds(db)


def _linked_secondary(db: Database, settings: Settings, vehicle_id: int, primary_id: int, email: str) -> int:
    token = invite(db, settings, vehicle_id, primary_id, email)
    invitee = make_account(db.factory, settings, NOW, email=email)
    code = send_code(db, settings, token, invitee, NOW)
    assert accept(db, settings, token, invitee, code, NOW) is sms_codes.CheckOutcome.OK
    return invitee


def _ended(db: Database, vehicle_id: int) -> list[tuple[int, str, str | None]]:
    with db.factory() as session:
        rows = session.scalars(
            select(VehicleUser).where(VehicleUser.vehicle_id == vehicle_id, VehicleUser.ended_at.is_not(None))
        )
        return sorted((link.account_id, link.role, link.ended_reason) for link in rows)


def test_the_primary_removes_a_secondary_user_and_a_secondary_user_leaves(
    db: Database, settings: Settings, reference: None
) -> None:
    vehicle_id, primary_id = make_vehicle(db, settings)
    erik = _linked_secondary(db, settings, vehicle_id, primary_id, "erik@example.com")
    maja = _linked_secondary(db, settings, vehicle_id, primary_id, "maja@example.com")
    with transaction(db.factory) as session:
        vehicle = session.get_one(Vehicle, vehicle_id)
        erik_link = links.link_of(session, vehicle_id, erik)
        assert erik_link is not None
        with pytest.raises(Forbidden):  # a secondary user removes no one
            secondary.remove_secondary(
                session, vehicle, session.get_one(Account, maja), erik_link.id, now=NOW
            )
        secondary.remove_secondary(
            session, vehicle, session.get_one(Account, primary_id), erik_link.id, now=NOW
        )
    with transaction(db.factory) as session:
        vehicle = session.get_one(Vehicle, vehicle_id)
        with pytest.raises(ValidationFailed):  # the primary user removes the car instead
            secondary.leave(session, vehicle, session.get_one(Account, primary_id), now=NOW)
        secondary.leave(session, vehicle, session.get_one(Account, maja), now=NOW)
    assert live(db, vehicle_id) == [(primary_id, "primary")]
    assert _ended(db, vehicle_id) == sorted(
        [(erik, "secondary", links.REMOVED_BY_PRIMARY), (maja, "secondary", links.LEFT)]
    )
    assert audit_kinds(db).count("vehicle_unlinked") == 2


def test_removing_the_car_ends_every_link_once_for_each_subscriber_and_withdraws_invitations(
    db: Database, settings: Settings, reference: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links, "_SUBSCRIBERS", [])
    heard: list[links.LinkEnded] = []
    links.on_link_ended(lambda _session, event: heard.append(event))
    vehicle_id, primary_id = make_vehicle(db, settings)
    erik = _linked_secondary(db, settings, vehicle_id, primary_id, "erik@example.com")
    maja = _linked_secondary(db, settings, vehicle_id, primary_id, "maja@example.com")
    open_token = invite(db, settings, vehicle_id, primary_id, "open@example.com")
    with transaction(db.factory) as session:
        vehicle = session.get_one(Vehicle, vehicle_id)
        with pytest.raises(Forbidden):
            secondary.remove_car(session, vehicle, session.get_one(Account, erik), now=NOW)
        secondary.remove_car(session, vehicle, session.get_one(Account, primary_id), now=NOW)
    assert live(db, vehicle_id) == []
    assert sorted((e.account_id, e.reason) for e in heard) == sorted(
        [(primary_id, links.CAR_REMOVED), (erik, links.CAR_REMOVED), (maja, links.CAR_REMOVED)]
    )
    assert {e.vin for e in heard} == {VIN}
    with db.factory() as session:
        assert secondary.resolve(session, open_token, NOW)[0] is secondary.InvitationState.REVOKED
    assert "vehicle_removed" in audit_kinds(db)


def test_a_transfer_replaces_the_primary_user_ends_the_secondary_users_and_tells_them(
    db: Database, settings: Settings, reference: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links, "_SUBSCRIBERS", [])
    heard: list[links.LinkEnded] = []
    links.on_link_ended(lambda _session, event: heard.append(event))
    vehicle_id, primary_id = make_vehicle(db, settings)
    erik = _linked_secondary(db, settings, vehicle_id, primary_id, "erik@example.com")
    open_token = invite(db, settings, vehicle_id, primary_id, "open@example.com")
    buyer = make_account(db.factory, settings, NOW, email="buyer@example.com")
    with transaction(db.factory) as session:
        with pytest.raises(ValidationFailed) as unknown_vin:
            secondary.transfer(
                session, settings, "YV1DZ8256C2279999", "buyer@example.com", now=NOW, actor="cli"
            )
        assert unknown_vin.value.errors[0].field == "vin"
        with pytest.raises(ValidationFailed) as no_id:
            secondary.transfer(session, settings, VIN, "nobody@example.com", now=NOW, actor="cli")
        assert no_id.value.errors[0].field == "email"
    with transaction(db.factory) as session:
        done = secondary.transfer(session, settings, VIN.lower(), " Buyer@example.com ", now=NOW, actor="cli")
        assert done.new_primary.id == buyer and len(done.ended) == 2 and done.revoked_invitations == 1
    assert live(db, vehicle_id) == [(buyer, "primary")]
    assert _ended(db, vehicle_id) == sorted(
        [(primary_id, "primary", links.TRANSFERRED), (erik, "secondary", links.TRANSFERRED)]
    )
    assert sorted(e.account_id for e in heard) == sorted([primary_id, erik])
    with db.factory() as session:
        assert secondary.resolve(session, open_token, NOW)[0] is secondary.InvitationState.REVOKED
        told = session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.purpose == "vehicle_transferred")
        ).all()
        transferred = session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "vehicle_transferred")
        ).one()
    assert sorted(told) == ["astrid@example.com", "erik@example.com"]
    assert transferred.actor == "cli" and transferred.account_id == buyer
    assert transferred.details is not None and transferred.details["previous_primary"] == primary_id
    with transaction(db.factory) as session, pytest.raises(ValidationFailed):
        secondary.transfer(session, settings, VIN, "buyer@example.com", now=NOW, actor="cli")
