"""A vehicle's users on the web (SPEC §3.5): the primary user invites and removes secondary users
and removes the car; a secondary user leaves; an invitee accepts through the emailed link with an SMS
code. Which ID may open which page is decided by two dependencies: ``primary_user_of_vehicle`` (every
primary-only route) and ``user_of_vehicle`` (any live user)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, Forbidden, NotFound, ValidationFailed
from onboarding.core.i18n import N_, Text, lazy_gettext
from onboarding.identity import sms_codes, web_sessions
from onboarding.identity.dependencies import session_of, signed_in
from onboarding.identity.models import Account
from onboarding.identity.pages import code_problem, link_problem
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.forms import by_field, csrf_protect
from onboarding.web.problems import AnsweredInstead, error_page
from onboarding.web.rendering import message_page, render
from onboarding.web.transactions import commit, db_session
from vehicles import links, secondary
from vehicles.models import SecondaryInvitation, Vehicle, VehicleRole, VehicleUser

router = APIRouter(include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]
Me = Annotated[web_sessions.CurrentSession, Depends(signed_in)]
Csrf = Depends(csrf_protect)

NOT_PRIMARY = N_("Only the car's primary user can do this.")
NOTICES = {
    "invited": N_("The invitation was sent."),
    "removed": N_("The secondary user was removed."),
    "revoked": N_("The invitation was withdrawn."),
}


@dataclass(frozen=True)
class VehicleAccess:
    """The signed-in ID and its live link to the vehicle of the page."""

    me: web_sessions.CurrentSession
    vehicle: Vehicle
    link: VehicleUser

    @property
    def account(self) -> Account:
        return self.me.account


def user_of_vehicle(vehicle_id: int, request: Request, session: Db, me: Me) -> VehicleAccess:
    """The signed-in ID as a live user (primary or secondary) of ``{vehicle_id}``; 404 for anyone
    else, so that a stranger learns nothing about which cars exist."""
    vehicle = session.get(Vehicle, vehicle_id)
    link = links.link_of(session, vehicle.id, me.account.id) if vehicle is not None else None
    if vehicle is None or link is None:
        raise AnsweredInstead(error_page(request, 404))
    return VehicleAccess(me, vehicle, link)


User = Annotated[VehicleAccess, Depends(user_of_vehicle)]


def primary_user_of_vehicle(request: Request, access: User) -> VehicleAccess:
    """The signed-in ID as the live primary user of ``{vehicle_id}``: a secondary user gets 403 (they
    know the car), anyone else 404."""
    if access.link.role != VehicleRole.PRIMARY:
        raise AnsweredInstead(error_page(request, 403, NOT_PRIMARY))
    return access


Primary = Annotated[VehicleAccess, Depends(primary_user_of_vehicle)]


def _page(
    request: Request,
    session: Session,
    template: str,
    access: VehicleAccess,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> Response:
    return render(
        request,
        template,
        {
            "vehicle": access.vehicle,
            "model_name": secondary.model_name(session, access.vehicle),
            "signed_in_as": access.account.email,
            "errors": {},
            "values": {},
            "notice": None,
            **context,
        },
        status=status,
        language=access.account.language,
    )


# --- the primary user's pages ----------------------------------------------------------------------------


def _users_page(
    request: Request,
    session: Session,
    access: VehicleAccess,
    *,
    errors: list[FieldError] | None = None,
    values: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
) -> Response:
    settings = settings_of(request)
    users = [
        (link, session.get(Account, link.account_id))
        for link in secondary.secondary_links(session, access.vehicle.id)
    ]
    pending = secondary.pending_invitations(session, access.vehicle.id, now=utcnow())
    return _page(
        request,
        session,
        "activation/secondary_users.html",
        access,
        {
            "users": users,
            "pending": pending,
            "places_left": max(0, settings.secondary_users_max - len(users) - len(pending)),
            "max_users": settings.secondary_users_max,
            "code_hours": settings.secondary_code_valid_hours,
            "valid_days": settings.secondary_invitation_valid_days,
            "errors": by_field(errors or []),
            "values": values or {},
            "notice": lazy_gettext(NOTICES[notice]) if notice in NOTICES else None,
        },
        status=status,
    )


@router.get("/vehicles/{vehicle_id}/users")
def users_page(request: Request, session: Db, access: Primary, notice: str = "") -> Response:
    return _users_page(request, session, access, notice=notice)


@router.post("/vehicles/{vehicle_id}/users", dependencies=[Csrf])
def invite_submit(
    request: Request,
    session: Db,
    access: Primary,
    background: BackgroundTasks,
    first_name: Annotated[str, Form(max_length=200)] = "",
    last_name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    values = {"first_name": first_name, "last_name": last_name, "email": email, "phone": phone}
    try:
        secondary.invite(
            session,
            settings_of(request),
            access.vehicle,
            access.account,
            first_name,
            last_name,
            email,
            phone,
            access.account.language,
            now=utcnow(),
        )
    except ValidationFailed as exc:
        session.rollback()
        return _users_page(request, session, access, errors=exc.errors, values=values, status=422)
    commit(request, session, background)
    return RedirectResponse(f"/vehicles/{access.vehicle.id}/users?notice=invited", status_code=303)


@router.post("/vehicles/{vehicle_id}/users/{link_id}/remove", dependencies=[Csrf])
def remove_user(request: Request, session: Db, access: Primary, link_id: int) -> Response:
    try:
        secondary.remove_secondary(session, access.vehicle, access.account, link_id, now=utcnow())
    except (NotFound, Forbidden):
        session.rollback()
        return error_page(request, 404)
    session.commit()
    return RedirectResponse(f"/vehicles/{access.vehicle.id}/users?notice=removed", status_code=303)


@router.post("/vehicles/{vehicle_id}/invitations/{invitation_id}/revoke", dependencies=[Csrf])
def revoke_invitation(request: Request, session: Db, access: Primary, invitation_id: int) -> Response:
    try:
        secondary.revoke_invitation(session, access.vehicle, access.account, invitation_id, now=utcnow())
    except (NotFound, Forbidden):
        session.rollback()
        return error_page(request, 404)
    session.commit()
    return RedirectResponse(f"/vehicles/{access.vehicle.id}/users?notice=revoked", status_code=303)


@router.get("/vehicles/{vehicle_id}/remove")
def remove_car_page(request: Request, session: Db, access: Primary) -> Response:
    return _page(
        request,
        session,
        "activation/vehicle_remove.html",
        access,
        {"secondary_count": len(secondary.secondary_links(session, access.vehicle.id))},
    )


@router.post("/vehicles/{vehicle_id}/remove", dependencies=[Csrf])
def remove_car_submit(request: Request, session: Db, access: Primary) -> Response:
    secondary.remove_car(session, access.vehicle, access.account, now=utcnow())
    session.commit()
    return message_page(
        request,
        lazy_gettext("The car was removed from your ID"),
        [
            lazy_gettext(
                "Your ID and the secondary users no longer use this car, "
                "and its open invitations were withdrawn."
            ),
        ],
        [("/account", lazy_gettext("My ID"))],
        language=access.account.language,
    )


# --- any user: leaving ---------------------------------------------------------------------------------


@router.get("/vehicles/{vehicle_id}/leave")
def leave_page(request: Request, session: Db, access: User) -> Response:
    return _page(
        request,
        session,
        "activation/vehicle_leave.html",
        access,
        {"is_primary": access.link.role == VehicleRole.PRIMARY},
    )


@router.post("/vehicles/{vehicle_id}/leave", dependencies=[Csrf])
def leave_submit(request: Request, session: Db, access: User) -> Response:
    if access.link.role == VehicleRole.PRIMARY:
        return _page(
            request, session, "activation/vehicle_leave.html", access, {"is_primary": True}, status=409
        )
    secondary.leave(session, access.vehicle, access.account, now=utcnow())
    session.commit()
    return message_page(
        request,
        lazy_gettext("You no longer use this car"),
        [lazy_gettext("Its primary user can invite you again.")],
        [("/account", lazy_gettext("My ID"))],
        language=access.account.language,
    )


# --- the invitee: accepting ------------------------------------------------------------------------------

LINK_PROBLEMS: dict[secondary.InvitationState, str] = {
    secondary.InvitationState.EXPIRED: N_(
        "This invitation has expired. Ask the car's primary user to invite you again."
    ),
    secondary.InvitationState.REVOKED: N_(
        "This invitation was withdrawn or replaced by a newer one. "
        "Use the newest email, or ask the car's primary user."
    ),
    secondary.InvitationState.USED: N_("This invitation was already accepted. Log in to see your cars."),
}


def _invitation(request: Request, session: Session, token: str) -> SecondaryInvitation:
    """The invitation of a usable link; otherwise the page that says why not (410, or 404 when
    unknown)."""
    state, invitation = secondary.resolve(session, token, utcnow())
    if state is secondary.InvitationState.VALID and invitation is not None:
        return invitation
    raise AnsweredInstead(_link_problem(request, state))


def _link_problem(request: Request, state: secondary.InvitationState) -> Response:
    if state in LINK_PROBLEMS:
        return link_problem(request, [lazy_gettext(LINK_PROBLEMS[state])], ("/login", lazy_gettext("Log in")))
    return message_page(
        request,
        lazy_gettext("This link does not work"),
        [lazy_gettext("Check that you opened the whole link from the email, or ask the car's primary user.")],
        [("/", lazy_gettext("Home"))],
        status=404,
    )


def _accept_page(
    request: Request,
    session: Session,
    token: str,
    invitation: SecondaryInvitation,
    *,
    message: Text | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    settings = settings_of(request)
    current = session_of(request, session)
    vehicle = session.get(Vehicle, invitation.vehicle_id)
    assert vehicle is not None
    inviter = session.get(Account, invitation.invited_by) if invitation.invited_by is not None else None
    context: dict[str, Any] = {
        "token": token,
        "invitation": invitation,
        "inviter_name": f"{inviter.first_name} {inviter.last_name}" if inviter else None,
        "vehicle": vehicle,
        "model_name": secondary.model_name(session, vehicle),
        "message": message,
        "errors": by_field(errors or []),
        "code_hours": settings.secondary_code_valid_hours,
        "account": None,
        "refused": None,
        "sms": None,
        "signed_in_as": None,
    }
    if current is not None:
        account = current.account
        refused = secondary.acceptance_refused(session, settings, invitation, account)
        context.update(
            account=account,
            signed_in_as=account.email,
            refused=refused,
            sms=secondary.code_state(session, settings, invitation, account, now=utcnow()),
        )
    language = current.account.language if current is not None else invitation.language
    return render(request, "activation/secondary_accept.html", context, status=status, language=language)


@router.get("/secondary/{token}")
def accept_page(token: str, request: Request, session: Db) -> Response:
    invitation = _invitation(request, session, token)
    return _accept_page(request, session, token, invitation)


def _signed_in_or_login(request: Request, session: Session, token: str) -> web_sessions.CurrentSession:
    current = session_of(request, session)
    if current is None:
        raise AnsweredInstead(RedirectResponse(f"/login?next=/secondary/{token}", status_code=303))
    return current


@router.post("/secondary/{token}/send", dependencies=[Csrf])
def accept_send_code(token: str, request: Request, session: Db, background: BackgroundTasks) -> Response:
    invitation = _invitation(request, session, token)
    current = _signed_in_or_login(request, session, token)
    settings = settings_of(request)
    now = utcnow()
    try:
        outcome = secondary.send_code(
            session, settings, invitation, current.account, now=now, ip=client_ip(request)
        )
    except ValidationFailed as exc:
        session.rollback()
        return _accept_page(request, session, token, invitation, errors=exc.errors, status=409)
    commit(request, session, background)
    wait = secondary.code_state(session, settings, invitation, current.account, now=now).wait_seconds
    message = {
        sms_codes.SendOutcome.SENT: lazy_gettext(
            "We sent a code. It is valid for %(hours)s hours.", hours=settings.secondary_code_valid_hours
        ),
        sms_codes.SendOutcome.COOLDOWN: lazy_gettext(
            "Wait %(seconds)s seconds before asking for another code.", seconds=wait
        ),
        sms_codes.SendOutcome.LIMIT: lazy_gettext(
            "You asked for %(count)s codes in the last hour. Try again later.",
            count=settings.sms_max_sends_per_hour,
        ),
        sms_codes.SendOutcome.LOCKED: lazy_gettext(
            "Too many wrong codes. Try again in an hour, or contact support."
        ),
    }[outcome]
    status = 200 if outcome is sms_codes.SendOutcome.SENT else 429
    return _accept_page(request, session, token, invitation, message=message, status=status)


@router.post("/secondary/{token}", dependencies=[Csrf])
def accept_submit(
    token: str, request: Request, session: Db, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    invitation = _invitation(request, session, token)
    current = _signed_in_or_login(request, session, token)
    try:
        outcome = secondary.accept(
            session,
            settings_of(request),
            invitation,
            current.account,
            code=code,
            now=utcnow(),
            ip=client_ip(request),
        )
    except ValidationFailed as exc:
        session.rollback()
        return _accept_page(request, session, token, invitation, errors=exc.errors, status=409)
    session.commit()  # a wrong code's failure counts too
    if outcome is not sms_codes.CheckOutcome.OK:
        errors = [FieldError("code", code_problem(outcome))]
        return _accept_page(request, session, token, invitation, errors=errors, status=422)
    vehicle = session.get(Vehicle, invitation.vehicle_id)
    assert vehicle is not None
    return message_page(
        request,
        lazy_gettext("You now use this car"),
        [
            lazy_gettext(
                "Your ID is a secondary user of the %(model)s. "
                "Log in to the car with your ID to use its connected services.",
                model=secondary.model_name(session, vehicle),
            ),
            lazy_gettext("Only the primary user buys services, books charging or changes security settings."),
        ],
        [("/account", lazy_gettext("My ID"))],
        language=current.account.language,
    )
