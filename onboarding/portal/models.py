"""Tables of the staff portal: staff members (separate from buyers' IDs), their sessions and backup
codes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class StaffRole(StrEnum):
    DEALER_AGENT = "dealer_agent"  # one dealer's orders and requests
    DEALER_ADMIN = "dealer_admin"  # the same, and invites and deactivates the dealer's agents
    MARKET_AGENT = "market_agent"  # one country's orders and requests
    PLATFORM_ADMIN = "platform_admin"  # everything; creates staff


DEALER_ROLES = frozenset({StaffRole.DEALER_AGENT, StaffRole.DEALER_ADMIN})


class StaffMember(Base):
    """A dealer's or market's staff member. Invited by email (``invite_token_hash``, single use), then
    a password and, at the first login, a mandatory authenticator (TOTP) with backup codes."""

    __tablename__ = "staff_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    # The tenant: a dealer (with its market's country) for dealer roles, a country for a market agent,
    # neither for a platform admin.
    dealer_code: Mapped[str | None] = mapped_column(ForeignKey("dealers.code"), index=True)
    country: Mapped[str | None] = mapped_column(String(2), index=True)
    language: Mapped[str] = mapped_column(String(8))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    totp_secret_sealed: Mapped[str | None] = mapped_column(Text)
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    totp_last_counter: Mapped[int | None] = mapped_column(Integer)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invite_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(120))
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StaffSession(Base):
    """A signed-in staff browser: the cookie holds a random token, this row its hash. ``stage`` is
    "second_factor" (password right; the authenticator code, or its enrolment, outstanding) or
    "full"."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_members.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    stage: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(64))


class StaffBackupCode(Base):
    """A single-use backup code of a staff member's second factor (a keyed hash)."""

    __tablename__ = "staff_backup_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_members.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SupportRequestHandling(Base):
    """The portal's side of a buyer's support request (``activation.models.SupportRequest``, whose
    ``status`` is open, in_progress or done): who has it, when it was last touched, when it was done."""

    __tablename__ = "support_request_handling"

    request_id: Mapped[int] = mapped_column(
        ForeignKey("support_requests.id", ondelete="CASCADE"), primary_key=True
    )
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("staff_members.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_members.id"))


class SupportRequestNote(Base):
    """A staff member's note on a support request (kept; never shown to the buyer)."""

    __tablename__ = "support_request_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("support_requests.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_members.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    text: Mapped[str] = mapped_column(Text)


class PortalImport(Base):
    """A CSV import started in the portal: a dry run (checked, nothing stored) or an import, run in
    the background with its progress recorded here for the page to show. ``report`` is the
    ``vehicles.csv_import.ImportReport`` as JSON once it is done."""

    __tablename__ = "portal_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_members.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    stored_path: Mapped[str | None] = mapped_column(String(1024))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(12))  # queued, checking, importing, done, failed
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, object] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
