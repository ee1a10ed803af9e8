"""Secondary users of a vehicle, removing a car, replacing its primary user (SPEC §3.5).

The primary user invites up to ``secondary_users_max`` people by email; an invitee accepts through
the emailed link with an SMS code sent to the number the primary user gave (valid
``secondary_code_valid_hours``), signed in with any ID. The primary user removes a secondary user or
the car; a secondary user leaves; a transfer (``onboarding vehicles transfer``) replaces everyone by
a new primary user. Every ended link goes through ``links.end_link``, which tells its subscribers.

Nothing here commits: the request or command that calls it owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.senders import enqueue_now
from notifications.support import contact_for
from onboarding.core.branding import brand
from onboarding.core.crypto import hashes_match, new_token, token_hash
from onboarding.core.errors import FieldError, Forbidden, NotFound, ValidationFailed
from onboarding.core.fields import clean_email, clean_language, clean_name, clean_phone
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import audit, sms_codes
from onboarding.identity.accounts import find_account
from onboarding.identity.models import Account
from vehicles import links
from vehicles.models import SecondaryInvitation, Vehicle, VehicleModel, VehicleRole, VehicleUser

TOO_MANY = N_(
    "A car has at most %(count)s secondary users, invitations still open included. "
    "Remove someone or withdraw an invitation first."
)
OWN_ADDRESS = N_("That is your own address. Invite someone else.")
ALREADY_LINKED = N_("This person already uses the car.")
YOU_ARE_LINKED = N_("Your ID already uses this car.")
CAR_FULL = N_("The car already has %(count)s secondary users. Ask its primary user to remove someone.")
NO_SUCH_VIN = N_("No vehicle has this VIN.")
NO_SUCH_ID = N_("No ID has this email address. The new owner creates one first.")
ALREADY_PRIMARY = N_("This ID is already the primary user of the vehicle.")
PRIMARY_CANNOT_LEAVE = N_("You are the primary user of this car: remove the car from your ID instead.")


class InvitationState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED = "used"
    UNKNOWN = "unknown"


# --- who may do what ---------------------------------------------------------------------------------


def require_primary(session: Session, vehicle: Vehicle, account: Account) -> VehicleUser:
    """The account's live primary link to the vehicle; ``Forbidden`` for anyone else."""
    primary = links.primary_of(session, vehicle.id)
    if primary is None or primary.account_id != account.id:
        raise Forbidden("only the vehicle's primary user may do this")
    return primary


def secondary_links(session: Session, vehicle_id: int) -> list[VehicleUser]:
    return [link for link in links.live_links(session, vehicle_id) if link.role == VehicleRole.SECONDARY]


def pending_invitations(session: Session, vehicle_id: int, *, now: datetime) -> list[SecondaryInvitation]:
    """Invitations that can still be accepted: not accepted, not revoked, not expired."""
    return list(
        session.scalars(
            select(SecondaryInvitation)
            .where(
                SecondaryInvitation.vehicle_id == vehicle_id,
                SecondaryInvitation.accepted_at.is_(None),
                SecondaryInvitation.revoked_at.is_(None),
                SecondaryInvitation.expires_at > now,
            )
            .order_by(SecondaryInvitation.created_at, SecondaryInvitation.id)
        )
    )


def _hold_vehicle(session: Session, vehicle_id: int) -> None:
    """Serialises changes to one vehicle's users (two invitations racing for the last place). On
    SQLite every write transaction already holds the database's write lock."""
    session.execute(select(Vehicle.id).where(Vehicle.id == vehicle_id).with_for_update())


def model_name(session: Session, vehicle: Vehicle) -> str:
    model = session.get(VehicleModel, vehicle.model_code)
    return model.name if model is not None else vehicle.model_code


# --- inviting ------------------------------------------------------------------------------------------


def invite(
    session: Session,
    settings: Settings,
    vehicle: Vehicle,
    inviter: Account,
    first_name: str,
    last_name: str,
    email: str,
    phone: str,
    language: str,
    *,
    now: datetime,
) -> tuple[SecondaryInvitation, str]:
    """Invites a secondary user: the invitation and its token (only its SHA-256 is stored); the email
    with the link goes out right after the caller commits. Inviting an address that has an open
    invitation replaces it (a new link; the old one stops working)."""
    require_primary(session, vehicle, inviter)
    errors: list[FieldError] = []
    first = clean_name(first_name, "first_name", errors)
    last = clean_name(last_name, "last_name", errors)
    address = clean_email(email, "email", errors).lower()
    number = clean_phone(phone, vehicle.country, "phone", errors)
    lang = clean_language(language or inviter.language, "language", errors)
    if errors:
        raise ValidationFailed(errors)
    if address == inviter.email.lower():
        raise ValidationFailed([FieldError("email", OWN_ADDRESS)])
    invitee = find_account(session, address)
    if invitee is not None and links.link_of(session, vehicle.id, invitee.id) is not None:
        raise ValidationFailed([FieldError("email", ALREADY_LINKED)])
    _hold_vehicle(session, vehicle.id)
    pending = pending_invitations(session, vehicle.id, now=now)
    replaced = [p for p in pending if p.email.lower() == address]
    taken = len(secondary_links(session, vehicle.id)) + len(pending) - len(replaced)
    if taken >= settings.secondary_users_max:
        raise ValidationFailed(
            [FieldError("email", TOO_MANY, code="limit", params={"count": settings.secondary_users_max})]
        )
    for old in replaced:
        old.revoked_at = now
    token = new_token()
    invitation = SecondaryInvitation(
        vehicle_id=vehicle.id,
        invited_by=inviter.id,
        first_name=first,
        last_name=last,
        email=address,
        phone=number,
        language=lang,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + timedelta(days=settings.secondary_invitation_valid_days),
    )
    session.add(invitation)
    session.flush()
    rendered = render_email(
        "secondary_invitation",
        lang,
        {
            "brand": brand(settings),
            "support": contact_for(settings, vehicle.country, None),
            "first_name": first,
            "inviter_name": f"{inviter.first_name} {inviter.last_name}",
            "model_name": model_name(session, vehicle),
            "link": settings.public_url(f"/secondary/{token}"),
            "valid_days": settings.secondary_invitation_valid_days,
            "code_hours": settings.secondary_code_valid_hours,
            "expires_on": invitation.expires_at.date(),
        },
    )
    enqueue_now(
        session,
        outbox_email(
            settings,
            rendered,
            to=address,
            language=lang,
            purpose="secondary_invitation",
            reference_id=invitation.id,
        ),
        settings=settings,
        now=now,
    )
    audit.record(
        session,
        "secondary_invited",
        now=now,
        account_id=inviter.id,
        vehicle_id=vehicle.id,
        invitation_id=invitation.id,
        replaced=[old.id for old in replaced],
    )
    return invitation, token


def revoke_invitation(
    session: Session, vehicle: Vehicle, primary_account: Account, invitation_id: int, *, now: datetime
) -> SecondaryInvitation:
    """The primary user withdraws an open invitation (``NotFound`` if it is not one of this car's)."""
    require_primary(session, vehicle, primary_account)
    invitation = session.get(SecondaryInvitation, invitation_id)
    if invitation is None or invitation.vehicle_id != vehicle.id:
        raise NotFound("invitation")
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = now
        audit.record(
            session,
            "secondary_invitation_revoked",
            now=now,
            account_id=primary_account.id,
            vehicle_id=vehicle.id,
            invitation_id=invitation.id,
        )
    return invitation


# --- accepting -----------------------------------------------------------------------------------------


def resolve(
    session: Session, token: str, now: datetime
) -> tuple[InvitationState, SecondaryInvitation | None]:
    """What an invitation link is now; the invitation unless the token is unknown."""
    if not token or len(token) > 200:
        return InvitationState.UNKNOWN, None
    invitation = session.scalar(
        select(SecondaryInvitation).where(SecondaryInvitation.token_hash == token_hash(token))
    )
    if invitation is None or not hashes_match(invitation.token_hash, token):
        return InvitationState.UNKNOWN, None
    if invitation.accepted_at is not None:
        return InvitationState.USED, invitation
    if invitation.revoked_at is not None:
        return InvitationState.REVOKED, invitation
    if now >= invitation.expires_at:
        return InvitationState.EXPIRED, invitation
    return InvitationState.VALID, invitation


class InvitationUnusable(Exception):
    def __init__(self, state: InvitationState) -> None:
        super().__init__(state.value)
        self.state = state


def acceptance_refused(
    session: Session, settings: Settings, invitation: SecondaryInvitation, account: Account
) -> FieldError | None:
    """Why ``account`` cannot become a secondary user through ``invitation``, if it cannot: it uses
    the car already (the primary user included), or the car is full."""
    if links.link_of(session, invitation.vehicle_id, account.id) is not None:
        return FieldError("code", YOU_ARE_LINKED)
    if len(secondary_links(session, invitation.vehicle_id)) >= settings.secondary_users_max:
        return FieldError("code", CAR_FULL, params={"count": settings.secondary_users_max})
    return None


def _usable(invitation: SecondaryInvitation, now: datetime) -> None:
    if invitation.accepted_at is not None:
        raise InvitationUnusable(InvitationState.USED)
    if invitation.revoked_at is not None:
        raise InvitationUnusable(InvitationState.REVOKED)
    if now >= invitation.expires_at:
        raise InvitationUnusable(InvitationState.EXPIRED)


def send_code(
    session: Session,
    settings: Settings,
    invitation: SecondaryInvitation,
    account: Account,
    *,
    now: datetime,
    ip: str | None = None,
) -> sms_codes.SendOutcome:
    """Texts a code to the invitation's number for ``account`` to accept with. Raises
    ``InvitationUnusable`` or ``ValidationFailed`` (the account cannot accept it)."""
    _usable(invitation, now)
    refused = acceptance_refused(session, settings, invitation, account)
    if refused is not None:
        raise ValidationFailed([refused])
    return sms_codes.send_code(
        session, settings, account, purpose=sms_codes.SECONDARY, phone=invitation.phone, now=now, ip=ip
    )


def code_state(
    session: Session, settings: Settings, invitation: SecondaryInvitation, account: Account, *, now: datetime
) -> sms_codes.ChallengeState:
    return sms_codes.state(session, settings, account.id, sms_codes.SECONDARY, invitation.phone, now=now)


def accept(
    session: Session,
    settings: Settings,
    invitation: SecondaryInvitation,
    account: Account,
    *,
    code: str,
    now: datetime,
    ip: str | None = None,
) -> sms_codes.CheckOutcome:
    """Links ``account`` as a secondary user when ``code`` is the one texted for it (OK); any other
    outcome links nothing. Raises ``InvitationUnusable`` or ``ValidationFailed`` as ``send_code``."""
    _usable(invitation, now)
    _hold_vehicle(session, invitation.vehicle_id)
    refused = acceptance_refused(session, settings, invitation, account)
    if refused is not None:
        raise ValidationFailed([refused])
    outcome = sms_codes.check_code(
        session,
        settings,
        account,
        purpose=sms_codes.SECONDARY,
        phone=invitation.phone,
        code=code,
        now=now,
        ip=ip,
    )
    if outcome is not sms_codes.CheckOutcome.OK:
        return outcome
    vehicle = session.get(Vehicle, invitation.vehicle_id)
    assert vehicle is not None  # the invitation's foreign key
    links.link_user(session, vehicle, account.id, VehicleRole.SECONDARY, now=now, actor="self")
    invitation.accepted_at = now
    invitation.account_id = account.id
    audit.record(
        session,
        "secondary_accepted",
        now=now,
        account_id=account.id,
        ip=ip,
        vehicle_id=vehicle.id,
        invitation_id=invitation.id,
    )
    return outcome


# --- ending links ------------------------------------------------------------------------------------


def remove_secondary(
    session: Session, vehicle: Vehicle, primary_account: Account, link_id: int, *, now: datetime
) -> VehicleUser:
    """The primary user removes one secondary user (``NotFound`` unless ``link_id`` is a live
    secondary link of this car)."""
    require_primary(session, vehicle, primary_account)
    link = session.get(VehicleUser, link_id)
    if (
        link is None
        or link.vehicle_id != vehicle.id
        or link.role != VehicleRole.SECONDARY
        or link.ended_at is not None
    ):
        raise NotFound("link")
    links.end_link(
        session, link, reason=links.REMOVED_BY_PRIMARY, now=now, actor=f"account:{primary_account.id}"
    )
    return link


def leave(session: Session, vehicle: Vehicle, account: Account, *, now: datetime) -> VehicleUser:
    """A secondary user leaves the car. The primary user cannot (``ValidationFailed``: they remove
    the car instead); ``NotFound`` for an ID that does not use it."""
    link = links.link_of(session, vehicle.id, account.id)
    if link is None:
        raise NotFound("link")
    if link.role == VehicleRole.PRIMARY:
        raise ValidationFailed([FieldError("vehicle", PRIMARY_CANNOT_LEAVE)])
    links.end_link(session, link, reason=links.LEFT, now=now, actor="self")
    return link


def _revoke_pending(session: Session, vehicle_id: int, *, now: datetime) -> list[SecondaryInvitation]:
    pending = pending_invitations(session, vehicle_id, now=now)
    for invitation in pending:
        invitation.revoked_at = now
    return pending


def remove_car(
    session: Session, vehicle: Vehicle, primary_account: Account, *, now: datetime
) -> list[VehicleUser]:
    """The primary user removes the car from their ID: their link and every secondary user's end
    (the car has no user afterwards; a dealer or a pairing code links the next), open invitations
    are withdrawn. Returns the ended links."""
    primary = require_primary(session, vehicle, primary_account)
    actor = f"account:{primary_account.id}"
    ended = secondary_links(session, vehicle.id)
    for link in ended:
        links.end_link(session, link, reason=links.CAR_REMOVED, now=now, actor=actor)
    links.end_link(session, primary, reason=links.CAR_REMOVED, now=now, actor=actor)
    revoked = _revoke_pending(session, vehicle.id, now=now)
    audit.record(
        session,
        "vehicle_removed",
        now=now,
        account_id=primary_account.id,
        vehicle_id=vehicle.id,
        vin=vehicle.vin,
        ended_links=len(ended) + 1,
        revoked_invitations=len(revoked),
    )
    return [*ended, primary]


# --- replacing the primary user --------------------------------------------------------------------------


@dataclass
class Transfer:
    vehicle: Vehicle
    new_primary: Account
    ended: list[VehicleUser] = field(default_factory=list)
    revoked_invitations: int = 0


def transfer(
    session: Session, settings: Settings, vin: str, new_owner_email: str, *, now: datetime, actor: str
) -> Transfer:
    """Replaces the primary user of the vehicle with ``vin`` (a used car's new owner, who must have an
    ID): every live link ends (``TRANSFERRED``), open invitations are withdrawn, the new owner becomes
    the primary user, and everyone removed is told by email. ``ValidationFailed`` (fields ``vin``,
    ``email``) for an unknown VIN or an address without an ID."""
    wanted = "".join(vin.split()).upper()
    vehicle = session.scalar(select(Vehicle).where(func.upper(Vehicle.vin) == wanted)) if wanted else None
    if vehicle is None:
        raise ValidationFailed([FieldError("vin", NO_SUCH_VIN)])
    new_owner = find_account(session, new_owner_email)
    if new_owner is None:
        raise ValidationFailed([FieldError("email", NO_SUCH_ID)])
    _hold_vehicle(session, vehicle.id)
    current = links.primary_of(session, vehicle.id)
    if current is not None and current.account_id == new_owner.id:
        raise ValidationFailed([FieldError("email", ALREADY_PRIMARY)])
    ended = links.live_links(session, vehicle.id)
    for link in ended:
        links.end_link(session, link, reason=links.TRANSFERRED, now=now, actor=actor)
    revoked = _revoke_pending(session, vehicle.id, now=now)
    links.link_user(session, vehicle, new_owner.id, VehicleRole.PRIMARY, now=now, actor=actor)
    name = model_name(session, vehicle)
    for link in ended:
        if link.account_id == new_owner.id:
            continue  # a secondary user who bought the car: now its primary user, not removed
        removed = session.get(Account, link.account_id)
        if removed is not None:
            _tell_removed(session, settings, removed, vehicle, name, now=now)
    audit.record(
        session,
        "vehicle_transferred",
        now=now,
        account_id=new_owner.id,
        actor=actor,
        vehicle_id=vehicle.id,
        vin=vehicle.vin,
        previous_primary=current.account_id if current is not None else None,
        ended_links=len(ended),
        revoked_invitations=len(revoked),
    )
    return Transfer(vehicle, new_owner, ended, len(revoked))


def _tell_removed(
    session: Session, settings: Settings, reader: Account, vehicle: Vehicle, name: str, *, now: datetime
) -> None:
    context = {
        "brand": brand(settings),
        "support": contact_for(settings, reader.country, None),
        "first_name": reader.first_name,
        "model_name": name,
        "vin": vehicle.vin or "",
    }
    rendered = render_email("vehicle_transferred", reader.language, context)
    # Not waited for: the scheduler's outbox pass sends it (a command has no request to send after).
    outbox.enqueue(
        session,
        outbox_email(
            settings,
            rendered,
            to=reader.email,
            language=reader.language,
            purpose="vehicle_transferred",
            reference_id=vehicle.id,
        ),
        secret=settings.secret_key_value(),
        now=now,
    )
