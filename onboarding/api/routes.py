"""Machine APIs: reference data (dealers, models) and the order system's orders (SPEC §4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Response, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from onboarding.activation import invitations
from onboarding.api.dependencies import ApiCaller, api_caller
from onboarding.api.keys import CARD_SUPPLIER, ORDER_SYSTEM
from onboarding.core.clock import utcnow
from onboarding.core.errors import Forbidden, NotFound
from onboarding.core.settings import Settings
from onboarding.core.text_rules import SafeStr
from onboarding.web.app_state import settings_of
from onboarding.web.problems import problem_responses
from onboarding.web.transactions import db_session
from vehicles import service, vehicle_link
from vehicles.catalogue import public_services
from vehicles.charging import cards
from vehicles.incar import clients
from vehicles.models import Dealer, Order, VehicleModel
from vehicles.schemas import (
    DealerIn,
    DealerOut,
    OrderBody,
    OrderOut,
    StatusIn,
    VehicleModelIn,
    VehicleModelOut,
    VinIn,
)


async def _json_body(request: Request) -> None:
    """A body the APIs read is JSON; anything else is answered 415 rather than "invalid fields".
    ``async``: a plain function would take a worker thread for every API request before admission
    (with 500 clients queued, their hops crowded out the admitted requests' threads)."""
    if request.method not in ("PUT", "POST", "PATCH"):
        return
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return  # no body at all (the vehicle credential PUT takes none): nothing to refuse
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(415, "Unsupported media type")


# Documents the bearer API key in OpenAPI; ``api_caller`` checks it and answers the 401 problem.
bearer_api_key = HTTPBearer(auto_error=False, description="An API key (`onboarding api-keys create`)")

router = APIRouter(
    prefix="/api/v1",
    tags=["order system"],
    dependencies=[Depends(_json_body), Security(bearer_api_key)],
    responses=problem_responses(401, 404, 422, 503),
)
_WRITE = problem_responses(400, 403, 413, 415)

Code = Annotated[SafeStr, Path(min_length=1, max_length=64)]
# The order PUT's number: checked by ``validate_order`` (a stricter rule than ``Code``'s), so that a bad
# number is named together with the body's bad fields in one 422.
OrderNumber = Annotated[
    str,
    Path(json_schema_extra={"minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"}),
]
Db = Annotated[Session, Depends(db_session)]


def order_system_caller(caller: Annotated[ApiCaller, Depends(api_caller)]) -> ApiCaller:
    """The caller of an order-system endpoint: a card supplier's key may not call it."""
    if caller.key_scope != ORDER_SYSTEM:
        raise Forbidden("This API key may not call the order system's endpoints.")
    return caller


def card_supplier_caller(caller: Annotated[ApiCaller, Depends(api_caller)]) -> ApiCaller:
    """The caller of the card supplier's endpoint: only a key with the card supplier's scope."""
    if caller.key_scope != CARD_SUPPLIER:
        raise Forbidden("Only the card supplier's API key may report card states.")
    return caller


Caller = Annotated[ApiCaller, Depends(order_system_caller)]
SupplierCaller = Annotated[ApiCaller, Depends(card_supplier_caller)]
Config = Annotated[Settings, Depends(settings_of)]


def _all_markets(caller: ApiCaller) -> None:
    # Reference data is shared by every market, so only unscoped integrations may change it.
    if caller.scope.countries is not None:
        raise Forbidden("This API key is limited to some markets and may not change reference data.")


def _dealer_out(d: Dealer) -> DealerOut:
    return DealerOut(
        code=d.code, name=d.name, country=d.country, email=d.email, phone=d.phone, language=d.language
    )


def _model_out(m: VehicleModel) -> VehicleModelOut:
    return VehicleModelOut(
        code=m.code,
        name=m.name,
        model_year=m.model_year,
        powertrain=m.powertrain,
        requires_security_pin=m.requires_security_pin,
        offers_data_pass=m.offers_data_pass,
        services=public_services(m.services),
    )


@router.put(
    "/dealers/{dealer_code}", response_model=DealerOut, responses={201: {"model": DealerOut}, **_WRITE}
)
def put_dealer(
    dealer_code: Code, body: DealerIn, session: Db, caller: Caller, response: Response
) -> DealerOut:
    _all_markets(caller)
    dealer, created = service.upsert_dealer(session, dealer_code, body, utcnow())
    session.commit()
    response.status_code = 201 if created else 200
    return _dealer_out(dealer)


@router.put(
    "/models/{model_code}",
    response_model=VehicleModelOut,
    responses={201: {"model": VehicleModelOut}, **_WRITE},
)
def put_model(
    model_code: Code, body: VehicleModelIn, session: Db, caller: Caller, response: Response
) -> VehicleModelOut:
    _all_markets(caller)
    model, created = service.upsert_model(session, model_code, body, utcnow())
    session.commit()
    response.status_code = 201 if created else 200
    return _model_out(model)


def _order_out(session: Session, order: Order, hints: list[str] | None = None) -> OrderOut:
    return OrderOut(
        order_number=order.order_number,
        dealer_code=order.dealer_code,
        model_code=order.model_code,
        vin=order.vin,
        buyer_first_name=order.buyer_first_name,
        buyer_last_name=order.buyer_last_name,
        buyer_email=order.buyer_email,
        buyer_phone=order.buyer_phone,
        country=order.country,
        language=order.language,
        planned_delivery_date=order.planned_delivery_date,
        production_status=order.production_status,
        created_at=order.created_at,
        updated_at=order.updated_at,
        onboarding=invitations.funnel(session, order, now=utcnow()),
        warnings=hints or [],
    )


@router.put("/orders/{order_number}", response_model=OrderOut, responses={201: {"model": OrderOut}, **_WRITE})
def put_order(
    order_number: OrderNumber,
    body: Annotated[OrderBody, Body(title="OrderIn")],
    session: Db,
    caller: Caller,
    settings: Config,
    response: Response,
) -> OrderOut:
    """Create or update an order (idempotent). An invalid order stores nothing; the 422 names every
    bad field at once (a value that does not parse, such as a bad date, and the field rules alike).
    A valid order may come with `warnings`: VIN hints, a planned delivery date in the past or more
    than three years ahead (stored: the order system owns the date, and an update of a delivered order
    carries a past one; the invitation never names a date that has passed), a dealer in another country
    than the order."""
    now = utcnow()
    # ``body`` is the JSON as sent (``OrderBody``): parsed here, so that parsing errors and the field
    # rules are reported together.
    clean = service.check_order(session, order_number, body, today=now.date())
    order, created, changed = service.upsert_order(
        session,
        clean,
        now=now,
        actor=caller.name,
        lead_days=settings.invitation_lead_days,
        scope=caller.scope,
    )
    if "vin" in changed:
        # A buyer who finished the activation before the VIN was known gets the car linked now.
        vehicle_link.link_when_vin_known(session, order, settings=settings, now=now)
    session.commit()
    response.status_code = 201 if created else 200
    return _order_out(session, order, clean.hints)


@router.get("/orders/{order_number}", response_model=OrderOut)
def get_order(order_number: Code, session: Db, caller: Caller) -> OrderOut:
    return _order_out(session, service.get_order(session, order_number, caller.scope))


@router.put("/orders/{order_number}/status", response_model=OrderOut, responses=_WRITE)
def put_status(order_number: Code, body: StatusIn, session: Db, caller: Caller, settings: Config) -> OrderOut:
    order = service.get_order(session, order_number, caller.scope)
    service.set_status(
        session,
        order,
        body.production_status,
        now=utcnow(),
        actor=caller.name,
        lead_days=settings.invitation_lead_days,
    )
    session.commit()
    return _order_out(session, order)


@router.put("/orders/{order_number}/vin", response_model=OrderOut, responses=_WRITE)
def put_vin(order_number: Code, body: VinIn, session: Db, caller: Caller, settings: Config) -> OrderOut:
    order = service.get_order(session, order_number, caller.scope)
    now = utcnow()
    hints = service.set_vin(session, order, body.vin, now=now, actor=caller.name)
    # A buyer who finished the activation before the VIN was known gets the car linked now.
    vehicle_link.link_when_vin_known(session, order, settings=settings, now=now)
    session.commit()
    return _order_out(session, order, hints)


class VehicleCredentialOut(BaseModel):
    """A vehicle's OAuth client credential. The secret is shown only in this answer."""

    vin: str
    client_id: str = Field(description="The car's OAuth client id (`vehicle-` + VIN).")
    client_secret: str = Field(description="Shown once; only its hash is stored. A new PUT rotates it.")


@router.put(
    "/vehicles/{vin}/credential",
    response_model=VehicleCredentialOut,
    responses={201: {"model": VehicleCredentialOut}, **_WRITE},
)
def put_vehicle_credential(
    vin: Annotated[str, Path(min_length=1, max_length=64)], session: Db, caller: Caller, response: Response
) -> VehicleCredentialOut:
    """Provision the car's OAuth client credential at production (SPEC §3.7), or rotate it: the old
    secret stops working at once. 201 when the vehicle got its first credential, 200 on rotation. No
    body. A key limited to some markets may only provision VINs of its markets' orders (or cars)."""
    clean = clients.checked_vin(session, vin)
    if caller.scope.countries is not None:
        country = clients.market_of(session, clean)
        if country is None or not caller.scope.allows(country):
            raise Forbidden("This API key may only provision vehicles of orders in its markets.")
    client, secret = clients.provision(session, clean, now=utcnow(), actor=caller.name)
    created = client.rotated_at is None
    session.commit()
    response.status_code = 201 if created else 200
    return VehicleCredentialOut(vin=client.vin, client_id=client.client_id, client_secret=secret)


# --- the charging card supplier -------------------------------------------------------------------------


class CardStateIn(BaseModel):
    state: str = Field(
        min_length=1,
        max_length=20,
        description="produced, shipped or delivered (requested → produced → shipped → delivered)",
    )


class CardStateOut(BaseModel):
    id: int
    state: str
    expected_by: str
    last_updated: str


@router.put(
    "/charging-cards/{card_id}/state",
    response_model=CardStateOut,
    responses=_WRITE,
    tags=["card supplier"],
)
def put_card_state(
    card_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: CardStateIn,
    session: Db,
    caller: SupplierCaller,
) -> CardStateOut:
    """The card supplier reports a charging card's state; a state the card cannot move to is a 422
    naming "state", and repeating the current state changes nothing."""
    card = cards.supplier_update(session, card_id, body.state.strip().lower(), now=utcnow())
    if card is None:
        raise NotFound("No such charging card.")
    session.commit()
    return CardStateOut(
        id=card.id,
        state=card.state,
        expected_by=card.expected_by.isoformat(),
        last_updated=card.last_updated.isoformat(),
    )
