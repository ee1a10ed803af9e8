"""Staff members (SPEC §3.8): created by a platform admin (or ``onboarding staff create``), or by a
dealer admin for their own dealer's agents; invited by email; a password, then a mandatory
authenticator (TOTP, RFC 6238) with ten backup codes at the first login. The same lockout as IDs
(``lockout_failures`` wrong passwords or codes lock for ``lockout_minutes``). Every change is
audited with the staff member who made it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.support import contact_for
from onboarding.core.branding import brand
from onboarding.core.crypto import new_token, seal_text, token_hash, unseal_text
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_country, clean_email, clean_language, clean_name
from onboarding.core.i18n import N_, gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity import audit, two_factor
from onboarding.identity.accounts import check_new_password, check_password_hash, hash_password
from onboarding.portal import staff_sessions
from onboarding.portal.models import DEALER_ROLES, StaffBackupCode, StaffMember, StaffRole
from onboarding.portal.scope import tenant_of
from vehicles.models import Dealer
from vehicles.service import insert_once

INVITE_HOURS = 72
ROLE_LABELS = {
    StaffRole.DEALER_AGENT.value: N_("Dealer agent"),
    StaffRole.DEALER_ADMIN.value: N_("Dealer admin"),
    StaffRole.MARKET_AGENT.value: N_("Market agent"),
    StaffRole.PLATFORM_ADMIN.value: N_("Platform admin"),
}
TOTP_SEAL_PURPOSE = "staff-totp-secret"


def actor_of(staff: StaffMember | None) -> str:
    """How the audit log names a staff member (or the command line)."""
    return "cli" if staff is None else f"staff:{staff.id} {staff.email}"[:120]


def record(
    session: Session,
    kind: str,
    staff: StaffMember | None,
    *,
    now: datetime,
    ip: str | None = None,
    about: object | None = None,
    **details: object,
) -> None:
    """An audit entry naming the staff member (or the command line), with the dealer and country of
    what it was done to (``about``, a row of a table in ``scope.TENANT_COLUMNS``; by default the staff
    member's own): the portal's audit log shows each tenant its entries."""
    target = about if about is not None else staff
    dealer, country = tenant_of(target) if target is not None else (None, None)
    context = audit.StaffContext(staff.id if staff else None, dealer, country)
    audit.record(
        session, kind, now=now, account_id=None, actor=actor_of(staff), ip=ip, staff=context, **details
    )


def find_staff(session: Session, email: str) -> StaffMember | None:
    return session.scalar(select(StaffMember).where(StaffMember.email == email.strip().lower()))


# -- creating and inviting -------------------------------------------------------------------------


def may_create(creator: StaffMember | None, role: str, dealer_code: str | None) -> bool:
    """The command line and platform admins create anyone; a dealer admin only their dealer's agents."""
    if creator is None or creator.role == StaffRole.PLATFORM_ADMIN:
        return True
    return (
        creator.role == StaffRole.DEALER_ADMIN
        and role == StaffRole.DEALER_AGENT
        and dealer_code == creator.dealer_code
    )


def create_staff(
    session: Session,
    *,
    email: str,
    name: str,
    role: str,
    dealer_code: str | None,
    country: str | None,
    language: str,
    creator: StaffMember | None,
    now: datetime,
) -> tuple[StaffMember, str]:
    """A new staff member and their invitation token (to send by ``send_invitation``; only its hash is
    stored). ``ValidationFailed`` names every bad field and nothing is stored; ``PermissionError``
    when ``creator`` may not create this role or tenant."""
    errors: list[FieldError] = []
    email = clean_email(email, "email", errors).lower()  # one address is one staff member
    name = clean_name(name, "name", errors)
    language = clean_language(language, "language", errors) or "en"
    if role not in set(StaffRole):
        errors.append(FieldError("role", N_("Choose one of the roles.")))
    elif role in DEALER_ROLES:
        dealer = session.get(Dealer, dealer_code) if dealer_code else None
        if dealer is None:
            errors.append(FieldError("dealer", N_("No dealer has this code.")))
        # The dealer's market: their own audit entries (sign-ins, failures) belong to it too.
        country = dealer.country if dealer else None
    elif role == StaffRole.MARKET_AGENT:
        country = clean_country(country or "", "country", errors)
        dealer_code = None
    else:
        dealer_code = country = None
    if not errors and find_staff(session, email) is not None:
        errors.append(FieldError("email", N_("A staff member has this email address already.")))
    if errors:
        raise ValidationFailed(errors)
    if not may_create(creator, role, dealer_code):
        raise PermissionError(role)
    token = new_token()
    staff = StaffMember(
        email=email,
        name=name,
        role=role,
        dealer_code=dealer_code,
        country=country,
        language=language,
        failed_logins=0,
        invite_token_hash=token_hash(token),
        invite_expires_at=now + timedelta(hours=INVITE_HOURS),
        created_at=now,
        created_by=actor_of(creator),
    )
    if insert_once(session, staff) is not None:  # the same address, created at the same moment
        raise ValidationFailed([FieldError("email", N_("A staff member has this email address already."))])
    record(
        session,
        "staff_created",
        creator,
        now=now,
        about=staff,
        staff_id=staff.id,
        role=role,
        dealer=dealer_code,
        country=country,
    )
    return staff, token


def invitation_link(settings: Settings, token: str) -> str:
    return settings.public_url(f"/portal/invite/{token}")


def send_invitation(
    session: Session, settings: Settings, staff: StaffMember, token: str, *, now: datetime
) -> None:
    """The invitation email, in the staff member's language, through the outbox."""
    with use_language(staff.language):
        context = {
            "brand": brand(settings),
            "support": contact_for(settings, staff.country, None),
            "first_name": staff.name,
            "subject_line": gettext_("Your %(brand)s staff portal account", brand=settings.brand_name),
            "paragraphs": [
                gettext_(
                    "You have been given an account on the %(brand)s staff portal. Choose your password "
                    "with the link below within %(hours)s hours; at your first login you set up an "
                    "authenticator app.",
                    brand=settings.brand_name,
                    hours=INVITE_HOURS,
                ),
            ],
            "link": invitation_link(settings, token),
            "link_label": gettext_("Choose your password"),
            "ignorable": True,
        }
    rendered = render_email("account_message", staff.language, context)
    message = outbox_email(
        settings,
        rendered,
        to=staff.email,
        language=staff.language,
        purpose="staff_invitation",
        reference_id=staff.id,
    )
    outbox.enqueue(session, message, secret=settings.secret_key_value(), now=now)


def staff_for_invitation(session: Session, token: str, *, now: datetime) -> StaffMember | None:
    """The staff member whose live invitation this token is, or None."""
    if not token or len(token) > 100:
        return None
    staff = session.scalar(select(StaffMember).where(StaffMember.invite_token_hash == token_hash(token)))
    if staff is None or staff.deactivated_at is not None:
        return None
    if staff.invite_expires_at is None or staff.invite_expires_at <= now:
        return None
    return staff


def accept_invitation(
    session: Session, staff: StaffMember, *, password: str, confirmation: str, now: datetime, ip: str | None
) -> None:
    """The staff member's password (the same rules as an ID's); the link is used up."""
    errors: list[FieldError] = []
    check_new_password(password, confirmation, [staff.email, *staff.name.split()], errors)
    if errors:
        raise ValidationFailed(errors)
    staff.password_hash = hash_password(password)
    staff.password_changed_at = now
    staff.invite_token_hash = None
    staff.invite_expires_at = None
    record(session, "staff_password_set", staff, now=now, ip=ip)


def may_manage(viewer: StaffMember, target: StaffMember) -> bool:
    """A platform admin manages anyone but themself; a dealer admin their own dealer's agents."""
    if viewer.id == target.id:
        return False
    if viewer.role == StaffRole.PLATFORM_ADMIN:
        return True
    return (
        viewer.role == StaffRole.DEALER_ADMIN
        and target.role == StaffRole.DEALER_AGENT
        and target.dealer_code == viewer.dealer_code
    )


def deactivate(session: Session, staff: StaffMember, *, by: StaffMember | None, now: datetime) -> None:
    """The staff member can no longer sign in; their sessions end (``staff_sessions.end_all``)."""
    if staff.deactivated_at is None:
        staff.deactivated_at = now
        staff.invite_token_hash = None
        staff_sessions.end_all(session, staff.id, now=now, reason="deactivated")
        record(session, "staff_deactivated", by, now=now, about=staff, staff_id=staff.id)


def reinvite(session: Session, staff: StaffMember, *, by: StaffMember | None, now: datetime) -> str:
    """A fresh start for a staff member who forgot their password, lost their authenticator and its
    backup codes, let the invitation lapse, or was deactivated: password, authenticator, backup codes,
    lock and sessions are cleared at once (the old password stops working now, in case it leaked), the
    account is active again, and a new invitation token is returned (to send by ``send_invitation``;
    an older link stops working). The first login enrols an authenticator again."""
    token = new_token()
    staff.password_hash = None
    staff.password_changed_at = None
    staff.totp_secret_sealed = None
    staff.totp_confirmed_at = None
    staff.totp_last_counter = None
    staff.failed_logins = 0
    staff.locked_until = None
    staff.deactivated_at = None
    staff.invite_token_hash = token_hash(token)
    staff.invite_expires_at = now + timedelta(hours=INVITE_HOURS)
    session.execute(delete(StaffBackupCode).where(StaffBackupCode.staff_id == staff.id))
    staff_sessions.end_all(session, staff.id, now=now, reason="reinvited")
    record(session, "staff_reinvited", by, now=now, about=staff, staff_id=staff.id)
    return token


# -- signing in ------------------------------------------------------------------------------------


class LoginOutcome(StrEnum):
    SECOND_FACTOR = "second_factor"  # password right; the authenticator (or its enrolment) next
    FAILED = "failed"
    LOCKED = "locked"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    staff: StaffMember | None = None


def is_locked(staff: StaffMember, now: datetime) -> bool:
    return staff.locked_until is not None and staff.locked_until > now


def record_failure(
    session: Session, settings: Settings, staff: StaffMember, *, now: datetime, ip: str | None, factor: str
) -> bool:
    """One more consecutive failure, counted in SQL (failures that race all count); True when it locks."""
    staff.failed_logins = StaffMember.failed_logins + 1
    session.flush()
    if staff.failed_logins >= settings.lockout_failures:
        staff.locked_until = now + timedelta(minutes=settings.lockout_minutes)
        staff.failed_logins = 0
        record(session, "staff_locked", staff, now=now, ip=ip, factor=factor)
        return True
    record(session, "staff_login_failed", staff, now=now, ip=ip, factor=factor)
    return False


def check_password(
    session: Session, settings: Settings, email: str, password: str, *, now: datetime, ip: str | None
) -> LoginResult:
    """The password step. An unknown, deactivated or not yet invited-in address costs the same hashing
    and answers like a wrong password."""
    staff = find_staff(session, email) if email.strip() else None
    usable = staff is not None and staff.deactivated_at is None and staff.password_hash is not None
    if staff is not None and usable and is_locked(staff, now):
        check_password_hash(None, password)
        return LoginResult(LoginOutcome.LOCKED, staff)
    ok, rehashed = check_password_hash(
        staff.password_hash if staff is not None and usable else None, password
    )
    if staff is None or not usable:
        return LoginResult(LoginOutcome.FAILED)
    if not ok:
        locked = record_failure(session, settings, staff, now=now, ip=ip, factor="password")
        return LoginResult(LoginOutcome.LOCKED if locked else LoginOutcome.FAILED, staff)
    if rehashed is not None:
        staff.password_hash = rehashed
    return LoginResult(LoginOutcome.SECOND_FACTOR, staff)


def passed(staff: StaffMember) -> None:
    """A whole login succeeded: the failure count starts again."""
    staff.failed_logins = 0
    staff.locked_until = None


# -- the authenticator and backup codes --------------------------------------------------------------


def enrolled(staff: StaffMember) -> bool:
    return staff.totp_confirmed_at is not None


def enrolment_secret(settings: Settings, staff: StaffMember) -> str:
    """The secret being enrolled (a new one when none is pending)."""
    if staff.totp_secret_sealed and staff.totp_confirmed_at is None:
        return unseal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, staff.totp_secret_sealed)
    secret = pyotp.random_base32()
    staff.totp_secret_sealed = seal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, secret)
    staff.totp_confirmed_at = None
    return secret


def provisioning_uri(settings: Settings, staff: StaffMember, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=staff.email, issuer_name=f"{settings.brand_name} staff")


def check_totp(settings: Settings, staff: StaffMember, code: str, *, now: datetime) -> bool:
    """True once per time step for a matching code (``two_factor.matching_step``); records the step,
    so a code seen over a shoulder cannot be used again."""
    if not staff.totp_secret_sealed:
        return False
    totp = pyotp.TOTP(unseal_text(settings.secret_key_value(), TOTP_SEAL_PURPOSE, staff.totp_secret_sealed))
    step = two_factor.matching_step(totp, code, staff.totp_last_counter, now=now)
    if step is None:
        return False
    staff.totp_last_counter = step
    return True


def confirm_enrolment(
    session: Session, settings: Settings, staff: StaffMember, code: str, *, now: datetime, ip: str | None
) -> list[str] | None:
    """The first matching code turns the authenticator on; returns ten backup codes (shown once)."""
    if enrolled(staff) or not check_totp(settings, staff, code, now=now):
        return None
    staff.totp_confirmed_at = now
    record(session, "staff_totp_enrolled", staff, now=now, ip=ip)
    return new_backup_codes(session, settings, staff, now=now)


def _backup_hash(settings: Settings, staff_id: int, code: str) -> str:
    return two_factor.backup_code_digest(settings, "staff-backup-code", staff_id, code)


def new_backup_codes(session: Session, settings: Settings, staff: StaffMember, *, now: datetime) -> list[str]:
    """Ten new codes; earlier ones stop working. Only their keyed hashes are stored."""
    session.execute(delete(StaffBackupCode).where(StaffBackupCode.staff_id == staff.id))
    codes = [two_factor.new_backup_code() for _ in range(two_factor.BACKUP_CODE_COUNT)]
    session.add_all(
        StaffBackupCode(staff_id=staff.id, code_hash=_backup_hash(settings, staff.id, c), created_at=now)
        for c in codes
    )
    return codes


def use_backup_code(
    session: Session, settings: Settings, staff: StaffMember, code: str, *, now: datetime, ip: str | None
) -> bool:
    """A conditional update claims the code, so two requests cannot both use it."""
    result = session.execute(
        update(StaffBackupCode)
        .where(
            StaffBackupCode.staff_id == staff.id,
            StaffBackupCode.code_hash == _backup_hash(settings, staff.id, code),
            StaffBackupCode.used_at.is_(None),
        )
        .values(used_at=now),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    record(session, "staff_backup_code_used", staff, now=now, ip=ip)
    return True


def backup_codes_left(session: Session, staff_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(StaffBackupCode)
            .where(StaffBackupCode.staff_id == staff_id, StaffBackupCode.used_at.is_(None))
        )
        or 0
    )


def check_second_factor(
    session: Session, settings: Settings, staff: StaffMember, code: str, *, now: datetime, ip: str | None
) -> bool:
    """An authenticator code or a backup code (told apart by their form); a wrong one counts towards
    the lockout."""
    cleaned = code.strip()
    ok = (
        check_totp(settings, staff, cleaned, now=now)
        if sum(c.isdigit() for c in cleaned) == 6 and len(cleaned) <= 8
        else use_backup_code(session, settings, staff, cleaned, now=now, ip=ip)
    )
    if not ok:
        record_failure(session, settings, staff, now=now, ip=ip, factor="second_factor")
    return ok
