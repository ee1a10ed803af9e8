"""Tables of the in-car API: vehicle clients, device authorisations, grants and their tokens, pairing
codes. Every secret (client secret, device code, token, pairing code) is stored only as its SHA-256:
they are random with at least 128 bits, so a fast hash is enough and keeps the token endpoint fast."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class VehicleClient(Base):
    """A vehicle's OAuth client (confidential; ``client_secret_basic`` or ``client_secret_post``),
    provisioned at production. Rotating the secret replaces its hash: the old secret stops working."""

    __tablename__ = "vehicle_clients"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceAuthorization(Base):
    """One device login (RFC 8628): the car's device code and the user code shown on its screen, the
    user's approval on the web, and, for models that need it, the PIN the car then sent."""

    __tablename__ = "device_authorizations"
    __table_args__ = (
        # A user code names one pending login at a time (codes of ended logins may recur).
        Index(
            "uq_device_authorizations_user_code_open",
            "user_code",
            unique=True,
            sqlite_where=text("completed_at IS NULL AND denied_at IS NULL"),
            postgresql_where=text("completed_at IS NULL AND denied_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(9))
    client_id: Mapped[str] = mapped_column(ForeignKey("vehicle_clients.client_id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    interval: Mapped[int] = mapped_column(Integer, default=5)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    denied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pin_required: Mapped[bool] = mapped_column(Boolean, default=False)
    pin_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class InCarGrant(Base):
    """What a car holds for one user (or, with ``account_id`` NULL, for itself: the anonymous set):
    its refresh-token family. Revoking the grant ends every token of the family at once."""

    __tablename__ = "incar_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("vehicle_clients.client_id", ondelete="CASCADE"), index=True
    )
    vin: Mapped[str] = mapped_column(String(17), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(40))


class RefreshToken(Base):
    """One refresh token of a grant. Used once: its use records the successor. A retry with the same
    token within the grace period, while the successor is unused, gets the sealed copy of the same
    answer again (``answer_sealed``, wiped when the grace ends or the successor is used)."""

    __tablename__ = "incar_refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("incar_grants.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    successor_id: Mapped[int | None] = mapped_column(Integer)
    answer_sealed: Mapped[str | None] = mapped_column(Text)


class AccessToken(Base):
    """A short-lived opaque access token (hashed): the car's bearer token for the in-car API. Looked up
    on every call, so a revoked grant stops the car's next call."""

    __tablename__ = "incar_access_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("incar_grants.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class PairingCode(Base):
    """A code the head unit shows to link a car without an order (SPEC §3.5), entered on the web within
    ten minutes."""

    __tablename__ = "pairing_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("vehicle_clients.client_id", ondelete="CASCADE"))
    vin: Mapped[str] = mapped_column(String(17))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    outcome: Mapped[str | None] = mapped_column(String(20))
