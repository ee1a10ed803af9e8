"""Support requests as records (SPEC §3.9): the buyers' requests ("invitation expired", "no SMS
received", "wrong phone number", "pairing needs support") and the late charging cards, routed by the
support directory, are worked in the portal: the inbox of a dealer's or market's requests waiting
longest first, taken by a staff member (in progress), notes, and done, which tells the buyer by
email. Every query goes through ``scope.scoped``; every change is audited with the staff member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.support import contact_for
from onboarding.activation.models import SupportRequest
from onboarding.core.branding import brand
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_, gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from onboarding.portal.models import StaffMember, SupportRequestHandling, SupportRequestNote
from onboarding.portal.scope import scoped
from onboarding.portal.staff import record
from vehicles.models import Order

OPEN, IN_PROGRESS, DONE = "open", "in_progress", "done"
STATUSES = (OPEN, IN_PROGRESS, DONE)
STATUS_LABELS = {OPEN: N_("Open"), IN_PROGRESS: N_("In progress"), DONE: N_("Done")}
KIND_LABELS = {
    "new_invitation": N_("Invitation expired: a new one is asked for"),
    "no_sms": N_("No SMS code received"),
    "wrong_phone": N_("Wrong phone number"),
    "vehicle_pairing": N_("Pairing a car needs support"),
    "charging_card_overdue": N_("Charging card not delivered in time"),
}
INBOX_SIZE = 100
NOTE_MAX = 2000


@dataclass(frozen=True)
class InboxRow:
    id: int
    kind: str
    status: str
    created_at: datetime
    country: str | None
    dealer_code: str | None
    order_number: str | None
    assigned_to: str | None


def inbox(session: Session, staff: StaffMember, *, status: str | None) -> list[InboxRow]:
    """The requests ``staff`` may see, not yet done (or of ``status``), waiting longest first."""
    statement = (
        select(
            SupportRequest.id,
            SupportRequest.kind,
            SupportRequest.status,
            SupportRequest.created_at,
            SupportRequest.country,
            SupportRequest.dealer_code,
            Order.order_number,
            StaffMember.name,
        )
        .outerjoin(Order, Order.id == SupportRequest.order_id)
        .outerjoin(SupportRequestHandling, SupportRequestHandling.request_id == SupportRequest.id)
        .outerjoin(StaffMember, StaffMember.id == SupportRequestHandling.assigned_to_id)
    )
    statement = scoped(staff, statement, SupportRequest)
    if status in STATUSES:
        statement = statement.where(SupportRequest.status == status)
    else:
        statement = statement.where(SupportRequest.status != DONE)
    rows = session.execute(statement.order_by(SupportRequest.created_at, SupportRequest.id).limit(INBOX_SIZE))
    return [InboxRow(*row) for row in rows]


def request_in_scope(session: Session, staff: StaffMember, request_id: int) -> SupportRequest | None:
    """The request if ``staff`` may see it; None otherwise (as if it did not exist)."""
    return session.scalar(
        scoped(staff, select(SupportRequest).where(SupportRequest.id == request_id), SupportRequest)
    )


def handling_of(session: Session, request: SupportRequest, *, now: datetime) -> SupportRequestHandling:
    handling = session.get(SupportRequestHandling, request.id)
    if handling is None:
        handling = SupportRequestHandling(request_id=request.id, updated_at=now)
        session.add(handling)
        session.flush()
    return handling


def notes_of(session: Session, request: SupportRequest) -> list[tuple[SupportRequestNote, str]]:
    rows = session.execute(
        select(SupportRequestNote, StaffMember.name)
        .join(StaffMember, StaffMember.id == SupportRequestNote.staff_id)
        .where(SupportRequestNote.request_id == request.id)
        .order_by(SupportRequestNote.at, SupportRequestNote.id)
    )
    return [(row[0], row[1]) for row in rows]


def _not_done(request: SupportRequest) -> None:
    if request.status == DONE:
        raise ValidationFailed([FieldError("request", N_("The request is done already."))])


def take(session: Session, staff: StaffMember, request: SupportRequest, *, now: datetime) -> None:
    """``staff`` works on the request now (in progress, assigned to them)."""
    _not_done(request)
    handling = handling_of(session, request, now=now)
    handling.assigned_to_id = staff.id
    handling.updated_at = now
    request.status = IN_PROGRESS
    record(
        session,
        "staff_took_request",
        staff,
        now=now,
        about=request,
        request=request.id,
    )


def add_note(
    session: Session, staff: StaffMember, request: SupportRequest, text: str, *, now: datetime
) -> None:
    cleaned = text.strip()
    if not cleaned or len(cleaned) > NOTE_MAX:
        raise ValidationFailed([FieldError("note", N_("Write a note of 1 to 2000 characters."))])
    session.add(SupportRequestNote(request_id=request.id, staff_id=staff.id, at=now, text=cleaned))
    handling_of(session, request, now=now).updated_at = now
    record(
        session,
        "staff_noted_request",
        staff,
        now=now,
        about=request,
        request=request.id,
    )


def finish(
    session: Session, settings: Settings, staff: StaffMember, request: SupportRequest, *, now: datetime
) -> bool:
    """The request is done; the buyer, when we know their address, is told by email (in the order's
    language). Returns whether an email was queued."""
    _not_done(request)
    handling = handling_of(session, request, now=now)
    handling.done_at = now
    handling.done_by_id = staff.id
    handling.updated_at = now
    if handling.assigned_to_id is None:
        handling.assigned_to_id = staff.id
    request.status = DONE
    record(
        session,
        "staff_finished_request",
        staff,
        now=now,
        about=request,
        request=request.id,
    )
    order = session.get(Order, request.order_id) if request.order_id else None
    address = request.contact_email or (order.buyer_email if order else None)
    if not address:
        return False
    holder = None if order else session.scalar(select(Account).where(Account.email == address))
    language = order.language if order else holder.language if holder else settings.default_language
    with use_language(language):
        context = {
            "brand": brand(settings),
            "support": contact_for(settings, request.country, None),
            "first_name": order.buyer_first_name if order else None,
            "subject_line": gettext_("Your support request is done"),
            "paragraphs": [
                gettext_(
                    "We have dealt with your request (number %(number)s: %(kind)s). If something is "
                    "still not right, reply to the support address below.",
                    number=request.id,
                    kind=gettext_(KIND_LABELS.get(request.kind, request.kind)),
                )
            ],
            "link": None,
            "link_label": None,
            "ignorable": False,
        }
    rendered = render_email("account_message", language, context)
    message = outbox_email(
        settings,
        rendered,
        to=address,
        language=language,
        purpose="support_request_done",
        reference_id=request.id,
    )
    outbox.enqueue(session, message, secret=settings.secret_key_value(), now=now)
    return True
