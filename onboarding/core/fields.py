"""Field rules shared by IDs, orders and support requests: email, phone, country, language, names.
Each appends its FieldError to the caller's list and returns the cleaned value."""

from __future__ import annotations

import functools
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from onboarding.core.errors import FieldError
from onboarding.core.i18n import LANGUAGES, N_, normalise_language

KNOWN_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)


# email_validator spends most of its time on the domain (IDNA mapping, a Unicode check per
# character), and the addresses of an import share a few domains. So for the common shape, a
# dot-atom of ASCII atext before the @ and an ASCII domain, the library judges each domain once and
# this pattern the part before the @; every other address goes through the library whole. Both paths
# give the same answers (a property test holds them to it); a 460,000-row CSV import checks its rows
# in about two thirds of the time.
_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


_CASE_INSENSITIVE_LOCAL_PARTS = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


_EMAIL_MAX_LENGTH = 254  # RFC 3696 errata 1690, as email_validator counts it


_LOCAL_PART_MAX_LENGTH = 64


@functools.lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> str | None:
    """The normalised form of an ASCII domain that email_validator accepts, else None."""
    try:
        normalized = validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None
    return normalized if normalized.isascii() else None


def _plain_email(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if (
        not at
        or len(local) > _LOCAL_PART_MAX_LENGTH
        or not domain.isascii()
        or not _PLAIN_LOCAL_PART.match(local)
        or local.lower() in _CASE_INSENSITIVE_LOCAL_PARTS
    ):
        return None
    normal_domain = _plain_domain(domain)
    if normal_domain is None or len(local) + 1 + len(normal_domain) > _EMAIL_MAX_LENGTH:
        return None
    return f"{local}@{normal_domain}"


def clean_email(value: str, name: str, errors: list[FieldError]) -> str:
    value = value.strip()
    if (plain := _plain_email(value)) is not None:
        return plain
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        errors.append(FieldError(name, _email_problem(value, exc)))
        return value


# What is wrong with an address, in a few words of our own: email_validator's messages are long,
# English only and sometimes beside the point (an empty field "must have an @-sign"). Pages show
# these in the reader's language (``field_message``); the API answers them in English.
EMAIL_EMPTY = N_("Enter an email address.")
EMAIL_NO_AT = N_("Not a valid email address: it needs an @, as in name@example.com.")
EMAIL_BAD_LOCAL_PART = N_("Not a valid email address: the part before the @ is not valid.")
EMAIL_BAD_DOMAIN = N_("Not a valid email address: the part after the @ is not a valid domain.")
EMAIL_TOO_LONG = N_("Not a valid email address: it is too long.")
EMAIL_INVALID = N_("Not a valid email address.")


@functools.lru_cache(maxsize=1024)
def _valid_address(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _email_problem(value: str, exc: EmailNotValidError) -> str:
    """Which of our messages says what is wrong with ``value`` (stripped), which the library refused."""
    if not value:
        return EMAIL_EMPTY
    if "@" not in value:
        return EMAIL_NO_AT
    local, _, domain = value.partition("@")  # as the library splits it
    if "too long" in str(exc) or len(value) > _EMAIL_MAX_LENGTH or len(local) > _LOCAL_PART_MAX_LENGTH:
        return EMAIL_TOO_LONG
    local_ok = bool(local) and _valid_address(f"{local}@example.com")
    domain_ok = bool(domain) and _valid_address(f"a@{domain}")
    if local_ok and not domain_ok:
        return EMAIL_BAD_DOMAIN
    if domain_ok and not local_ok:
        return EMAIL_BAD_LOCAL_PART
    return EMAIL_INVALID


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
