"""Tables for dealers, the model catalogue, orders, and the vehicles with their users and services."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class Powertrain(StrEnum):
    ICE = "ICE"
    PHEV = "PHEV"
    BEV = "BEV"


class ProductionStatus(StrEnum):
    ORDERED = "ordered"
    IN_PRODUCTION = "in_production"
    PRODUCED = "produced"
    IN_TRANSIT = "in_transit"
    AT_DEALER = "at_dealer"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


# Orders in these states are never invited (SPEC §3.1).
CLOSED_STATUSES = frozenset({ProductionStatus.DELIVERED, ProductionStatus.CANCELLED})


class Dealer(Base):
    __tablename__ = "dealers"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2), index=True)
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VehicleModel(Base):
    __tablename__ = "vehicle_models"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model_year: Mapped[int] = mapped_column(Integer)
    powertrain: Mapped[str] = mapped_column(String(8))
    requires_security_pin: Mapped[bool] = mapped_column(Boolean)
    offers_data_pass: Mapped[bool] = mapped_column(Boolean)
    # {"SE": ["navigation", "remote_climate"], ...}: connected services available per country.
    services: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_dealer_code_created_at", "dealer_code", "created_at"),
        # The staff portal's list: a dealer's or a market's orders by stage, newest first (keyset by id).
        Index("ix_orders_dealer_stage_id", "dealer_code", "onboarding_stage", "id"),
        Index("ix_orders_country_stage_id", "country", "onboarding_stage", "id"),
        # The portal's search by name (``lower(...) = ...``); PostgreSQL only: SQLite cannot reflect
        # expression indexes (SQLAlchemy warns), and there a table scan is what a SQLite site can afford.
        Index("ix_orders_lower_last_name", func.lower(text("buyer_last_name"))).ddl_if(dialect="postgresql"),
        Index("ix_orders_lower_first_name", func.lower(text("buyer_first_name"))).ddl_if(
            dialect="postgresql"
        ),
        # One VIN belongs to one live order (SPEC §3.1): held by the database, so two requests that
        # both checked before either stored cannot both store it. Cancelled orders free their VIN.
        Index(
            "uq_orders_vin_live",
            "vin",
            unique=True,
            sqlite_where=text("production_status != 'cancelled'"),
            postgresql_where=text("production_status != 'cancelled'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_number: Mapped[str] = mapped_column(String(64), unique=True)
    dealer_code: Mapped[str] = mapped_column(ForeignKey("dealers.code"))
    model_code: Mapped[str] = mapped_column(ForeignKey("vehicle_models.code"))
    vin: Mapped[str | None] = mapped_column(String(17), index=True)
    buyer_first_name: Mapped[str] = mapped_column(String(100))
    buyer_last_name: Mapped[str] = mapped_column(String(100))
    buyer_email: Mapped[str] = mapped_column(String(320), index=True)
    buyer_phone: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2), index=True)
    language: Mapped[str] = mapped_column(String(8))
    planned_delivery_date: Mapped[date] = mapped_column(Date)
    production_status: Mapped[str] = mapped_column(String(16), default=ProductionStatus.ORDERED)
    # The day from which an invitation is due; NULL when none is due (already invited, closed,
    # onboarded). Indexed so the scheduler's cost follows the due orders, not the table size.
    invite_after: Mapped[date | None] = mapped_column(Date, index=True)
    invited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    onboarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    # The onboarding funnel's stage (``activation.invitations.FUNNEL_STAGES``; "due" is stored as
    # "not_due" and told apart by ``invite_after``), kept by ``invitations.record_stage`` whenever the
    # funnel moves: the staff portal filters and counts by it.
    onboarding_stage: Mapped[str] = mapped_column(String(20), server_default="not_due")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrderEvent(Base):
    """The order's timeline: what happened to it and when, for support and the staff portal."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(120))
    detail: Mapped[str | None] = mapped_column(Text)


class VehicleRole(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


class Vehicle(Base):
    """A car as the connected services know it: made when its buyer activates (from the order), its VIN
    known then or later (``PUT /api/v1/orders/{n}/vin``)."""

    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vin: Mapped[str | None] = mapped_column(String(17), unique=True)
    model_code: Mapped[str] = mapped_column(ForeignKey("vehicle_models.code"))
    country: Mapped[str] = mapped_column(String(2))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VehicleUser(Base):
    """An ID's link to a vehicle, as its primary user or one of its secondary users (SPEC §3.5). Ended
    links stay, for the audit trail; the live ones are those with ``ended_at`` NULL."""

    __tablename__ = "vehicle_users"
    __table_args__ = (
        # One primary user per vehicle, held by the database (two activations racing, a transfer).
        Index(
            "uq_vehicle_users_one_primary",
            "vehicle_id",
            unique=True,
            sqlite_where=text("role = 'primary' AND ended_at IS NULL"),
            postgresql_where=text("role = 'primary' AND ended_at IS NULL"),
        ),
        # An ID is linked to a vehicle at most once at a time.
        Index(
            "uq_vehicle_users_live",
            "vehicle_id",
            "account_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(10))
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(40))


class VehicleService(Base):
    """A connected service activated for a vehicle, with the period it is included for."""

    __tablename__ = "vehicle_services"
    __table_args__ = (Index("uq_vehicle_services", "vehicle_id", "service_code", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    service_code: Mapped[str] = mapped_column(String(64))
    activated_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)


class SecondaryInvitation(Base):
    """The primary user's invitation of a secondary user (SPEC §3.5): accepted through the emailed link
    with an SMS code to the invitee's number, valid 12 hours."""

    __tablename__ = "secondary_invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), index=True)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
