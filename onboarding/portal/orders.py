"""Orders in the portal (SPEC §3.8): the list with each order's onboarding stage, filters, search and
pagination, and one order's timeline. Every query goes through ``scope.scoped``.

The list is paged by keyset (the last order's id, newest first), not by offset: a page costs the
same on the thousandth page as on the first, and an order arriving meanwhile does not shift the
pages. The stage filter reads ``Order.onboarding_stage``, kept by ``activation.invitations``
whenever the funnel moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from notifications.models import OutboxMessage
from onboarding.activation import invitations
from onboarding.activation.models import Invitation, SupportRequest
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_country
from onboarding.core.i18n import N_
from onboarding.identity.models import AuditEvent
from onboarding.portal.models import StaffMember
from onboarding.portal.scope import scoped
from vehicles.models import Order, OrderEvent, ProductionStatus
from vehicles.service import is_order_number

PAGE_SIZE = 50
SEARCH_MAX = 100
# The stages the list filters by: the funnel's, with "due" told from "not_due" by the date.
STAGES: tuple[str, ...] = invitations.FUNNEL_STAGES
STATUSES: tuple[str, ...] = tuple(status.value for status in ProductionStatus)
STAGE_LABELS = {
    "not_due": N_("Not invited yet"),
    "due": N_("Invitation due"),
    "invited": N_("Invited"),
    "opened": N_("Invitation opened"),
    "id_created": N_("ID created"),
    "phone_verified": N_("Phone verified"),
    "pin_set": N_("PIN set"),
    "terms_accepted": N_("Terms accepted"),
    "billing_checked": N_("Billing address given"),
    "data_pass": N_("Data Pass answered"),
    "services_active": N_("Services active"),
    "vehicle_linked": N_("Vehicle linked"),
    "charging": N_("Charging service answered"),
    "completed": N_("Activation completed"),
}
STATUS_LABELS = {
    "ordered": N_("Ordered"),
    "in_production": N_("In production"),
    "produced": N_("Produced"),
    "in_transit": N_("In transit"),
    "at_dealer": N_("At the dealer"),
    "delivered": N_("Delivered"),
    "cancelled": N_("Cancelled"),
}


@dataclass(frozen=True)
class OrderFilters:
    stage: str | None = None
    status: str | None = None
    delivery_from: date | None = None
    delivery_to: date | None = None
    dealer: str | None = None
    country: str | None = None
    search: str | None = None

    def query(self) -> dict[str, str]:
        """The filters as URL parameters (for the next page's link)."""
        values = {
            "stage": self.stage,
            "status": self.status,
            "delivery_from": self.delivery_from.isoformat() if self.delivery_from else None,
            "delivery_to": self.delivery_to.isoformat() if self.delivery_to else None,
            "dealer": self.dealer,
            "country": self.country,
            "q": self.search,
        }
        return {name: value for name, value in values.items() if value}


def _date(value: str | None, name: str, errors: list[FieldError]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors.append(FieldError(name, N_("Enter a date as YYYY-MM-DD.")))
        return None


def parse_filters(params: dict[str, str]) -> OrderFilters:
    """The filters of the list's form; ``ValidationFailed`` names each bad field."""
    errors: list[FieldError] = []
    stage = params.get("stage") or None
    if stage is not None and stage not in STAGES:
        errors.append(FieldError("stage", N_("Choose one of the stages.")))
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        errors.append(FieldError("status", N_("Choose one of the statuses.")))
    delivery_from = _date(params.get("delivery_from"), "delivery_from", errors)
    delivery_to = _date(params.get("delivery_to"), "delivery_to", errors)
    if delivery_from and delivery_to and delivery_to < delivery_from:
        errors.append(FieldError("delivery_to", N_("The end of the window is before its start.")))
    country_text = (params.get("country") or "").strip()
    country = clean_country(country_text, "country", errors) if country_text else None
    dealer = (params.get("dealer") or "").strip()[:32] or None
    search = " ".join((params.get("q") or "").split())
    if len(search) > SEARCH_MAX:
        errors.append(FieldError("q", N_("At most %(count)s characters.")))
    if errors:
        raise ValidationFailed(errors)
    return OrderFilters(stage, status, delivery_from, delivery_to, dealer, country, search or None)


@dataclass(frozen=True)
class OrderRow:
    order_number: str
    buyer_name: str
    buyer_email: str
    dealer_code: str
    country: str
    model_code: str
    vin: str | None
    planned_delivery_date: date
    production_status: str
    stage: str


@dataclass(frozen=True)
class OrderPage:
    rows: list[OrderRow]
    next_after: int | None  # the keyset of the next page, None on the last


def _stage_condition(stage: str, today: date) -> Any:
    # "due" and "not_due" are one stored stage, told apart by the day the invitation is due from.
    if stage == "due":
        return and_(Order.onboarding_stage == "not_due", Order.invite_after <= today)
    if stage == "not_due":
        return and_(
            Order.onboarding_stage == "not_due", or_(Order.invite_after.is_(None), Order.invite_after > today)
        )
    return Order.onboarding_stage == stage


def _search_condition(text: str) -> Any:
    """An order number, a VIN or an email address exactly (case-insensitive); otherwise a name."""
    lowered = text.lower()
    if "@" in text:
        return Order.buyer_email == lowered
    exact = or_(Order.order_number == text, Order.vin == text.upper())
    words = lowered.split()
    if len(words) >= 2:
        name = and_(
            func.lower(Order.buyer_first_name) == " ".join(words[:-1]),
            func.lower(Order.buyer_last_name) == words[-1],
        )
    else:
        name = or_(
            func.lower(Order.buyer_last_name) == lowered, func.lower(Order.buyer_first_name) == lowered
        )
    return or_(exact, name)


def list_orders(
    session: Session, staff: StaffMember, filters: OrderFilters, *, after: int | None, today: date
) -> OrderPage:
    """A page of the orders ``staff`` may see that match ``filters``, newest first."""
    statement = select(
        Order.id,
        Order.order_number,
        Order.buyer_first_name,
        Order.buyer_last_name,
        Order.buyer_email,
        Order.dealer_code,
        Order.country,
        Order.model_code,
        Order.vin,
        Order.planned_delivery_date,
        Order.production_status,
        Order.onboarding_stage,
        Order.invite_after,
    )
    statement = scoped(staff, statement, Order)
    if filters.stage:
        statement = statement.where(_stage_condition(filters.stage, today))
    if filters.status:
        statement = statement.where(Order.production_status == filters.status)
    if filters.delivery_from:
        statement = statement.where(Order.planned_delivery_date >= filters.delivery_from)
    if filters.delivery_to:
        statement = statement.where(Order.planned_delivery_date <= filters.delivery_to)
    if filters.dealer:
        statement = statement.where(Order.dealer_code == filters.dealer)
    if filters.country:
        statement = statement.where(Order.country == filters.country)
    if filters.search:
        statement = statement.where(_search_condition(filters.search))
    if after is not None:
        statement = statement.where(Order.id < after)
    found = session.execute(statement.order_by(Order.id.desc()).limit(PAGE_SIZE + 1)).all()
    rows = [
        OrderRow(
            order_number=row.order_number,
            buyer_name=f"{row.buyer_first_name} {row.buyer_last_name}",
            buyer_email=row.buyer_email,
            dealer_code=row.dealer_code,
            country=row.country,
            model_code=row.model_code,
            vin=row.vin,
            planned_delivery_date=row.planned_delivery_date,
            production_status=row.production_status,
            stage=shown_stage(row.onboarding_stage, row.invite_after, today),
        )
        for row in found[:PAGE_SIZE]
    ]
    next_after = found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None
    return OrderPage(rows, next_after)


def shown_stage(stored: str, invite_after: date | None, today: date) -> str:
    if stored == "not_due" and invite_after is not None and invite_after <= today:
        return "due"
    return stored


def order_in_scope(session: Session, staff: StaffMember, order_number: str) -> Order | None:
    """The order with this number if ``staff`` may see it; None otherwise (as if it did not exist)."""
    if not is_order_number(order_number):
        return None
    return session.scalar(scoped(staff, select(Order).where(Order.order_number == order_number), Order))


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    what: str  # a kind: an order event's, "invitation", "email", "support_request", an audit event's
    detail: str
    actor: str = ""


@dataclass
class OrderTimeline:
    funnel: Any
    entries: list[TimelineEntry] = field(default_factory=list)


def timeline(session: Session, order: Order, *, now: datetime) -> OrderTimeline:
    """Everything that happened to the order, oldest first: its events, invitations, the emails
    about it and their delivery, support requests, and the audit entries of its buyer's ID."""
    entries = [
        TimelineEntry(e.at, e.kind, e.detail or "", e.actor)
        for e in session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id))
    ]
    invitation_ids = []
    for invitation in session.scalars(select(Invitation).where(Invitation.order_id == order.id)):
        invitation_ids.append(invitation.id)
        entries.append(TimelineEntry(invitation.created_at, "invitation", invitation.email))
        if invitation.opened_at:
            entries.append(TimelineEntry(invitation.opened_at, "invitation_opened", ""))
        if invitation.revoked_at:
            entries.append(
                TimelineEntry(invitation.revoked_at, "invitation_revoked", invitation.revoked_reason or "")
            )
    if invitation_ids:
        for message in session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.channel == "email",
                OutboxMessage.purpose.in_([invitations.PURPOSE_INVITATION, invitations.PURPOSE_REMINDER]),
                OutboxMessage.reference_id.in_(invitation_ids),
            )
        ):
            entries.append(
                TimelineEntry(
                    message.created_at,
                    "email",
                    f"{message.purpose}: {message.state}"
                    + (f" ({message.last_error})" if message.last_error else ""),
                )
            )
    for request in session.scalars(select(SupportRequest).where(SupportRequest.order_id == order.id)):
        entries.append(
            TimelineEntry(request.created_at, "support_request", f"{request.kind}: {request.status}")
        )
    if order.account_id is not None:
        for event in session.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == order.account_id)
            .order_by(AuditEvent.id)
            .limit(200)
        ):
            entries.append(TimelineEntry(event.at, event.kind, "", event.actor))
    entries.sort(key=lambda entry: entry.at)
    return OrderTimeline(invitations.funnel(session, order, now=now), entries)
