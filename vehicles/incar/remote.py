"""Remote functions (lock and unlock, climate, …) authorised in the car with the security PIN (SPEC §3.7),
under the PIN's three-strike lock (``device_approval.check_car_pin``).

There is no table for authorisations yet: an authorisation is a random id, valid a few minutes, kept
in the audit log (``remote_function_authorised``) for the vehicle backend to look up. Nothing here
commits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.settings import Settings
from onboarding.identity import audit, pin
from vehicles import links
from vehicles.catalogue import services_for
from vehicles.incar.device_approval import check_car_pin
from vehicles.models import Vehicle, VehicleModel
from vehicles.subscriptions import active_services

VALID = timedelta(minutes=5)


class NotARemoteFunction(Exception):
    """The function is no remote function of this car, or not active for it."""


class NotAUser(Exception):
    """The grant's ID no longer uses the car."""


@dataclass(frozen=True)
class RemoteAuthorisation:
    id: str
    function: str
    expires_at: datetime


def remote_functions(session: Session, vehicle: Vehicle, *, today: datetime) -> set[str]:
    """The codes of the car's active services that its model's catalogue marks as remote functions."""
    model = session.get(VehicleModel, vehicle.model_code)
    offered = services_for(model.services if model is not None else None, vehicle.country)
    remote = {offer.code for offer in offered if offer.remote_function}
    active = {service.service_code for service in active_services(session, vehicle.id, today.date())}
    return remote & active


def authorise(
    session: Session,
    settings: Settings,
    vin: str,
    account_id: int,
    function: str,
    entered_pin: str,
    *,
    now: datetime,
    ip: str | None,
) -> tuple[pin.PinResult, RemoteAuthorisation | None]:
    """Checks the PIN for ``function`` of the car; on success returns the authorisation.
    ``NotARemoteFunction`` / ``NotAUser`` before any PIN is checked (no try is spent)."""
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == vin))
    if vehicle is None or links.link_of(session, vehicle.id, account_id) is None:
        raise NotAUser
    if function not in remote_functions(session, vehicle, today=now):
        audit.record(
            session,
            "remote_function_refused",
            now=now,
            account_id=account_id,
            actor="car",
            ip=ip,
            vin=vin,
            function=function[:40],
        )
        raise NotARemoteFunction
    result = check_car_pin(
        session,
        settings,
        vehicle,
        account_id,
        entered_pin,
        now=now,
        ip=ip,
        purpose="remote_function",
        function=function,
    )
    if result.outcome is not pin.PinCheck.OK:
        return result, None
    authorisation = RemoteAuthorisation(secrets.token_urlsafe(16), function, now + VALID)
    audit.record(
        session,
        "remote_function_authorised",
        now=now,
        account_id=account_id,
        actor="car",
        ip=ip,
        vin=vin,
        function=function,
        authorisation_id=authorisation.id,
        expires_at=authorisation.expires_at.isoformat(),
    )
    return result, authorisation
