"""Vehicle clients: each car is a confidential OAuth client of its own (SPEC §3.7), its credential
provisioned at production. The secret is shown once; only its SHA-256 is stored (it is random with
256 bits, so a fast hash suffices and keeps every token request cheap)."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onboarding.core.crypto import token_hash
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.identity import audit
from vehicles.incar.models import VehicleClient
from vehicles.models import Order, Vehicle
from vehicles.vin import check_vin

CLIENT_ID_PREFIX = "vehicle-"


def client_id_for(vin: str) -> str:
    return CLIENT_ID_PREFIX + vin


def market_of(session: Session, vin: str) -> str | None:
    """The country of the VIN's car or order, when one is known (None otherwise)."""
    country = session.scalar(select(Vehicle.country).where(Vehicle.vin == vin))
    if country is None:
        country = session.scalar(select(Order.country).where(Order.vin == vin).limit(1))
    return country


def checked_vin(session: Session, raw_vin: str) -> str:
    """The VIN normalised, or ``ValidationFailed`` on "vin" (ISO 3779; the check digit as the market
    requires, when the market is known)."""
    first = check_vin(raw_vin, "")
    if first.problems:
        raise ValidationFailed([FieldError("vin", p.message, p.code) for p in first.problems])
    country = market_of(session, first.vin)
    result = check_vin(first.vin, country) if country else first
    if result.problems:
        raise ValidationFailed([FieldError("vin", p.message, p.code) for p in result.problems])
    return result.vin


def provision(
    session: Session, vin: str, *, now: datetime, actor: str = "system"
) -> tuple[VehicleClient, str]:
    """Creates the VIN's client, or rotates its secret (the old one stops working at once). Returns the
    client and the new secret, which is never stored in clear; ``client.rotated_at`` is None for a new
    client."""
    vin = checked_vin(session, vin)
    secret = secrets.token_urlsafe(32)
    client = session.get(VehicleClient, client_id_for(vin))
    if client is None:
        client = VehicleClient(
            client_id=client_id_for(vin), vin=vin, secret_hash=token_hash(secret), created_at=now
        )
        try:
            with session.begin_nested():
                session.add(client)
        except IntegrityError:
            # A concurrent provisioning of the same VIN won: this one rotates its secret instead.
            client = session.get(VehicleClient, client_id_for(vin), populate_existing=True)
            if client is None:  # pragma: no cover - the winner's row is committed
                raise
            client.secret_hash, client.rotated_at = token_hash(secret), now
    else:
        client.secret_hash, client.rotated_at = token_hash(secret), now
    audit.record(
        session,
        "incar_client_rotated" if client.rotated_at else "incar_client_provisioned",
        now=now,
        account_id=None,
        actor=actor,
        vin=vin,
        client_id=client.client_id,
    )
    session.flush()
    return client, secret


def authenticate(session: Session, client_id: str, secret: str) -> VehicleClient | None:
    """The client whose id and secret these are, or None."""
    client = session.get(VehicleClient, client_id) if client_id.startswith(CLIENT_ID_PREFIX) else None
    if client is None or not secret:
        return None
    return client if hmac.compare_digest(client.secret_hash, token_hash(secret)) else None
