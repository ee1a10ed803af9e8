"""Tables of the charging service: contracts, cards, and the charge-point operators (OCPI parties)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class ChargingContract(Base):
    """The charging service booked by a car's primary user, identified by its eMAID (ISO 15118)."""

    __tablename__ = "charging_contracts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    emaid: Mapped[str] = mapped_column(String(18), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(40))


class ChargingCard(Base):
    """An RFID charging card of a contract: requested → produced → shipped → delivered; blocked or
    replaced (a replacement is a new card of the same contract). ``last_updated`` is the OCPI token's."""

    __tablename__ = "charging_cards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(
        ForeignKey("charging_contracts.id", ondelete="CASCADE"), index=True
    )
    # 7-byte RFID UID as 14 upper-case hex characters (the OCPI token's uid).
    uid: Mapped[str] = mapped_column(String(14), unique=True)
    visual_number: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(12))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expected_by: Mapped[date] = mapped_column(Date)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    overdue_flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replaced_by_id: Mapped[int | None] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OcpiParty(Base):
    """A charge-point operator registered for OCPI (``onboarding ocpi parties add``): its credentials
    token (hashed) and its Tokens receiver endpoint for pushes."""

    __tablename__ = "ocpi_parties"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    country_code: Mapped[str] = mapped_column(String(2))
    party_id: Mapped[str] = mapped_column(String(3))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tokens_url: Mapped[str | None] = mapped_column(String(255))
    # The token the operator gave us for calling its endpoints (OCPI's credentials token), sealed with
    # the configured secret: pushes need it in clear.
    their_token_sealed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
