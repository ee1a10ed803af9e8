"""What the car calls besides the OAuth endpoints (SPEC §3.7): the PIN of a device login, the services it
may offer, who is logged in, remote-function authorisations, pairing codes.

Errors are RFC 9457 problem documents; a wrong PIN says how many tries are left, a locked PIN is 423.
Each endpoint is rate limited per car (or grant) and what changes anything is audited."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.identity import audit, pin
from onboarding.identity.dependencies import rate_limits
from onboarding.identity.models import Account
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.problems import Problem, problem
from onboarding.web.transactions import db_session
from vehicles import links
from vehicles.catalogue import ServiceOffer, services_for
from vehicles.incar import device_approval, device_login, pairing, remote
from vehicles.incar.dependencies import CarAccess, CarClient, Fields, too_many
from vehicles.models import Vehicle, VehicleModel
from vehicles.subscriptions import active_services

_DESCRIPTIONS = {
    400: "Malformed request, or a wrong PIN (with the tries left)",
    401: "Missing or invalid bearer token or client credentials",
    403: "Not allowed for this grant or car",
    404: "Unknown device code",
    409: "The login is not waiting for a PIN",
    423: "The PIN is locked after three wrong entries: the primary user resets it on the web",
    429: "Too many requests",
    503: "Busy: try again after Retry-After seconds",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


router = APIRouter(prefix="/incar/v1", tags=["in-car"], responses=_problems(401, 429, 503))
Db = Annotated[Session, Depends(db_session)]

PIN_LIMIT = "10/minute;60/hour"
READ_LIMIT = "120/minute"
PAIRING_LIMIT = "5/minute;30/hour"


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body read by ``request_fields`` (JSON or form) rather than a pydantic parameter."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "content": {
                kind: {"schema": schema} for kind in ("application/json", "application/x-www-form-urlencoded")
            },
            "required": True,
        }
    }


class PinEntry(BaseModel):
    device_code: str
    pin: str = Field(description="The 4-digit security PIN entered in the car")


class RemoteRequest(BaseModel):
    function: str = Field(description="Service code of a remote function of this car")
    pin: str


class ServiceOut(BaseModel):
    code: str
    name: str
    works_without_login: bool
    remote_function: bool
    ends_on: str | None = Field(default=None, description="Last day of the active period (user grants)")


class ServicesOut(BaseModel):
    vin: str
    logged_in: bool
    services: list[ServiceOut]


class MeOut(BaseModel):
    first_name: str
    last_name: str
    role: str = Field(description="primary or secondary")
    language: str


class RemoteAuthorisationOut(BaseModel):
    authorisation_id: str
    function: str
    expires_at: datetime
    expires_in: int


class PairingCodeOut(BaseModel):
    code: str = Field(description="8 characters; the user enters it at /vehicles/pair")
    expires_in: int


def _limited(request: Request, limit: str, scope: str, subject: str) -> JSONResponse | None:
    return None if rate_limits(request).hit(limit, scope, subject) else too_many()


def _pin_refusal(result: pin.PinResult) -> JSONResponse:
    if result.outcome is pin.PinCheck.LOCKED:
        return problem(
            423, "PIN locked", "Three wrong PINs: the car's primary user must reset the PIN on the web."
        )
    if result.outcome is pin.PinCheck.NOT_SET:
        return problem(403, "No PIN set", "The car's primary user has not set a security PIN.")
    response = problem(400, "Invalid PIN", f"Wrong PIN. {result.tries_left} tries left.")
    # The tries left as members of their own (RFC 9457 §3.2 extensions), for the car's screen.
    body: dict[str, Any] = json.loads(bytes(response.body))
    body.update(error="invalid_pin", attempts_left=result.tries_left)
    return JSONResponse(body, status_code=400, media_type="application/problem+json")


@router.post(
    "/device/pin",
    status_code=204,
    summary="Send the security PIN of an approved device login",
    openapi_extra=_body(PinEntry),
    responses=_problems(400, 403, 404, 409, 423),
)
def device_pin(request: Request, session: Db, client: CarClient, fields: Fields) -> Response:
    limited = _limited(request, PIN_LIMIT, "incar-pin", client.client_id)
    if limited is not None:
        return limited
    device_code, entered = fields.get("device_code", ""), fields.get("pin", "")
    if not device_code or not entered:
        return problem(400, "Invalid request", "Send device_code and pin.")
    now = utcnow()
    authorization = device_login.by_device_code(session, device_code)
    if authorization is not None and authorization.client_id != client.client_id:
        authorization = None  # another car's login: as unknown to this one
    if authorization is None:
        return problem(404, "Unknown device code")
    try:
        result = device_approval.verify_pin(
            session, settings_of(request), authorization, entered, now=now, ip=client_ip(request)
        )
    except device_approval.PinNotExpected:
        session.rollback()
        return problem(409, "No PIN expected", "The login is not approved, has ended, or needs no PIN.")
    session.commit()  # a wrong PIN counts, and is audited, whatever the answer
    if result.outcome is pin.PinCheck.OK:
        return Response(status_code=204)
    return _pin_refusal(result)


def _model_of(session: Session, vin: str) -> tuple[Vehicle | None, VehicleModel | None, str]:
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == vin))
    if vehicle is not None:
        return vehicle, session.get(VehicleModel, vehicle.model_code), vehicle.country
    order = pairing.newest_order(session, vin)
    if order is not None:
        return None, session.get(VehicleModel, order.model_code), order.country
    return None, None, ""


def _language(session: Session, access_account_id: int | None, request: Request) -> str:
    account = session.get(Account, access_account_id) if access_account_id is not None else None
    if account is not None:
        return account.language
    return (request.headers.get("accept-language") or "en")[:2].lower()


@router.get(
    "/services",
    response_model=ServicesOut,
    summary="The services the car may offer now",
    description="With a user's grant: the VIN's active services. With the car's own grant (no user "
    "logged in): the anonymous set, the model's services that work without login.",
)
def services(request: Request, session: Db, access: CarAccess) -> Any:
    limited = _limited(request, READ_LIMIT, "incar-read", str(access.grant_id))
    if limited is not None:
        return limited
    vehicle, model, country = _model_of(session, access.vin)
    offers = {offer.code: offer for offer in services_for(model.services if model else None, country)}
    language = _language(session, access.account_id, request)

    def shown(offer: ServiceOffer | None, code: str, ends_on: str | None) -> ServiceOut:
        return ServiceOut(
            code=code,
            name=offer.text("name", language) if offer is not None else code,
            works_without_login=offer.works_without_login if offer is not None else False,
            remote_function=offer.remote_function if offer is not None else False,
            ends_on=ends_on,
        )

    listed: list[ServiceOut]
    if access.account_id is None:
        listed = [shown(offer, code, None) for code, offer in offers.items() if offer.works_without_login]
    else:
        active = active_services(session, vehicle.id, utcnow().date()) if vehicle is not None else []
        listed = [shown(offers.get(s.service_code), s.service_code, s.ends_on.isoformat()) for s in active]
    _audit_read(request, session, access, "incar_services_read")
    return ServicesOut(vin=access.vin, logged_in=access.account_id is not None, services=listed)


def _audit_read(request: Request, session: Session, access: CarAccess, kind: str) -> None:
    # Which car read what about whom, and when: the person's data leaves the service to the car.
    audit.record(
        session,
        kind,
        now=utcnow(),
        account_id=access.account_id,
        actor=access.client_id,
        ip=client_ip(request),
        vin=access.vin,
        grant_id=access.grant_id,
    )
    session.commit()


@router.get(
    "/me",
    response_model=MeOut,
    summary="The user logged in to the car",
    responses=_problems(403),
)
def me(request: Request, session: Db, access: CarAccess) -> Any:
    limited = _limited(request, READ_LIMIT, "incar-read", str(access.grant_id))
    if limited is not None:
        return limited
    account = session.get(Account, access.account_id) if access.account_id is not None else None
    vehicle = session.scalar(select(Vehicle).where(Vehicle.vin == access.vin))
    link = (
        links.link_of(session, vehicle.id, account.id)
        if account is not None and vehicle is not None
        else None
    )
    if account is None or link is None:
        return problem(403, "No user", "No user is logged in to the car with this token.")
    _audit_read(request, session, access, "incar_user_read")
    return MeOut(
        first_name=account.first_name, last_name=account.last_name, role=link.role, language=account.language
    )


@router.post(
    "/remote-authorisations",
    status_code=201,
    response_model=RemoteAuthorisationOut,
    summary="Authorise a remote function with the security PIN",
    openapi_extra=_body(RemoteRequest),
    responses=_problems(400, 403, 423),
)
def remote_authorisation(request: Request, session: Db, access: CarAccess, fields: Fields) -> Any:
    limited = _limited(request, PIN_LIMIT, "incar-pin", access.client_id)
    if limited is not None:
        return limited
    function, entered = fields.get("function", "").strip(), fields.get("pin", "")
    if not function or not entered:
        return problem(400, "Invalid request", "Send function and pin.")
    if access.account_id is None:
        return problem(403, "No user", "Remote functions need a logged-in user.")
    now = utcnow()
    try:
        result, authorisation = remote.authorise(
            session,
            settings_of(request),
            access.vin,
            access.account_id,
            function,
            entered,
            now=now,
            ip=client_ip(request),
        )
    except remote.NotAUser:
        session.rollback()
        return problem(403, "No user", "The logged-in user no longer uses this car.")
    except remote.NotARemoteFunction:
        session.commit()  # the refusal's audit event
        return problem(403, "Not a remote function", "This is no active remote function of this car.")
    session.commit()
    if authorisation is None:
        return _pin_refusal(result)
    return JSONResponse(
        RemoteAuthorisationOut(
            authorisation_id=authorisation.id,
            function=authorisation.function,
            expires_at=authorisation.expires_at,
            expires_in=int((authorisation.expires_at - now).total_seconds()),
        ).model_dump(mode="json"),
        status_code=201,
    )


@router.post(
    "/pairing-codes",
    status_code=201,
    response_model=PairingCodeOut,
    summary="A pairing code to link the car to an ID without an order",
)
def pairing_code(request: Request, session: Db, client: CarClient) -> Any:
    limited = _limited(request, PAIRING_LIMIT, "incar-pairing", client.client_id)
    if limited is not None:
        return limited
    code, expires_in = pairing.new_code(session, settings_of(request), client, now=utcnow())
    session.commit()
    return JSONResponse({"code": code, "expires_in": expires_in}, status_code=201)
