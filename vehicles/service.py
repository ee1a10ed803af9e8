"""Rules for dealers, models and orders: validation, upsert, the invitation-due rule, CSV import.

Nothing here commits: the request or job that calls it owns the transaction.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onboarding.errors import FieldError, NotFound, ValidationFailed
from onboarding.i18n import LANGUAGES, normalise_language
from vehicles.models import (
    CLOSED_STATUSES,
    Dealer,
    Order,
    OrderEvent,
    ProductionStatus,
    VehicleModel,
)
from vehicles.schemas import DealerIn, OrderIn, VehicleModelIn
from vehicles.vin import check_vin

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
KNOWN_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_ORDER_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")


@dataclass(frozen=True)
class Scope:
    """Which markets a caller may touch; ``countries=None`` means all of them."""

    countries: frozenset[str] | None = None

    def allows(self, country: str) -> bool:
        return self.countries is None or country in self.countries


ALL_MARKETS = Scope()


# --- field rules -------------------------------------------------------------------------------


def check_code(value: str, name: str) -> list[FieldError]:
    if not _CODE.match(value):
        return [FieldError(name, "Use 1-32 letters, digits, '.', '_' or '-'.")]
    return []


def clean_email(value: str, name: str, errors: list[FieldError]) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        errors.append(FieldError(name, f"Not a valid email address: {exc}"))
        return value


def clean_phone(value: str, country: str, name: str, errors: list[FieldError]) -> str:
    region = country if country in KNOWN_COUNTRIES else None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        errors.append(
            FieldError(name, "Not a phone number; give it with the country code, e.g. +46 70 123 45 67.")
        )
        return value
    if not phonenumbers.is_valid_number(number):
        errors.append(FieldError(name, f"Not a valid phone number for {region or 'any country'}."))
        return value
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_country(value: str, name: str, errors: list[FieldError]) -> str:
    code = value.strip().upper()
    if code not in KNOWN_COUNTRIES:
        errors.append(
            FieldError(name, f"Unknown country '{value}'; use an ISO 3166-1 alpha-2 code such as SE.")
        )
    return code


def clean_language(value: str, name: str, errors: list[FieldError]) -> str:
    code = normalise_language(value)
    if code is None:
        errors.append(FieldError(name, f"Unsupported language '{value}'; use one of {', '.join(LANGUAGES)}."))
        return value
    return code


def clean_name(value: str, name: str, errors: list[FieldError]) -> str:
    cleaned = " ".join(value.split())
    if not cleaned:
        errors.append(FieldError(name, "Must not be empty."))
    elif len(cleaned) > 100:
        errors.append(FieldError(name, "At most 100 characters."))
    elif any(ch in cleaned for ch in '<>"@;{}'):
        errors.append(FieldError(name, "Contains characters that are not used in names."))
    return cleaned


# --- reference data ----------------------------------------------------------------------------


def upsert_dealer(session: Session, code: str, data: DealerIn, now: datetime) -> tuple[Dealer, bool]:
    errors = check_code(code, "dealer_code")
    country = clean_country(data.country, "country", errors)
    email = clean_email(data.email, "email", errors)
    language = clean_language(data.language, "language", errors)
    phone = clean_phone(data.phone, country, "phone", errors) if data.phone else None
    name = clean_name(data.name, "name", errors)
    if errors:
        raise ValidationFailed(errors)
    dealer = session.get(Dealer, code)
    created = dealer is None
    if dealer is None:
        dealer = Dealer(code=code)
        session.add(dealer)
    dealer.name, dealer.country, dealer.email = name, country, email
    dealer.phone, dealer.language, dealer.updated_at = phone, language, now
    return dealer, created


def upsert_model(
    session: Session, code: str, data: VehicleModelIn, now: datetime
) -> tuple[VehicleModel, bool]:
    errors = check_code(code, "model_code")
    services: dict[str, list[str]] = {}
    for country, names in data.services.items():
        cc = clean_country(country, f"services.{country}", errors)
        services[cc] = sorted(set(names))
    if errors:
        raise ValidationFailed(errors)
    model = session.get(VehicleModel, code)
    created = model is None
    if model is None:
        model = VehicleModel(code=code)
        session.add(model)
    model.name, model.model_year, model.powertrain = data.name.strip(), data.model_year, data.powertrain.value
    model.requires_security_pin, model.offers_data_pass = data.requires_security_pin, data.offers_data_pass
    model.services, model.updated_at = services, now
    return model, created


# --- orders ------------------------------------------------------------------------------------


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
    """Dealer and model codes looked up once per import rather than once per row."""

    dealers: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, session: Session) -> ReferenceCache:
        return cls(set(session.scalars(select(Dealer.code))), set(session.scalars(select(VehicleModel.code))))


def validate_order(
    session: Session,
    order_number: str,
    data: OrderIn,
    *,
    today: date,
    reference: ReferenceCache | None = None,
) -> CleanOrder:
    """Every rule of SPEC §3.1 at once; raises ``ValidationFailed`` naming each bad field."""
    errors: list[FieldError] = []
    if not _ORDER_NUMBER.match(order_number):
        errors.append(FieldError("order_number", "Use 1-64 letters, digits, '.', '_', '/' or '-'."))
    country = clean_country(data.country, "country", errors)
    known_dealer = (
        (data.dealer_code in reference.dealers)
        if reference
        else (session.get(Dealer, data.dealer_code) is not None)
    )
    if not known_dealer:
        errors.append(FieldError("dealer_code", f"Unknown dealer '{data.dealer_code}'.", "unknown"))
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
    first = clean_name(data.buyer_first_name, "buyer_first_name", errors)
    last = clean_name(data.buyer_last_name, "buyer_last_name", errors)
    email = clean_email(data.buyer_email, "buyer_email", errors)
    phone = clean_phone(data.buyer_phone, country, "buyer_phone", errors)
    language = clean_language(data.language, "language", errors)
    if not (date(2000, 1, 1) <= data.planned_delivery_date <= today + timedelta(days=3 * 366)):
        errors.append(
            FieldError("planned_delivery_date", "Not a plausible delivery date (more than three years away).")
        )
    if vin and not errors:
        clash = session.scalar(
            select(Order.order_number).where(
                Order.vin == vin,
                Order.order_number != order_number,
                Order.production_status != ProductionStatus.CANCELLED,
            )
        )
        if clash:
            errors.append(FieldError("vin", f"This VIN belongs to order {clash} already.", "duplicate"))
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


def upsert_order(
    session: Session,
    clean: CleanOrder,
    *,
    now: datetime,
    actor: str,
    lead_days: int,
    scope: Scope = ALL_MARKETS,
) -> tuple[Order, bool, list[str]]:
    """Create or update an order; returns (order, created, changed field names)."""
    order = session.scalar(select(Order).where(Order.order_number == clean.order_number))
    if not scope.allows(clean.country) or (order is not None and not scope.allows(order.country)):
        raise NotFound(clean.order_number)
    created = order is None
    if order is None:
        order = Order(
            order_number=clean.order_number,
            created_at=now,
            updated_at=now,
            production_status=ProductionStatus.ORDERED,
        )
        session.add(order)
    changed = [name for name in _TRACKED if getattr(order, name, None) != getattr(clean, name)]
    email_changed = not created and order.buyer_email.lower() != clean.buyer_email.lower()
    for name in _TRACKED:
        setattr(order, name, getattr(clean, name))
    if clean.production_status and clean.production_status != order.production_status:
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
    session.flush()
    if created:
        add_event(session, order, "created", actor, now)
    elif changed:
        add_event(session, order, "updated", actor, now, ", ".join(changed))
    return order, created, changed


def _vin_onboarded_by(session: Session, order: Order) -> bool:
    """Whether this buyer already finished onboarding for this vehicle under another order."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.vin == order.vin,
                Order.id != order.id,
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
    add_event(session, order, "status", actor, now, f"{order.production_status} -> {status.value}")
    order.production_status = status.value
    order.updated_at = now
    refresh_invitation_due(order, lead_days)


def set_vin(session: Session, order: Order, raw_vin: str, *, now: datetime, actor: str) -> list[str]:
    result = check_vin(raw_vin, order.country)
    errors = [FieldError("vin", p.message, p.code) for p in result.problems]
    if not errors:
        clash = session.scalar(
            select(Order.order_number).where(
                Order.vin == result.vin,
                Order.id != order.id,
                Order.production_status != ProductionStatus.CANCELLED,
            )
        )
        if clash:
            errors.append(FieldError("vin", f"This VIN belongs to order {clash} already.", "duplicate"))
    if errors:
        raise ValidationFailed(errors)
    if order.vin != result.vin:
        add_event(session, order, "vin", actor, now, result.vin)
        order.vin = result.vin
        order.updated_at = now
    return result.hints


# --- CSV import --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    field: str
    message: str


@dataclass
class ImportReport:
    rows: int = 0
    valid: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    dry_run: bool = False
    imported: bool = False
    errors: list[RowError] = field(default_factory=list)
    hints: list[RowError] = field(default_factory=list)


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"]) or "row"
        out.append(FieldError(name, err["msg"]))
    return out


def import_orders_csv(
    session: Session,
    text: str,
    *,
    now: datetime,
    actor: str,
    lead_days: int,
    dry_run: bool = False,
    skip_invalid: bool = False,
    scope: Scope = ALL_MARKETS,
) -> ImportReport:
    """Validate every row first; import nothing from a file with errors unless ``skip_invalid``."""
    report = ImportReport(dry_run=dry_run)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        if missing:
            report.errors.append(RowError(1, "header", f"Missing columns: {', '.join(missing)}."))
        if unknown:
            report.errors.append(RowError(1, "header", f"Unknown columns: {', '.join(unknown)}."))
        return report
    reference = ReferenceCache.load(session)
    seen: dict[str, int] = {}
    valid: list[tuple[int, CleanOrder]] = []
    for row_number, row in enumerate(reader, start=2):
        report.rows += 1
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            report.errors.append(RowError(row_number, "row", "More values than columns."))
            continue
        number = values.pop("order_number", "")
        row_errors: list[FieldError] = []
        if number in seen:
            row_errors.append(FieldError("order_number", f"Repeats row {seen[number]}.", "duplicate"))
        seen.setdefault(number, row_number)
        try:
            data = OrderIn.model_validate({k: (v or None) if k == "vin" else v for k, v in values.items()})
        except ValidationError as exc:
            row_errors.extend(_pydantic_errors(exc))
        else:
            try:
                clean = validate_order(session, number, data, today=now.date(), reference=reference)
                if not scope.allows(clean.country):
                    row_errors.append(
                        FieldError("country", "Outside the markets you may import for.", "forbidden")
                    )
            except ValidationFailed as exc:
                row_errors.extend(exc.errors)
        if row_errors:
            report.errors.extend(RowError(row_number, e.field, e.message) for e in row_errors)
            continue
        report.hints.extend(RowError(row_number, "vin", h) for h in clean.hints)
        valid.append((row_number, clean))
    report.valid = len(valid)
    report.skipped = report.rows - report.valid
    if dry_run or (report.errors and not skip_invalid):
        return report
    for _row, clean in valid:
        _order, created, _changed = upsert_order(
            session, clean, now=now, actor=actor, lead_days=lead_days, scope=scope
        )
        report.created += created
        report.updated += not created
    report.imported = True
    return report
