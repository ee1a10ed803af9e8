"""``onboarding vehicles transfer VIN --to EMAIL`` through the command's entry point: the new owner
becomes the primary user, everyone before them is removed and told, the change is audited as "cli";
an unknown VIN or an address without an ID is a clear error and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from notifications.models import OutboxMessage
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from tests.account_support import make_account
from tests.conftest import NOW, Database
from vehicles import links
from vehicles.models import Vehicle, VehicleRole

VIN = "YV1DZ8256C2271234"


def _cli(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        ONBOARDING_DATABASE_URL=db.url,
        ONBOARDING_SECRET_KEY="k" * 48,
    )
    command = [sys.executable, "-m", "onboarding.ops.cli", "vehicles", "transfer", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_transfer_replaces_the_primary_user_through_the_command_line(
    db: Database, settings: Settings, reference: None
) -> None:
    old = make_account(db.factory, settings, NOW, email="astrid@example.com")
    erik = make_account(db.factory, settings, NOW, email="erik@example.com")
    buyer = make_account(db.factory, settings, NOW, email="buyer@example.com")
    with transaction(db.factory) as session:
        vehicle = Vehicle(vin=VIN, model_code="E40", country="SE", created_at=NOW)
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, old, VehicleRole.PRIMARY, now=NOW, actor="test")
        links.link_user(session, vehicle, erik, VehicleRole.SECONDARY, now=NOW, actor="test")
        vehicle_id = vehicle.id

    unknown_vin = _cli(db, "YV1DZ8256C2279999", "--to", "buyer@example.com")
    assert unknown_vin.returncode == 1 and "vin: No vehicle has this VIN." in unknown_vin.stderr
    no_id = _cli(db, VIN, "--to", "nobody@example.com")
    assert no_id.returncode == 1 and "email: No ID has this email address" in no_id.stderr
    with db.factory() as session:
        assert [(u.account_id, u.role) for u in links.live_links(session, vehicle_id)] == [
            (old, "primary"),
            (erik, "secondary"),
        ]

    done = _cli(db, VIN, "--to", "buyer@example.com")
    assert done.returncode == 0, done.stderr
    assert f"Vehicle {VIN}: primary user is now buyer@example.com." in done.stdout
    assert "Ended 2 links" in done.stdout
    with db.factory() as session:
        assert [(u.account_id, u.role) for u in links.live_links(session, vehicle_id)] == [(buyer, "primary")]
        told = session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.purpose == "vehicle_transferred")
        ).all()
        events = session.scalars(select(AuditEvent).where(AuditEvent.actor == "cli")).all()
    assert sorted(told) == ["astrid@example.com", "erik@example.com"]
    assert {e.kind for e in events} == {"vehicle_unlinked", "vehicle_linked", "vehicle_transferred"}
