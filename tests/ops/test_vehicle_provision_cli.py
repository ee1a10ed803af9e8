"""``onboarding vehicles provision VIN``: prints the car's client id and secret once (only the hash is
stored), a second run rotates the secret; a bad VIN is a field error and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from tests.conftest import Database
from vehicles.incar import clients
from vehicles.incar.models import VehicleClient

VIN = "YV1DZ8256C2271234"


def _cli(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        ONBOARDING_DATABASE_URL=db.url,
        ONBOARDING_SECRET_KEY="k" * 48,
    )
    command = [sys.executable, "-m", "onboarding.ops.cli", "vehicles", "provision", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def _secret(output: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("client_secret: "))


def test_provision_prints_the_secret_once_and_rotates(db: Database) -> None:
    bad = _cli(db, "YV1DZ8256C22712")
    assert bad.returncode == 1 and bad.stderr.startswith("vin: ")
    first = _cli(db, VIN)
    assert first.returncode == 0, first.stderr
    assert f"client_id: vehicle-{VIN}" in first.stdout and "Provisioned." in first.stdout
    second = _cli(db, VIN)
    assert second.returncode == 0 and "Rotated" in second.stdout
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(VehicleClient)) == 1
        assert clients.authenticate(session, "vehicle-" + VIN, _secret(first.stdout)) is None
        assert clients.authenticate(session, "vehicle-" + VIN, _secret(second.stdout)) is not None
