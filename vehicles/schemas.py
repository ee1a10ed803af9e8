"""API shapes for dealers, models and orders. Field types only; business rules are in service.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

from onboarding.core.text_rules import SafeStr
from vehicles.models import Powertrain, ProductionStatus

# Every text field is a ``SafeStr``: no NUL, control, bidi-override or lone-surrogate characters.
Text = Annotated[SafeStr, Field(min_length=1, max_length=200)]


class DealerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    country: Annotated[SafeStr, Field(min_length=2, max_length=2)]
    email: Annotated[SafeStr, Field(max_length=320)]
    phone: Annotated[SafeStr | None, Field(max_length=40)] = None
    language: Annotated[SafeStr, Field(min_length=2, max_length=8)]


class DealerOut(DealerIn):
    code: str


class ServiceIn(BaseModel):
    """A connected service of the catalogue (``vehicles.catalogue``)."""

    model_config = ConfigDict(extra="forbid")

    code: Annotated[SafeStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
    name: dict[SafeStr, SafeStr] = Field(description="Per language (en, de, sv, nb); en required.")
    description: dict[SafeStr, SafeStr] = Field(description="Per language (en, de, sv, nb); en required.")
    works_without_login: bool = Field(False, description="Works in the car without a logged-in user.")
    remote_function: bool = Field(False, description="A remote function, authorised with the security PIN.")
    included_months: Annotated[int, Field(ge=1, le=120)]


class VehicleModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    model_year: Annotated[int, Field(ge=1990, le=2100)]
    powertrain: Powertrain
    requires_security_pin: bool
    offers_data_pass: bool
    # Items are checked by ``vehicles.catalogue.parse_services``, which names each bad field
    # (``services.SE[1].name.en``); the answer shows them as ``ServiceIn``.
    services: dict[SafeStr, list[Any]] = Field(
        default_factory=dict,
        description=(
            "Connected services available, per ISO 3166 country code: a code of the standard catalogue "
            "(navigation, voice_assistant, remote_climate, remote_lock, trip_log, charging, data_pass) or "
            "a whole service object."
        ),
    )


class VehicleModelOut(VehicleModelIn):
    code: str
    services: dict[str, list[ServiceIn]]


class BuyerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_name: SafeStr
    last_name: SafeStr
    email: SafeStr
    phone: SafeStr


class OrderIn(BaseModel):
    """One order, as the order system, the CSV import or the staff portal gives it.

    Buyer fields may come flat (as in the CSV) or as a nested ``buyer`` object."""

    model_config = ConfigDict(extra="forbid")

    dealer_code: SafeStr
    model_code: SafeStr
    vin: SafeStr | None = None
    buyer_first_name: SafeStr
    buyer_last_name: SafeStr
    buyer_email: SafeStr
    buyer_phone: SafeStr
    country: SafeStr
    language: SafeStr
    planned_delivery_date: date = Field(
        description=(
            "ISO 8601 date. A date in the past or more than three years ahead is accepted with a "
            "warning (`warnings` in the answer); one before 2000 or more than ten years ahead is refused."
        )
    )
    production_status: ProductionStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_buyer(cls, data: Any) -> Any:
        return flatten_buyer(data)


def flatten_buyer(data: Any) -> Any:
    """An order's nested ``buyer`` object as the flat ``buyer_*`` fields (flat ones win)."""
    if isinstance(data, dict) and isinstance(data.get("buyer"), dict):
        data = dict(data)
        buyer = data.pop("buyer")
        for key, value in buyer.items():
            data.setdefault(f"buyer_{key}", value)
    return data


# The order API's body: documented as ``OrderIn`` but handed over as sent, so that the service parses
# it and reports parsing errors together with the field rules (``vehicles.service.check_order``).
OrderBody = Annotated[OrderIn, SkipValidation]


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    production_status: ProductionStatus


class VinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vin: SafeStr


class InvitationState(BaseModel):
    state: str
    created_at: datetime
    sent_at: datetime | None
    expires_at: datetime | None
    opened_at: datetime | None
    reminded_at: datetime | None


class OnboardingFunnel(BaseModel):
    stage: str = Field(
        description=(
            "not_due, due, invited, opened, id_created, phone_verified, pin_set, terms_accepted, "
            "billing_checked, data_pass, services_active, vehicle_linked, charging or completed"
        )
    )
    invite_after: date | None
    invited_at: datetime | None
    opened_at: datetime | None
    id_created_at: datetime | None
    phone_verified_at: datetime | None = None
    pin_set_at: datetime | None = None
    terms_accepted_at: datetime | None = None
    billing_checked_at: datetime | None = None
    data_pass_at: datetime | None = None
    services_active_at: datetime | None = None
    vehicle_linked_at: datetime | None = None
    charging_at: datetime | None = Field(
        default=None, description="the charging service booked or declined (plug-in hybrids, electric cars)"
    )
    completed_at: datetime | None
    invitation: InvitationState | None
    invitation_failure: str | None = Field(
        default=None, description="why the latest invitation email was given up, if it was"
    )


class OrderOut(BaseModel):
    order_number: str
    dealer_code: str
    model_code: str
    vin: str | None
    buyer_first_name: str
    buyer_last_name: str
    buyer_email: str
    buyer_phone: str
    country: str
    language: str
    planned_delivery_date: date
    production_status: str
    created_at: datetime
    updated_at: datetime
    onboarding: OnboardingFunnel
    warnings: list[str] = Field(
        default_factory=list,
        description=(
            "Non-blocking notes on the order just written, each `field: message`: VIN hints, a planned "
            "delivery date in the past or more than three years ahead, a dealer in another country "
            "than the order"
        ),
    )
