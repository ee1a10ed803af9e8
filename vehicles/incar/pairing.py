"""Pairing a car without an order (SPEC §3.5): the head unit asks for a code (``new_code``), shows it,
and a signed-in user enters it on the web within ``pairing_code_valid_minutes`` (``redeem``).

A code is 8 characters from the user codes' alphabet (no vowels, no look-alikes), stored as its SHA-256
like every in-car secret. Its 34 bits are guessable only offline or by the millions: the web form is
rate limited per ID and per address, and a code lives ten minutes. A car's new code replaces its
earlier unused ones.

What redeeming does is decided here; the web page adds what lies above this layer (a support request
when the car already has a primary user, or has no order to tell its model). Nothing here commits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import token_hash
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import audit
from onboarding.identity.models import Account
from vehicles import links
from vehicles.incar import device_login
from vehicles.incar.models import PairingCode, VehicleClient
from vehicles.models import Order, Vehicle, VehicleRole

ALPHABET = device_login.USER_CODE_ALPHABET  # as the device login's user codes (SPEC §3.7)
LENGTH = 8

WRONG_CODE = N_(
    "This code is unknown or has expired. Ask the car for a new code and enter it within ten minutes."
)


class PairingOutcome(StrEnum):
    LINKED = "linked"  # the ID became the car's primary user
    ALREADY_PRIMARY = "already_primary"  # it was already
    PRIMARY_TAKEN = "primary_taken"  # another ID is the primary user: support checks the papers
    NO_ORDER = "no_order"  # no order names the VIN, so its model is unknown: support links it


@dataclass(frozen=True)
class Pairing:
    outcome: PairingOutcome
    vin: str
    vehicle: Vehicle | None
    order: Order | None


def new_code(
    session: Session, settings: Settings, client: VehicleClient, *, now: datetime
) -> tuple[str, int]:
    """A fresh code for the car; returns (code, seconds it is valid)."""
    session.execute(
        update(PairingCode)
        .where(PairingCode.client_id == client.client_id, PairingCode.used_at.is_(None))
        .values(used_at=now, outcome="replaced")
    )
    code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    valid = timedelta(minutes=settings.pairing_code_valid_minutes)
    session.add(
        PairingCode(
            code_hash=token_hash(code),
            client_id=client.client_id,
            vin=client.vin,
            created_at=now,
            expires_at=now + valid,
        )
    )
    session.flush()
    audit.record(session, "pairing_code_issued", now=now, account_id=None, actor=f"car:{client.vin}")
    return code, int(valid.total_seconds())


def normalise(entered: str) -> str:
    """The code as stored: capitals, without the spaces or dashes people type."""
    return "".join(ch for ch in entered.upper() if ch not in " -\t")


def _usable_code(session: Session, entered: str, now: datetime) -> PairingCode | None:
    code = normalise(entered)
    if len(code) != LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    row = session.scalar(
        select(PairingCode).where(PairingCode.code_hash == token_hash(code)).with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    return row


def newest_order(session: Session, vin: str) -> Order | None:
    return session.scalar(
        select(Order).where(Order.vin == vin).order_by(Order.created_at.desc(), Order.id.desc())
    )


def redeem(
    session: Session, entered: str, account: Account, *, now: datetime, ip: str | None = None
) -> Pairing:
    """The signed-in ID enters the car's code. The car with no live primary user gets this ID as its
    primary user (its vehicle made from the newest order with the VIN when there is none yet);
    otherwise the outcome says what the web page must hand to support. ``ValidationFailed`` (field
    ``code``) for an unknown, used or expired code."""
    row = _usable_code(session, entered, now)
    # The code is claimed before anything else: of two IDs entering it at once, one gets the car and the
    # other the same answer as for a used code (on PostgreSQL it waits for the first to commit).
    claimed = row is not None and _claim(session, row, account, now)
    if row is None or not claimed:
        audit.record(session, "pairing_code_refused", now=now, account_id=account.id, ip=ip)
        raise ValidationFailed([FieldError("code", WRONG_CODE, "invalid_code")])
    vin = row.vin
    order = newest_order(session, vin)
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == vin))
    if vehicle is None and order is not None:
        vehicle = links.vehicle_for_order(session, order, now=now)
    outcome: PairingOutcome
    if vehicle is None:
        outcome = PairingOutcome.NO_ORDER
    else:
        primary = links.primary_of(session, vehicle.id)
        if primary is not None:
            outcome = (
                PairingOutcome.ALREADY_PRIMARY
                if primary.account_id == account.id
                else PairingOutcome.PRIMARY_TAKEN
            )
        else:
            outcome = _link_primary(session, vehicle, account, now=now)
    row.used_at, row.account_id, row.outcome = now, account.id, str(outcome)
    session.flush()
    audit.record(
        session, "pairing_code_used", now=now, account_id=account.id, ip=ip, vin=vin, outcome=str(outcome)
    )
    return Pairing(outcome, vin, vehicle, order)


def _claim(session: Session, row: PairingCode, account: Account, now: datetime) -> bool:
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(PairingCode)
        .where(PairingCode.id == row.id, PairingCode.used_at.is_(None))
        .values(used_at=now, account_id=account.id)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _link_primary(session: Session, vehicle: Vehicle, account: Account, *, now: datetime) -> PairingOutcome:
    # A secondary user of the car who pairs it becomes its primary user: their secondary link ends first
    # (one live link per ID and car).
    existing = links.link_of(session, vehicle.id, account.id)
    if existing is not None:
        links.end_link(session, existing, reason=links.TRANSFERRED, now=now, actor="pairing")
    try:
        links.link_user(session, vehicle, account.id, VehicleRole.PRIMARY, now=now, actor="pairing")
    except links.PrimaryTaken:
        return PairingOutcome.PRIMARY_TAKEN
    return PairingOutcome.LINKED
