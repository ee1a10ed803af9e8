"""API shapes for dealers, models and orders. Field types only; business rules are in service.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vehicles.models import Powertrain, ProductionStatus

Text = Annotated[str, Field(min_length=1, max_length=200)]


class DealerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    country: Annotated[str, Field(min_length=2, max_length=2)]
    email: Annotated[str, Field(max_length=320)]
    phone: Annotated[str | None, Field(max_length=40)] = None
    language: Annotated[str, Field(min_length=2, max_length=8)]


class DealerOut(DealerIn):
    code: str


class VehicleModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    model_year: Annotated[int, Field(ge=1990, le=2100)]
    powertrain: Powertrain
    requires_security_pin: bool
    offers_data_pass: bool
    services: dict[str, list[Annotated[str, Field(min_length=1, max_length=64)]]] = Field(
        default_factory=dict, description="Connected services available, per ISO 3166 country code."
    )


class VehicleModelOut(VehicleModelIn):
    code: str


class BuyerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_name: str
    last_name: str
    email: str
    phone: str


class OrderIn(BaseModel):
    """One order, as the order system, the CSV import or the staff portal gives it.

    Buyer fields may come flat (as in the CSV) or as a nested ``buyer`` object."""

    model_config = ConfigDict(extra="forbid")

    dealer_code: str
    model_code: str
    vin: str | None = None
    buyer_first_name: str
    buyer_last_name: str
    buyer_email: str
    buyer_phone: str
    country: str
    language: str
    planned_delivery_date: date
    production_status: ProductionStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_buyer(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("buyer"), dict):
            data = dict(data)
            buyer = data.pop("buyer")
            for key, value in buyer.items():
                data.setdefault(f"buyer_{key}", value)
        return data


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    production_status: ProductionStatus


class VinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vin: str


class InvitationState(BaseModel):
    state: str
    created_at: datetime
    sent_at: datetime | None
    expires_at: datetime | None
    opened_at: datetime | None
    reminded_at: datetime | None


class OnboardingFunnel(BaseModel):
    stage: str = Field(
        description="not_due, due, invited, opened, id_created, phone_verified, pin_set or completed"
    )
    invite_after: date | None
    invited_at: datetime | None
    opened_at: datetime | None
    id_created_at: datetime | None
    phone_verified_at: datetime | None = None
    pin_set_at: datetime | None = None
    completed_at: datetime | None
    invitation: InvitationState | None


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
    warnings: list[str] = Field(default_factory=list, description="Non-blocking hints, e.g. about the VIN")
