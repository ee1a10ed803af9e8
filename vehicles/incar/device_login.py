"""Device login (RFC 8628), the data side: the car's device code and the user code it shows, their
state as the token endpoint polls, and completing the login once. Approval, denial and the PIN are
written by the web pages (they set ``approved_at``/``account_id``, ``denied_at``, ``pin_verified_at``);
this module only reads them."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, token_hash
from onboarding.core.settings import Settings
from vehicles.incar.models import DeviceAuthorization, VehicleClient
from vehicles.models import Vehicle, VehicleModel

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, no look-alikes
USER_CODE_ATTEMPTS = 8
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: the interval grows by 5 s at each slow_down

Status = Literal["pending", "slow_down", "expired", "denied", "approved", "completed"]


def _letters(count: int) -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(count))


def new_user_code() -> str:
    return f"{_letters(4)}-{_letters(4)}"


def normalise_user_code(raw: str) -> str:
    """What a person typed as the user code: upper-cased, spaces and dashes ignored, the dash put back."""
    letters = "".join(ch for ch in raw.upper() if ch not in " -\t")
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else letters


def pin_required_for(session: Session, vin: str) -> bool:
    """Whether the VIN's model asks for the security PIN (False when the car or model is unknown)."""
    required = session.scalar(
        select(VehicleModel.requires_security_pin)
        .join(Vehicle, Vehicle.model_code == VehicleModel.code)
        .where(Vehicle.vin == vin)
    )
    return bool(required)


def start(
    session: Session, settings: Settings, client: VehicleClient, scope: str, *, now: datetime
) -> tuple[DeviceAuthorization, str]:
    """A new device login for ``client``; returns it and the device code (only its hash is stored)."""
    pin_required = pin_required_for(session, client.vin)
    for attempt in range(USER_CODE_ATTEMPTS):
        device_code = new_token()
        authorization = DeviceAuthorization(
            device_code_hash=token_hash(device_code),
            user_code=new_user_code(),
            client_id=client.client_id,
            scope=scope,
            created_at=now,
            expires_at=now + timedelta(minutes=settings.device_code_valid_minutes),
            interval=settings.device_poll_interval_seconds,
            pin_required=pin_required,
        )
        try:
            with session.begin_nested():  # the user code of an open login is unique (partial index)
                session.add(authorization)
        except IntegrityError:
            if attempt == USER_CODE_ATTEMPTS - 1:
                raise
            continue
        return authorization, device_code
    raise AssertionError("unreachable")  # pragma: no cover


def by_device_code(session: Session, device_code: str) -> DeviceAuthorization | None:
    return session.scalar(
        select(DeviceAuthorization).where(DeviceAuthorization.device_code_hash == token_hash(device_code))
    )


def by_user_code(session: Session, user_code: str, *, now: datetime) -> DeviceAuthorization | None:
    """The open (neither completed, denied nor expired) login with this user code, or None."""
    code = normalise_user_code(user_code)
    if len(code) != 9:
        return None
    return session.scalar(
        select(DeviceAuthorization).where(
            DeviceAuthorization.user_code == code,
            DeviceAuthorization.completed_at.is_(None),
            DeviceAuthorization.denied_at.is_(None),
            DeviceAuthorization.expires_at > now,
        )
    )


def status(authorization: DeviceAuthorization, now: datetime) -> Status:
    """The login's state as the car's poll sees it. Records the poll; a poll sooner than the interval
    after the last one is ``slow_down`` and grows the interval by 5 s (kept for all later polls)."""
    if authorization.completed_at is not None:
        return "completed"
    if authorization.denied_at is not None:
        return "denied"
    if authorization.expires_at <= now:
        return "expired"
    last, authorization.last_polled_at = authorization.last_polled_at, now
    if authorization.approved_at is not None and (
        not authorization.pin_required or authorization.pin_verified_at is not None
    ):
        return "approved"
    if last is not None and now - last < timedelta(seconds=authorization.interval):
        authorization.interval += SLOW_DOWN_STEP
        return "slow_down"
    return "pending"


def complete(session: Session, authorization: DeviceAuthorization, *, now: datetime) -> bool:
    """Marks the login completed (its tokens are being issued); False when it already was (a second
    poll after completion, or a concurrent one that lost)."""
    done: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == authorization.id, DeviceAuthorization.completed_at.is_(None))
        .values(completed_at=now)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        return False
    authorization.completed_at = now
    return True
