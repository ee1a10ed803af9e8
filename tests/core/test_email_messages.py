"""Email addresses the rule refuses get short messages of our own, in the reader's language on pages and
in English on the API, instead of email_validator's long English texts (issue 11, item 6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from onboarding.core import fields
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError
from onboarding.core.fields import clean_email
from onboarding.core.i18n import field_message, gettext_, use_language
from tests.conftest import Database
from tests.helpers import ID_PASSWORD, csrf, order_payload

CASES = [
    ("", fields.EMAIL_EMPTY),
    ("   ", fields.EMAIL_EMPTY),
    ("astrid", fields.EMAIL_NO_AT),
    ("astrid example.com", fields.EMAIL_NO_AT),
    ("astrid\uff20example.com", fields.EMAIL_NO_AT),  # a full-width at-sign
    ("@example.com", fields.EMAIL_BAD_LOCAL_PART),
    ("astrid..lindqvist@example.com", fields.EMAIL_BAD_LOCAL_PART),
    ('"astrid lindqvist"@example.com', fields.EMAIL_BAD_LOCAL_PART),
    ("astrid@", fields.EMAIL_BAD_DOMAIN),
    ("astrid@example", fields.EMAIL_BAD_DOMAIN),
    ("astrid@exa mple.com", fields.EMAIL_BAD_DOMAIN),
    ("astrid@localhost", fields.EMAIL_BAD_DOMAIN),
    ("astrid@" + "b" * 250 + ".com", fields.EMAIL_TOO_LONG),
    ("Astrid <astrid@example.com>", fields.EMAIL_INVALID),
    ("@", fields.EMAIL_INVALID),
]
MESSAGES = (
    fields.EMAIL_EMPTY,
    fields.EMAIL_NO_AT,
    fields.EMAIL_BAD_LOCAL_PART,
    fields.EMAIL_BAD_DOMAIN,
    fields.EMAIL_TOO_LONG,
    fields.EMAIL_INVALID,
)
# Words of email_validator's own messages, which must not reach a reader.
LIBRARY_WORDS = ("@-sign", "must have", "There must be", "It should have", "not permitted here")


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_each_kind_of_bad_address_gets_its_own_short_message(value: str, expected: str) -> None:
    errors: list[FieldError] = []
    clean_email(value, "email", errors)
    assert [(e.field, e.message) for e in errors] == [("email", expected)]
    assert not any(word in errors[0].text for word in LIBRARY_WORDS)


def test_an_empty_address_asks_for_one_rather_than_for_an_at_sign() -> None:
    errors: list[FieldError] = []
    clean_email("", "email", errors)
    assert errors[0].text == "Enter an email address."


@pytest.mark.parametrize("lang", ["de", "sv", "nb"])
@pytest.mark.parametrize("message", MESSAGES)
def test_the_messages_are_translated(lang: str, message: str) -> None:
    with use_language(lang):
        shown = field_message(FieldError("email", message))
        assert shown == gettext_(message)
    assert shown != message
    assert "Not a valid" not in shown and "email address" not in shown


REGISTRATION = {
    "first_name": "Astrid",
    "last_name": "Lindqvist",
    "birth_date": "1985-04-12",
    "country": "SE",
    "language": "sv",
    "password": ID_PASSWORD,
    "password_confirmation": ID_PASSWORD,
    "accept_terms": "true",
    "accept_privacy": "true",
}


@pytest.mark.parametrize(
    ("lang", "value", "words"),
    [
        ("sv", "astrid@example", "delen efter @ är inte en giltig domän"),
        ("de", "", "Geben Sie eine E-Mail-Adresse ein."),
        ("nb", "astrid", "den må ha en @"),
        ("en", "", "Enter an email address."),
    ],
)
def test_the_registration_page_shows_the_message_in_the_pages_language(
    db: Database, client: TestClient, lang: str, value: str, words: str
) -> None:
    response = client.post(
        "/register",
        data={**csrf(client), **REGISTRATION, "email": value},
        headers={"Accept-Language": lang},
    )
    assert response.status_code == 422, response.text[:300]
    assert words in response.text
    assert "@-sign" not in response.text
    if lang != "en":
        assert "Not a valid email address" not in response.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "Enter an email address."),
        ("astrid example.com", "Not a valid email address: it needs an @, as in name@example.com."),
        ("astrid@", "Not a valid email address: the part after the @ is not a valid domain."),
    ],
)
def test_the_api_answers_in_english(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str], value: str, expected: str
) -> None:
    payload = order_payload((utcnow() + timedelta(days=30)).date(), buyer_email=value)
    response = client.put(
        "/api/v1/orders/SO-1", json=payload, headers={**api_headers, "Accept-Language": "sv"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    messages = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert messages["buyer_email"] == expected
