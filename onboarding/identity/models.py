"""Tables for brand IDs and what secures them (sessions, one-time tokens, SMS codes, second factors,
the security PIN, the audit log), consents, invitations, API keys and support requests."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from onboarding.core.db import Base, UTCDateTime


class Account(Base):
    """A brand ID."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lower-cased: one address is one ID (and so one country) whatever its spelling.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date] = mapped_column(Date)
    country: Mapped[str] = mapped_column(String(2))
    language: Mapped[str] = mapped_column(String(8))
    phone: Mapped[str | None] = mapped_column(String(20))
    phone_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_via: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Consecutive wrong passwords; at the limit the ID is locked until ``locked_until``.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Two-step verification: None, "totp" or "sms" (the factor asked for first at login).
    two_factor: Mapped[str | None] = mapped_column(String(8))
    # The TOTP secret, sealed with the configured key; confirmed once a first code matched.
    totp_secret_sealed: Mapped[str | None] = mapped_column(Text)
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last accepted TOTP time step: a code is never accepted twice.
    totp_last_counter: Mapped[int | None] = mapped_column(Integer)
    # Blocked by support (``onboarding accounts block``): no sign-in, cards no longer valid.
    blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    blocked_reason: Mapped[str | None] = mapped_column(String(200))

    @property
    def has_verified_phone(self) -> bool:
        """A mobile number that SMS codes may go to (a factor, a reset check)."""
        return self.phone_verified_at is not None and bool(self.phone)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored.

    ``stage``: "full" (signed in), "second_factor" (password right, second factor outstanding) or
    "unverified" (password right, email not yet verified: only the resend page is open)."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class AccountToken(Base):
    """A one-time link sent by email: email verification, password reset, email change.

    Password-reset requests for unknown addresses are recorded too (``account_id`` NULL): both
    answers then do the same work and abuse can be seen."""

    __tablename__ = "account_tokens"
    __table_args__ = (Index("ix_account_tokens_account_id_purpose", "account_id", "purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # The address the link went to (for an email change: the new address).
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Password reset: when the second identity check passed, and how many checks failed.
    identity_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    identity_failures: Mapped[int] = mapped_column(Integer, default=0)


class SmsChallenge(Base):
    """SMS codes for one purpose (phone verification, login, password reset) to one number.

    One row lives across resends, so a new code does not reset the failure count; ``send_times``
    holds the sends of the last hour for the send limit."""

    __tablename__ = "sms_challenges"
    __table_args__ = (Index("ix_sms_challenges_account_id_purpose", "account_id", "purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20))
    phone: Mapped[str] = mapped_column(String(20))
    # HMAC of the code under the configured key: six digits are too few for a plain hash.
    code_hash: Mapped[str] = mapped_column(String(64))
    code_sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    code_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    send_times: Mapped[list[str]] = mapped_column(JSON)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BackupCode(Base):
    """A single-use second-factor code; only its hash is kept."""

    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SecurityPin(Base):
    """The vehicle security PIN of an ID (SPEC §3.3), peppered and hashed; locked after 3 wrong
    entries at the car until reset on the web."""

    __tablename__ = "security_pins"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    pin_hash: Mapped[str] = mapped_column(String(255))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Security-relevant events: lockouts, resets, second factors, PIN changes, staff corrections.
    Never holds a secret."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    actor: Mapped[str] = mapped_column(String(120))
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, object] | None] = mapped_column(JSON)
    # A staff member's action: who, and the dealer and market of what it was done to (the staff
    # portal's audit log shows each tenant its own).
    staff_id: Mapped[int | None] = mapped_column(Integer, index=True)
    dealer_code: Mapped[str | None] = mapped_column(String(32), index=True)
    country: Mapped[str | None] = mapped_column(String(2), index=True)


class Consent(Base):
    """One consent as a record: which text version, when granted or withdrawn, through what."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    text_version: Mapped[str] = mapped_column(String(40))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(40))
    # Whom the consent concerns, where the kind alone does not say: the partner (dealer code) data is
    # shared with, the network provider of the Data Pass.
    subject: Mapped[str | None] = mapped_column(String(64))


class BillingAddress(Base):
    """The ID's billing recipient and address, checked by the buyer during activation (SPEC §3.4)."""

    __tablename__ = "billing_addresses"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    # "private" or "company"
    kind: Mapped[str] = mapped_column(String(8))
    recipient_name: Mapped[str] = mapped_column(String(200))
    company_name: Mapped[str | None] = mapped_column(String(200))
    vat_id: Mapped[str | None] = mapped_column(String(32))
    street: Mapped[str] = mapped_column(String(200))
    street2: Mapped[str | None] = mapped_column(String(200))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    city: Mapped[str] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())
