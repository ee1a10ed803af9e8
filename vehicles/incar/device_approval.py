"""The user's side of a device login (SPEC §3.7, RFC 8628 §3.3): approving or denying the car's login on
the web, then, for models that need it, the security PIN entered in the car.

Only a live primary or secondary user of the car's VIN may approve; anyone else is refused and the
refusal audited.

Whose PIN: the security PIN is stored per ID (``identity.pin``) and only a car's primary user sets it
(SPEC §3.3), so it is the car's PIN. The PIN checked in a car is therefore always its primary user's
PIN, whoever logged in: a secondary user is told it by the primary user, and three wrong entries lock
it for everyone until the primary user resets it on the web. (A secondary user's own PIN, set for a
car of their own, belongs to that other car.)

Nothing here commits: the route does, refusals included (their audit events must stay)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import audit, pin
from onboarding.identity.models import Account
from vehicles import links
from vehicles.incar.models import DeviceAuthorization, VehicleClient
from vehicles.models import Vehicle, VehicleModel, VehicleUser

NOT_A_USER = N_("Only the primary user or a secondary user of this car can log in to it.")
EXPIRED = N_("This code has expired. Start the login in the car again.")
DENIED = N_("This login was cancelled. Start the login in the car again.")
COMPLETED = N_("This login is already complete.")
TAKEN = N_("Another ID has already confirmed this login.")


class ApprovalRefused(Exception):
    """The login cannot be approved or denied by this ID now; ``text`` says why (translatable)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class CarView:
    """What the approval page shows of the car: its model and the last four characters of the VIN."""

    vehicle: Vehicle | None
    vin: str
    model_name: str

    @property
    def vin_end(self) -> str:
        return self.vin[-4:]


def car_of(session: Session, authorization: DeviceAuthorization) -> CarView:
    client = session.get(VehicleClient, authorization.client_id)
    vin = client.vin if client is not None else ""
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == vin)) if vin else None
    model = session.get(VehicleModel, vehicle.model_code) if vehicle is not None else None
    return CarView(vehicle, vin, model.name if model is not None else "")


def _refuse_unless_open(authorization: DeviceAuthorization, now: datetime) -> None:
    if authorization.completed_at is not None:
        raise ApprovalRefused("completed", COMPLETED)
    if authorization.denied_at is not None:
        raise ApprovalRefused("denied", DENIED)
    if authorization.expires_at <= now:
        raise ApprovalRefused("expired", EXPIRED)


def user_link(session: Session, authorization: DeviceAuthorization, account_id: int) -> VehicleUser | None:
    """The ID's live link to the login's car, if any."""
    car = car_of(session, authorization)
    return links.link_of(session, car.vehicle.id, account_id) if car.vehicle is not None else None


def _require_user(
    session: Session,
    authorization: DeviceAuthorization,
    account: Account,
    *,
    now: datetime,
    ip: str | None,
    action: str,
) -> VehicleUser:
    link = user_link(session, authorization, account.id)
    if link is None:
        audit.record(
            session,
            "device_login_refused",
            now=now,
            account_id=account.id,
            ip=ip,
            client_id=authorization.client_id,
            authorization_id=authorization.id,
            action=action,
        )
        raise ApprovalRefused("not_a_user", NOT_A_USER)
    return link


def approve(
    session: Session,
    authorization: DeviceAuthorization,
    account: Account,
    *,
    now: datetime,
    ip: str | None = None,
) -> VehicleUser:
    """The signed-in ID confirms the car's login: it becomes the login's user. Returns the ID's link
    to the car. ``ApprovalRefused`` for an ID that does not use the car (audited), a login that has
    ended, or one another ID confirmed already; confirming twice is harmless."""
    _refuse_unless_open(authorization, now)
    link = _require_user(session, authorization, account, now=now, ip=ip, action="approve")
    if authorization.approved_at is not None:
        if authorization.account_id != account.id:
            raise ApprovalRefused("taken", TAKEN)
        return link
    authorization.account_id = account.id
    authorization.approved_at = now
    session.flush()
    audit.record(
        session,
        "device_login_approved",
        now=now,
        account_id=account.id,
        ip=ip,
        client_id=authorization.client_id,
        authorization_id=authorization.id,
        role=link.role,
        pin_required=authorization.pin_required,
    )
    return link


def deny(
    session: Session,
    authorization: DeviceAuthorization,
    account: Account,
    *,
    now: datetime,
    ip: str | None = None,
) -> None:
    """The signed-in ID turns the car's login down (the car's next poll gets ``access_denied``). Only a
    user of the car may: anyone else is refused like an approval."""
    _refuse_unless_open(authorization, now)
    _require_user(session, authorization, account, now=now, ip=ip, action="deny")
    if authorization.approved_at is not None and authorization.account_id != account.id:
        raise ApprovalRefused("taken", TAKEN)
    authorization.denied_at = now
    session.flush()
    audit.record(
        session,
        "device_login_denied",
        now=now,
        account_id=account.id,
        ip=ip,
        client_id=authorization.client_id,
        authorization_id=authorization.id,
    )


# --- the PIN in the car ---------------------------------------------------------------------------------


def pin_owner(session: Session, vehicle: Vehicle | None) -> Account | None:
    """Whose PIN the car asks for: its live primary user's (see the module's note)."""
    primary = links.primary_of(session, vehicle.id) if vehicle is not None else None
    return session.get(Account, primary.account_id) if primary is not None else None


def check_car_pin(
    session: Session,
    settings: Settings,
    vehicle: Vehicle | None,
    user_account_id: int,
    entered: str,
    *,
    now: datetime,
    ip: str | None,
    purpose: str,
    **details: object,
) -> pin.PinResult:
    """The car's PIN check (device login or a remote function): the primary user's PIN, with its
    three-strike lock (``identity.pin.check_pin``). Audited on the ID using the car; the lock and the
    failures are also audited on the PIN's owner by ``check_pin``."""
    owner = pin_owner(session, vehicle)
    if owner is None:
        result = pin.PinResult(pin.PinCheck.NOT_SET)
    else:
        vin = vehicle.vin if vehicle is not None else None
        result = pin.check_pin(session, settings, owner, entered, now=now, actor=f"car:{vin}")
    audit.record(
        session,
        "incar_pin_checked",
        now=now,
        account_id=user_account_id,
        actor="car",
        ip=ip,
        purpose=purpose,
        outcome=str(result.outcome),
        tries_left=result.tries_left,
        pin_owner=owner.id if owner is not None else None,
        **details,
    )
    return result


class PinNotExpected(Exception):
    """The login is not waiting for a PIN (not approved yet, ended, or its model needs none)."""


def verify_pin(
    session: Session,
    settings: Settings,
    authorization: DeviceAuthorization,
    entered: str,
    *,
    now: datetime,
    ip: str | None,
) -> pin.PinResult:
    """The PIN the car sent for an approved login. On ``OK`` the login is marked verified (the token
    endpoint then completes it). ``PinNotExpected`` when the login is not waiting for one."""
    if (
        authorization.approved_at is None
        or authorization.account_id is None
        or authorization.completed_at is not None
        or authorization.denied_at is not None
        or authorization.expires_at <= now
        or not authorization.pin_required
    ):
        raise PinNotExpected
    if authorization.pin_verified_at is not None:
        return pin.PinResult(pin.PinCheck.OK, settings.pin_max_failures)
    car = car_of(session, authorization)
    # The approver must still use the car: a link ended since the approval ends the login too.
    if user_link(session, authorization, authorization.account_id) is None:
        raise PinNotExpected
    result = check_car_pin(
        session,
        settings,
        car.vehicle,
        authorization.account_id,
        entered,
        now=now,
        ip=ip,
        purpose="device_login",
        authorization_id=authorization.id,
    )
    if result.outcome is pin.PinCheck.OK:
        authorization.pin_verified_at = now
        session.flush()
    return result
