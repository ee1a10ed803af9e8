"""Tables of the machine API: API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class ApiKey(Base):
    """A machine credential of one integration (order system). Only a hash of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    # None: every market; otherwise the countries whose orders this integration may touch.
    countries: Mapped[list[str] | None] = mapped_column(JSON)
    # What the key may call: "order_system" (orders, reference data, vehicle credentials) or
    # "card_supplier" (charging card states only).
    scope: Mapped[str] = mapped_column(String(20), default="order_system", server_default="order_system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
