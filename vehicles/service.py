"""Rules for dealers, models and orders: validation, upsert, the invitation-due rule (the CSV import
is in ``vehicles.csv_import``).

Nothing here commits: the request or job that calls it owns the transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onboarding.core.db import Base
from onboarding.core.errors import FieldError, NotFound, ValidationFailed
from onboarding.core.fields import clean_country, clean_email, clean_language, clean_name, clean_phone
from onboarding.core.scope import ALL_MARKETS, Scope
from onboarding.core.text_rules import check_text, unsafe_character
from vehicles.catalogue import parse_services
from vehicles.models import (
    CLOSED_STATUSES,
    Dealer,
    Order,
    OrderEvent,
    ProductionStatus,
    VehicleModel,
)
from vehicles.schemas import DealerIn, OrderIn, VehicleModelIn, flatten_buyer
from vehicles.vin import check_vin

ReferenceRow = TypeVar("ReferenceRow", Dealer, VehicleModel)


CSV_COLUMNS = (
    "order_number",
    "dealer_code",
    "model_code",
    "vin",
    "buyer_first_name",
    "buyer_last_name",
    "buyer_email",
    "buyer_phone",
    "country",
    "language",
    "planned_delivery_date",
)


_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


_ORDER_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")


def is_order_number(text: str) -> bool:
    """Whether ``text`` could be an order number (what ``validate_order`` accepts): a lookup of
    anything else finds nothing, and is not sent to the database (PostgreSQL refuses a NUL)."""
    return _ORDER_NUMBER.fullmatch(text) is not None


def check_code(value: str, name: str) -> list[FieldError]:
    if not _CODE.match(value):
        return [FieldError(name, "Use 1-32 letters, digits, '.', '_' or '-'.")]
    return []


def upsert_dealer(session: Session, code: str, data: DealerIn, now: datetime) -> tuple[Dealer, bool]:
    errors = check_code(code, "dealer_code")
    country = clean_country(data.country, "country", errors)
    email = clean_email(data.email, "email", errors)
    language = clean_language(data.language, "language", errors)
    phone = clean_phone(data.phone, country, "phone", errors) if data.phone else None
    name = clean_name(data.name, "name", errors)
    if errors:
        raise ValidationFailed(errors)
    values = {"name": name, "country": country, "email": email, "phone": phone, "language": language}
    return _upsert_by_code(session, Dealer, code, values, now)


def upsert_model(
    session: Session, code: str, data: VehicleModelIn, now: datetime
) -> tuple[VehicleModel, bool]:
    errors = check_code(code, "model_code")
    services = parse_services(
        {
            country: [entry.model_dump() if isinstance(entry, BaseModel) else entry for entry in entries]
            for country, entries in data.services.items()
        },
        errors,
    )
    if errors:
        raise ValidationFailed(errors)
    values = {
        "name": data.name.strip(),
        "model_year": data.model_year,
        "powertrain": data.powertrain.value,
        "requires_security_pin": data.requires_security_pin,
        "offers_data_pass": data.offers_data_pass,
        "services": services,
    }
    return _upsert_by_code(session, VehicleModel, code, values, now)


def _upsert_by_code(
    session: Session, table: type[ReferenceRow], code: str, values: dict[str, Any], now: datetime
) -> tuple[ReferenceRow, bool]:
    """Creates or updates the reference row ``code``; returns (row, created). A create that loses a
    race with another request's create becomes an update of that row."""
    row = session.get(table, code)
    if row is None:
        row = table(code=code, updated_at=now, **values)
        refused = insert_once(session, row)
        if refused is None:
            return row, True
        row = session.get(table, code)
        if row is None:
            raise refused
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = now
    return row, False


def insert_once(session: Session, row: Base) -> IntegrityError | None:
    """Inserts ``row`` in a savepoint. When a constraint refuses it (typically: a concurrent request
    inserted the same key after this one looked), the error is returned, not raised: the savepoint is
    rolled back and the transaction goes on, so the caller can take the other request's row instead
    (on PostgreSQL the insert waits for that request's commit, then sees its row)."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        return exc
    return None


@dataclass
class CleanOrder:
    order_number: str
    dealer_code: str
    model_code: str
    vin: str | None
    buyer_first_name: str
    buyer_last_name: str
    buyer_email: str
    buyer_phone: str
    country: str
    language: str
    planned_delivery_date: date
    production_status: str | None
    hints: list[str] = field(default_factory=list)


@dataclass
class ReferenceCache:
    """Dealer codes (with their countries) and model codes, looked up once per import rather than once
    per row."""

    dealers: dict[str, str] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, session: Session) -> ReferenceCache:
        dealers = {code: country for code, country in session.execute(select(Dealer.code, Dealer.country))}
        return cls(dealers, set(session.scalars(select(VehicleModel.code))))


# Planned delivery dates: before the earliest or beyond the latest is no delivery date at all (a typing
# error such as 2206 for 2026) and refused; in the past, or further ahead than a car is ordered, the
# order is stored with a warning (an update of a delivered order carries its past date; the order
# system, not this service, owns the date, and refusing it would block the order's other fields).
EARLIEST_DELIVERY = date(2000, 1, 1)
REFUSED_BEYOND = timedelta(days=10 * 366)
WARNED_BEYOND = timedelta(days=3 * 366)
# Stands in for a field that failed parsing, so that the other fields' rules still run.
_PLACEHOLDERS: dict[str, Any] = {"vin": None, "production_status": None}


@dataclass
class ParsedOrder:
    """An order as parsed: ``data`` is None when the input is not an object at all; otherwise fields
    that did not parse (named in ``errors``) hold placeholders in ``data``."""

    data: OrderIn | None
    errors: list[FieldError]


def parse_order(raw: Any, *, today: date, whole: str = "body") -> ParsedOrder:
    """Parses ``raw`` as ``OrderIn``. A field that fails parsing (a bad date, a number for a text)
    is named in ``errors`` and replaced by a placeholder, so that ``validate_order`` can still check
    every other field: one answer names every bad field. ``whole`` names the input as a whole."""
    try:
        return ParsedOrder(OrderIn.model_validate(raw), [])
    except ValidationError as exc:
        errors = _parsing_errors(exc, whole)
    flat = flatten_buyer(raw)
    if not isinstance(flat, dict):
        return ParsedOrder(None, errors)
    patched = dict(flat)
    for error in errors:
        name = error.field.partition(".")[0]
        if name in OrderIn.model_fields:
            patched[name] = _PLACEHOLDERS.get(name, today if name == "planned_delivery_date" else "-")
        else:
            patched.pop(name, None)  # an unknown member (named in the errors)
    try:
        return ParsedOrder(OrderIn.model_validate(patched), errors)
    except ValidationError:
        return ParsedOrder(None, errors)


def _parsing_errors(exc: ValidationError, whole: str) -> list[FieldError]:
    out = []
    for err in exc.errors():
        # A member name the client sent may itself hold what the text rule refuses; never echo it raw.
        parts = [str(p) for p in err["loc"]]
        name = ".".join(p if unsafe_character(p) is None else ascii(p) for p in parts) or whole
        out.append(FieldError(name, err["msg"], err["type"]))
    return out


def check_order(
    session: Session,
    order_number: str,
    raw: Any,
    *,
    today: date,
    reference: ReferenceCache | None = None,
) -> CleanOrder:
    """``parse_order`` then ``validate_order``: raises one ``ValidationFailed`` naming every bad field,
    whether it failed parsing or a rule."""
    parsed = parse_order(raw, today=today)
    if parsed.data is None:
        raise ValidationFailed(parsed.errors)
    return validate_order(
        session, order_number, parsed.data, today=today, reference=reference, parsing_errors=parsed.errors
    )


def validate_order(
    session: Session,
    order_number: str,
    data: OrderIn,
    *,
    today: date,
    reference: ReferenceCache | None = None,
    parsing_errors: Sequence[FieldError] = (),
) -> CleanOrder:
    """Every rule of SPEC §3.1 at once; raises ``ValidationFailed`` naming each bad field.

    ``parsing_errors`` are those of ``parse_order``: they come first, and the rules of the fields they
    name (placeholders in ``data``) are skipped. Warnings (hints) are given only on a valid order."""
    errors: list[FieldError] = list(parsing_errors)
    unparsed = {e.field.partition(".")[0] for e in parsing_errors}
    if (unsafe := check_text("order_number", order_number)) is not None:
        errors.append(unsafe)  # NUL, controls, lone surrogates: the same answer as every text field
    elif not is_order_number(order_number):
        errors.append(FieldError("order_number", "Use 1-64 letters, digits, '.', '_', '/' or '-'."))
    country = "" if "country" in unparsed else clean_country(data.country, "country", errors)
    dealer_country: str | None = None
    if "dealer_code" not in unparsed:
        if reference:
            dealer_country = reference.dealers.get(data.dealer_code)
        else:
            dealer = session.get(Dealer, data.dealer_code)
            dealer_country = dealer.country if dealer else None
        if dealer_country is None:
            errors.append(FieldError("dealer_code", f"Unknown dealer '{data.dealer_code}'.", "unknown"))
    if "model_code" not in unparsed:
        known_model = (
            (data.model_code in reference.models)
            if reference
            else (session.get(VehicleModel, data.model_code) is not None)
        )
        if not known_model:
            errors.append(FieldError("model_code", f"Unknown model '{data.model_code}'.", "unknown"))
    hints: list[str] = []
    vin: str | None = None
    if data.vin and data.vin.strip():
        result = check_vin(data.vin, country)
        vin = result.vin
        errors.extend(FieldError("vin", p.message, p.code) for p in result.problems)
        hints.extend(f"vin: {h}" for h in result.hints)
    first = data.buyer_first_name
    if "buyer_first_name" not in unparsed:
        first = clean_name(data.buyer_first_name, "buyer_first_name", errors)
    last = data.buyer_last_name
    if "buyer_last_name" not in unparsed:
        last = clean_name(data.buyer_last_name, "buyer_last_name", errors)
    email = data.buyer_email
    if "buyer_email" not in unparsed:
        email = clean_email(data.buyer_email, "buyer_email", errors)
    phone = data.buyer_phone
    if "buyer_phone" not in unparsed:
        phone = clean_phone(data.buyer_phone, country, "buyer_phone", errors)
    language = data.language
    if "language" not in unparsed:
        language = clean_language(data.language, "language", errors)
    planned = data.planned_delivery_date
    if "planned_delivery_date" not in unparsed:
        if not (EARLIEST_DELIVERY <= planned <= today + REFUSED_BEYOND):
            errors.append(
                FieldError(
                    "planned_delivery_date",
                    "Not a plausible delivery date (before 2000 or more than ten years ahead).",
                )
            )
        elif planned < today and data.production_status not in CLOSED_STATUSES:
            # (A delivered or cancelled order's date is expected to have passed.)
            hints.append(
                f"planned_delivery_date: {planned.isoformat()} has passed; the order is kept, and its "
                "invitation does not name that date."
            )
        elif planned > today + WARNED_BEYOND:
            hints.append(
                f"planned_delivery_date: {planned.isoformat()} is more than three years ahead; the "
                "invitation waits until shortly before it."
            )
    known_country = "country" not in unparsed and not any(e.field == "country" for e in errors)
    if dealer_country is not None and known_country and dealer_country != country:
        hints.append(
            f"dealer_code: dealer {data.dealer_code} is in {dealer_country}, the order in {country}; "
            "check the dealer code or the country."
        )
    if vin and not errors and (holder := vin_holder(session, vin, other_than=order_number)):
        errors.append(vin_taken(holder))
    if errors:
        raise ValidationFailed(errors)
    return CleanOrder(
        order_number=order_number,
        dealer_code=data.dealer_code,
        model_code=data.model_code,
        vin=vin,
        buyer_first_name=first,
        buyer_last_name=last,
        buyer_email=email,
        buyer_phone=phone,
        country=country,
        language=language,
        planned_delivery_date=data.planned_delivery_date,
        production_status=data.production_status.value if data.production_status else None,
        hints=hints,
    )


def refresh_invitation_due(order: Order, lead_days: int) -> None:
    """The due rule of SPEC §3.1, kept as one column: due from ``planned - lead_days`` unless the
    order is closed, onboarded or already invited. A date moved later before sending defers it; moved
    earlier into the window makes it due at once (the scheduler takes every ``invite_after <= today``)."""
    if order.production_status in CLOSED_STATUSES or order.onboarded_at or order.invited_at:
        order.invite_after = None
    else:
        order.invite_after = order.planned_delivery_date - timedelta(days=lead_days)


def add_event(
    session: Session, order: Order, kind: str, actor: str, now: datetime, detail: str | None = None
) -> None:
    session.add(OrderEvent(order_id=order.id, at=now, kind=kind, actor=actor, detail=detail))


# The fields an order update may change (all but the order number, which identifies it).
_TRACKED = CSV_COLUMNS[1:]


def vin_holder(session: Session, vin: str, *, other_than: str) -> str | None:
    """The number of the live (not cancelled) order other than ``other_than`` that has this VIN. The
    partial unique index ``uq_orders_vin_live`` holds the same rule against concurrent writers."""
    return session.scalar(
        select(Order.order_number)
        .where(
            Order.vin == vin,
            Order.order_number != other_than,
            Order.production_status != ProductionStatus.CANCELLED,
        )
        .limit(1)
    )


def vin_taken(holder: str, field: str = "vin") -> FieldError:
    return FieldError(field, f"This VIN belongs to order {holder} already.", "duplicate")


def _refuse_taken_vin(
    session: Session, vin: str | None, order_number: str, refused: IntegrityError, field: str = "vin"
) -> NoReturn:
    """After ``refused`` (a constraint violation): a VIN another live order took meanwhile is the
    caller's mistake, a 422 on ``vin``; anything else is raised as it is."""
    holder = vin_holder(session, vin, other_than=order_number) if vin else None
    if holder is None:
        raise refused
    raise ValidationFailed([vin_taken(holder, field)]) from refused


def upsert_order(
    session: Session,
    clean: CleanOrder,
    *,
    now: datetime,
    actor: str,
    lead_days: int,
    scope: Scope = ALL_MARKETS,
) -> tuple[Order, bool, list[str]]:
    """Create or update an order; returns (order, created, changed field names).

    Safe against concurrent calls for one order number (the first creates it, the others update
    it) and for one VIN (the database's unique index decides; the loser gets the 422 on ``vin``)."""
    order = _numbered(session, clean.order_number)
    if not scope.allows(clean.country) or (order is not None and not scope.allows(order.country)):
        raise NotFound(clean.order_number)
    if order is None:
        order = Order(
            order_number=clean.order_number,
            created_at=now,
            production_status=ProductionStatus.ORDERED,
        )
        changed = _apply(session, order, clean, now=now, lead_days=lead_days)
        refused = insert_once(session, order)
        if refused is None:
            add_event(session, order, "created", actor, now)
            return order, True, changed
        # Another request created this order since the lookup (this one updates it), or took its VIN.
        found = _numbered(session, clean.order_number)
        if found is None:
            _refuse_taken_vin(session, clean.vin, clean.order_number, refused)
        if not scope.allows(found.country):
            raise NotFound(clean.order_number)
        order = found
    try:
        with session.begin_nested():
            changed = _apply(session, order, clean, now=now, lead_days=lead_days)
    except IntegrityError as refused:
        _refuse_taken_vin(session, clean.vin, clean.order_number, refused)
    if changed:
        add_event(session, order, "updated", actor, now, ", ".join(changed))
    return order, False, changed


def _numbered(session: Session, order_number: str) -> Order | None:
    return session.scalar(select(Order).where(Order.order_number == order_number))


def _apply(session: Session, order: Order, clean: CleanOrder, *, now: datetime, lead_days: int) -> list[str]:
    """Gives ``order`` (new or stored) the values of ``clean`` and what follows from them; returns the
    names of the fields that changed."""
    created = order.id is None
    changed = [name for name in _TRACKED if getattr(order, name, None) != getattr(clean, name)]
    email_changed = not created and order.buyer_email.lower() != clean.buyer_email.lower()
    for name in _TRACKED:
        setattr(order, name, getattr(clean, name))
    if clean.production_status and clean.production_status != order.production_status:
        if not created:
            # Dated on the order's timeline like a status update, for "track your car".
            add_event(
                session,
                order,
                "status",
                "order_system",
                now,
                f"{order.production_status} -> {clean.production_status}",
            )
        order.production_status = clean.production_status
        changed.append("production_status")
    if email_changed and order.invited_at and not order.onboarded_at:
        # The old link names another address: it stops working at once (the landing compares the
        # invitation's address with the order's) and a new invitation becomes due.
        order.invited_at = None
    if order.onboarded_at is None and order.vin and _vin_onboarded_by(session, order):
        order.onboarded_at = now
    order.updated_at = now
    refresh_invitation_due(order, lead_days)
    return changed


def _vin_onboarded_by(session: Session, order: Order) -> bool:
    """Whether this buyer already finished onboarding for this vehicle under another order."""
    others = Order.order_number != order.order_number
    return (
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.vin == order.vin,
                others,
                func.lower(Order.buyer_email) == order.buyer_email.lower(),
                Order.onboarded_at.is_not(None),
            )
        )
        or 0
    ) > 0


def get_order(session: Session, order_number: str, scope: Scope = ALL_MARKETS) -> Order:
    order = session.scalar(select(Order).where(Order.order_number == order_number))
    # Out-of-scope orders answer exactly like missing ones, so their existence does not leak.
    if order is None or not scope.allows(order.country):
        raise NotFound(order_number)
    return order


def set_status(
    session: Session, order: Order, status: ProductionStatus, *, now: datetime, actor: str, lead_days: int
) -> None:
    if order.production_status == status:
        return
    # Reopening a cancelled order: a live order may have taken its VIN meanwhile.
    reopened = order.production_status == ProductionStatus.CANCELLED and order.vin
    if reopened and (holder := vin_holder(session, order.vin or "", other_than=order.order_number)):
        raise ValidationFailed([vin_taken(holder, "production_status")])
    previous = order.production_status
    try:
        with session.begin_nested():
            order.production_status = status.value
            order.updated_at = now
            refresh_invitation_due(order, lead_days)
    except IntegrityError as refused:
        _refuse_taken_vin(session, order.vin, order.order_number, refused, "production_status")
    add_event(session, order, "status", actor, now, f"{previous} -> {status.value}")


def set_vin(session: Session, order: Order, raw_vin: str, *, now: datetime, actor: str) -> list[str]:
    result = check_vin(raw_vin, order.country)
    errors = [FieldError("vin", p.message, p.code) for p in result.problems]
    if not errors and (holder := vin_holder(session, result.vin, other_than=order.order_number)):
        errors.append(vin_taken(holder))
    if errors:
        raise ValidationFailed(errors)
    if order.vin != result.vin:
        try:
            with session.begin_nested():
                order.vin = result.vin
                order.updated_at = now
        except IntegrityError as refused:
            _refuse_taken_vin(session, result.vin, order.order_number, refused)
        add_event(session, order, "vin", actor, now, result.vin)
    return result.hints
