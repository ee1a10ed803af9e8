"""Tables of the activation: invitations and support requests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    # The address the link went to: a changed order email makes this link invalid at once.
    email: Mapped[str] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token sealed with the configured secret, kept only so the day-7 reminder can carry the same
    # link; wiped once the reminder is queued or the invitation ends.
    token_sealed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    id_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The steps after the PIN (``activation.steps``): when the buyer finished each for this car. The
    # records they make (consents, billing address, services, links) live in their own tables; these
    # times make each step resumable and feed the funnel. ``data_pass_done_at`` is also set when the
    # buyer declines the offer; ``vehicle_done_at`` when the link is made or, without a VIN yet, when
    # the buyer has read that it follows.
    terms_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    billing_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data_pass_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    services_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    vehicle_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The charging service offer (plug-in hybrids and electric cars): booked or declined.
    charging_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(40))


class SupportRequest(Base):
    """A request for help (a buyer's, or the scheduler's for a late charging card), routed by the
    support directory and tracked until handled."""

    __tablename__ = "support_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    country: Mapped[str | None] = mapped_column(String(2), index=True)
    routed_to: Mapped[str] = mapped_column(String(320))
    routed_to_dealer: Mapped[bool] = mapped_column(Boolean, default=False)
    dealer_code: Mapped[str | None] = mapped_column(String(32), index=True)
    contact_email: Mapped[str | None] = mapped_column(String(320))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    invitation_id: Mapped[int | None] = mapped_column(ForeignKey("invitations.id"))
    # The late charging card a request of kind "charging_card_overdue" is about.
    charging_card_id: Mapped[int | None] = mapped_column(ForeignKey("charging_cards.id", ondelete="SET NULL"))
    message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
