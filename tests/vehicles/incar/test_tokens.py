"""The in-car tokens and device logins at the service level: rotation of refresh tokens, the retry
grace (same token within 30 s while its successor is unused gets the same answer), reuse revoking
the grant (RFC 9700), revocation, vehicle client credentials, device-login states (RFC 8628)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from onboarding.core.db import transaction
from onboarding.core.errors import ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from tests.account_support import make_account
from tests.conftest import NOW, Database
from vehicles.incar import clients, device_login, tokens
from vehicles.incar.models import DeviceAuthorization, InCarGrant, RefreshToken, VehicleClient
from vehicles.models import Vehicle

VIN = "YV1DZ8256C2271234"
OTHER_VIN = "YV1DZ8256C2271235"


def provision(db: Database, vin: str = VIN) -> tuple[str, str]:
    with transaction(db.factory) as session:
        client, secret = clients.provision(session, vin, now=NOW, actor="test")
        return client.client_id, secret


def user_grant(db: Database, settings: Settings, account_id: int, vin: str = VIN) -> dict[str, Any]:
    """A device login approved by ``account_id``, completed: its first token answer."""
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, clients.client_id_for(vin))
        authorization, _code = device_login.start(session, settings, client, "", now=NOW)
        authorization.account_id, authorization.approved_at = account_id, NOW
        assert device_login.status(authorization, NOW) == "approved"
        assert device_login.complete(session, authorization, now=NOW)
        grant = tokens.grant_for_device_login(session, authorization, now=NOW)
        return tokens.issue(session, settings, grant, now=NOW)


def refresh(db: Database, settings: Settings, token: str, *, at: Any = NOW, vin: str = VIN) -> dict[str, Any]:
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, clients.client_id_for(vin))
        return tokens.refresh(session, settings, client, token, now=at)


def refused(db: Database, settings: Settings, token: str, *, at: Any = NOW, vin: str = VIN) -> None:
    """A refresh that must be refused; its writes (a revoked grant) are committed, as the route does."""
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, clients.client_id_for(vin))
        with pytest.raises(tokens.InvalidGrant):
            tokens.refresh(session, settings, client, token, now=at)


def context(db: Database, access_token: str, at: Any = NOW) -> tokens.AccessContext | None:
    with db.factory() as session:
        return tokens.access_context(session, access_token, now=at)


@pytest.fixture
def astrid(db: Database, settings: Settings) -> int:
    provision(db)
    return make_account(db.factory, settings, NOW)


def test_provisioning_stores_only_a_hash_and_rotation_ends_the_old_secret(db: Database) -> None:
    client_id, first = provision(db)
    assert client_id == "vehicle-" + VIN
    _, second = provision(db)
    with db.factory() as session:
        row = session.get_one(VehicleClient, client_id)
        assert first not in row.secret_hash and row.rotated_at is not None
        assert clients.authenticate(session, client_id, first) is None
        assert clients.authenticate(session, client_id, second) is not None
        kinds = session.scalars(select(AuditEvent.kind).where(AuditEvent.kind.like("incar_client_%"))).all()
        assert sorted(kinds) == ["incar_client_provisioned", "incar_client_rotated"]


def test_a_bad_vin_is_a_field_error_and_stores_nothing(db: Database) -> None:
    with pytest.raises(ValidationFailed) as failed, transaction(db.factory) as session:
        clients.provision(session, "YV1DZ8256C22712", now=NOW)
    assert [e.field for e in failed.value.errors] == ["vin"]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(VehicleClient)) == 0


def test_a_refresh_rotates_and_a_retry_within_the_grace_gets_the_same_answer(
    db: Database, settings: Settings, astrid: int
) -> None:
    first = user_grant(db, settings, astrid)
    assert first["token_type"] == "Bearer" and first["expires_in"] == 600 and first["refresh_token"]
    second = refresh(db, settings, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    retried = refresh(db, settings, first["refresh_token"], at=NOW + timedelta(seconds=29))
    assert retried == second
    context_now = context(db, second["access_token"])
    assert context_now is not None and context_now.account_id == astrid and context_now.vin == VIN


def test_reuse_after_the_successor_was_used_revokes_the_grant(
    db: Database, settings: Settings, astrid: int
) -> None:
    first = user_grant(db, settings, astrid)
    second = refresh(db, settings, first["refresh_token"])
    third = refresh(db, settings, second["refresh_token"], at=NOW + timedelta(seconds=1))
    with db.factory() as session:  # the successor's use wiped the predecessor's kept answer
        kept = session.scalars(select(RefreshToken.answer_sealed).order_by(RefreshToken.id)).all()
        assert kept[0] is None and kept[1] is not None
    refused(db, settings, first["refresh_token"], at=NOW + timedelta(seconds=2))
    assert context(db, third["access_token"]) is None
    refused(db, settings, third["refresh_token"], at=NOW + timedelta(seconds=3))
    with db.factory() as session:
        grant = session.scalars(select(InCarGrant)).one()
        assert grant.revoked_reason == tokens.REUSE
        events = session.scalars(select(AuditEvent).where(AuditEvent.kind == "incar_grant_revoked")).all()
        assert [e.account_id for e in events] == [astrid]


def test_reuse_after_the_grace_revokes_the_grant(db: Database, settings: Settings, astrid: int) -> None:
    first = user_grant(db, settings, astrid)
    second = refresh(db, settings, first["refresh_token"])
    refused(
        db,
        settings,
        first["refresh_token"],
        at=NOW + timedelta(seconds=settings.incar_refresh_retry_seconds + 1),
    )
    assert context(db, second["access_token"]) is None
    refused(db, settings, second["refresh_token"], at=NOW + timedelta(seconds=40))


def test_unknown_expired_and_other_clients_tokens_are_invalid_without_revoking(
    db: Database, settings: Settings, astrid: int
) -> None:
    provision(db, OTHER_VIN)
    first = user_grant(db, settings, astrid)
    refused(db, settings, "not-a-token")
    refused(db, settings, first["refresh_token"], vin=OTHER_VIN)
    refused(db, settings, first["refresh_token"], at=NOW + timedelta(days=settings.incar_refresh_token_days))
    assert refresh(db, settings, first["refresh_token"])["access_token"]
    assert context(db, first["access_token"], NOW + timedelta(minutes=11)) is None


def test_revocation_of_either_token_and_of_grants_by_vin(
    db: Database, settings: Settings, astrid: int
) -> None:
    first = user_grant(db, settings, astrid)
    second = user_grant(db, settings, astrid)
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, clients.client_id_for(VIN))
        assert tokens.revoke_token(session, client, first["access_token"], now=NOW)
        assert not tokens.revoke_token(session, client, "unknown", now=NOW)
        own = tokens.client_grant(session, client, now=NOW)
        assert tokens.client_grant(session, client, now=NOW).id == own.id
        car = tokens.issue(session, settings, own, now=NOW)
        assert "refresh_token" not in car
    assert context(db, first["access_token"]) is None
    refresh(db, settings, first["refresh_token"])  # revoking the access token leaves the grant
    with transaction(db.factory) as session:
        assert (
            tokens.revoke_grants(session, reason="vehicle_removed", now=NOW, vin=VIN, account_id=astrid) == 2
        )
    assert context(db, second["access_token"]) is None
    car_context = context(db, car["access_token"])
    assert car_context is not None and car_context.account_id is None


def test_device_login_states(db: Database, settings: Settings, reference: None, astrid: int) -> None:
    with transaction(db.factory) as session:
        session.add(Vehicle(vin=VIN, model_code="E40", country="SE", created_at=NOW))
        client = session.get_one(VehicleClient, clients.client_id_for(VIN))
        authorization, device_code = device_login.start(session, settings, client, "", now=NOW)
        assert authorization.pin_required  # the E40 asks for the security PIN
        code = authorization.user_code
        assert len(code) == 9 and code[4] == "-" and set(code) <= set(device_login.USER_CODE_ALPHABET + "-")
        assert device_login.by_user_code(session, code.lower().replace("-", " "), now=NOW) is authorization
        assert device_login.by_device_code(session, device_code) is authorization
        assert device_login.status(authorization, NOW) == "pending"
        assert device_login.status(authorization, NOW + timedelta(seconds=2)) == "slow_down"
        assert authorization.interval == 10
        assert device_login.status(authorization, NOW + timedelta(seconds=12)) == "pending"
        authorization.account_id, authorization.approved_at = astrid, NOW
        assert device_login.status(authorization, NOW + timedelta(seconds=30)) == "pending"  # PIN first
        authorization.pin_verified_at = NOW
        assert device_login.status(authorization, NOW + timedelta(seconds=40)) == "approved"
        assert device_login.complete(session, authorization, now=NOW)
        assert not device_login.complete(session, authorization, now=NOW)
        assert device_login.status(authorization, NOW) == "completed"
        assert device_login.by_user_code(session, code, now=NOW) is None
        late, _ = device_login.start(session, settings, client, "", now=NOW)
        assert device_login.status(late, NOW + timedelta(minutes=10)) == "expired"
        denied, _ = device_login.start(session, settings, client, "", now=NOW)
        denied.denied_at = NOW
        assert device_login.status(denied, NOW) == "denied"
        session.flush()
        assert session.scalar(select(func.count()).select_from(DeviceAuthorization)) == 3
