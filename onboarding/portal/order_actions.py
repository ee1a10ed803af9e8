"""What staff do to an order (SPEC §3.8): resend the invitation, correct the buyer's email address
(which re-invites) or mobile number (the buyer's next code goes there; the wrong-number and no-SMS
requests are closed), link the used car to its new owner's ID, and cancel the order. Each needs a
reason and is audited with who, when and why, and dated on the order's timeline. Bad input raises
``ValidationFailed`` naming the field, and nothing changes. The caller found the order through
``scope`` (so it is the staff member's)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from onboarding.activation import invitations
from onboarding.activation.models import SupportRequest
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_email, clean_phone
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.portal.models import StaffMember
from onboarding.portal.staff import actor_of, record
from vehicles.models import CLOSED_STATUSES, Order, ProductionStatus
from vehicles.secondary import transfer
from vehicles.service import add_event

REASON_MIN, REASON_MAX = 3, 500
PHONE_REQUESTS = ("wrong_phone", "no_sms")


def _reason(reason: str, errors: list[FieldError]) -> str:
    cleaned = " ".join(reason.split())
    if not REASON_MIN <= len(cleaned) <= REASON_MAX:
        errors.append(FieldError("reason", N_("Say why, in 3 to 500 characters.")))
    return cleaned


def _open(order: Order, errors: list[FieldError]) -> None:
    if order.production_status in CLOSED_STATUSES:
        errors.append(FieldError("order", N_("The order is delivered or cancelled.")))


def resend_invitation(
    session: Session, staff: StaffMember, order: Order, *, reason: str, now: datetime
) -> None:
    """A new invitation link: the current one stops working now, and the next scheduler pass sends
    the new one."""
    errors: list[FieldError] = []
    why = _reason(reason, errors)
    _open(order, errors)
    if order.onboarded_at is not None:
        errors.append(FieldError("order", N_("The buyer has finished the activation.")))
    if errors:
        raise ValidationFailed(errors)
    invitations.reissue(session, order, now=now, actor=actor_of(staff), reason="staff_resend")
    record(
        session,
        "staff_resent_invitation",
        staff,
        now=now,
        about=order,
        order=order.order_number,
        reason=why,
    )


def correct_email(
    session: Session, staff: StaffMember, order: Order, *, email: str, reason: str, now: datetime
) -> None:
    """The buyer's address corrected; a new invitation goes to it (the old link stops working)."""
    errors: list[FieldError] = []
    why = _reason(reason, errors)
    _open(order, errors)
    new = clean_email(email, "email", errors).lower()
    if not errors and new == order.buyer_email.lower():
        errors.append(FieldError("email", N_("This is the order's address already.")))
    if errors:
        raise ValidationFailed(errors)
    old = order.buyer_email
    order.buyer_email = new
    add_event(session, order, "email_corrected", actor_of(staff), now, why)
    if order.onboarded_at is None:
        invitations.reissue(session, order, now=now, actor=actor_of(staff), reason="email_corrected")
    record(
        session,
        "staff_corrected_email",
        staff,
        now=now,
        about=order,
        order=order.order_number,
        reason=why,
        old=old,
        new=new,
    )


def correct_phone(
    session: Session, staff: StaffMember, order: Order, *, phone: str, reason: str, now: datetime
) -> int:
    """The buyer's mobile number corrected: the activation's next code goes to it. The order's open
    wrong-number and no-SMS requests are done; returns how many."""
    errors: list[FieldError] = []
    why = _reason(reason, errors)
    new = clean_phone(phone, order.country, "phone", errors)
    if not errors and new == order.buyer_phone:
        errors.append(FieldError("phone", N_("This is the order's number already.")))
    if errors:
        raise ValidationFailed(errors)
    order.buyer_phone = new
    order.updated_at = now
    add_event(session, order, "phone_corrected", actor_of(staff), now, why)
    closed = session.execute(
        update(SupportRequest)
        .where(
            SupportRequest.order_id == order.id,
            SupportRequest.kind.in_(PHONE_REQUESTS),
            SupportRequest.status != "done",
        )
        .values(status="done")
        .execution_options(synchronize_session=False)
    )
    count = int(closed.rowcount or 0)  # type: ignore[attr-defined]
    record(
        session,
        "staff_corrected_phone",
        staff,
        now=now,
        about=order,
        order=order.order_number,
        reason=why,
        closed_requests=count,
    )
    return count


def cancel_order(session: Session, staff: StaffMember, order: Order, *, reason: str, now: datetime) -> None:
    """The order is cancelled: its live invitation stops working and no new one is sent."""
    errors: list[FieldError] = []
    why = _reason(reason, errors)
    _open(order, errors)
    if errors:
        raise ValidationFailed(errors)
    invitations.revoke_live(session, [order.id], now=now, reason="order_cancelled")
    add_event(session, order, "status", actor_of(staff), now, f"{order.production_status} -> cancelled")
    order.production_status = ProductionStatus.CANCELLED
    order.invite_after = None
    order.updated_at = now
    record(
        session,
        "staff_cancelled_order",
        staff,
        now=now,
        about=order,
        order=order.order_number,
        reason=why,
    )


def link_used_car(
    session: Session,
    settings: Settings,
    staff: StaffMember,
    order: Order,
    *,
    email: str,
    papers_checked: bool,
    reason: str,
    now: datetime,
) -> None:
    """A used car's new owner becomes its primary user (``vehicles.secondary.transfer``: everyone
    before them is removed and told), once the staff member has checked the new owner's ID and the
    registration papers."""
    errors: list[FieldError] = []
    why = _reason(reason, errors)
    if not order.vin:
        errors.append(FieldError("order", N_("The order has no VIN yet.")))
    if not papers_checked:
        errors.append(
            FieldError("papers_checked", N_("Check the new owner's ID and registration papers first."))
        )
    if errors:
        raise ValidationFailed(errors)
    assert order.vin is not None
    try:
        transfer(session, settings, order.vin, email, now=now, actor=actor_of(staff))
    except ValidationFailed as exc:
        # The VIN is the order's; only the address can be wrong here.
        raise ValidationFailed([e for e in exc.errors if e.field == "email"] or exc.errors) from exc
    add_event(session, order, "used_car_linked", actor_of(staff), now, why)
    record(
        session,
        "staff_linked_used_car",
        staff,
        now=now,
        about=order,
        order=order.order_number,
        reason=why,
        new_owner=email.strip().lower(),
    )
