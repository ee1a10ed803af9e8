"""``clean_email``'s quick path for plain addresses gives exactly email_validator's answers."""

from __future__ import annotations

import string

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onboarding.core.errors import FieldError
from onboarding.core.fields import _plain_email, clean_email

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# Characters that make an address plain or not, and the places the library is strict about.
local_parts = st.text(alphabet=ATEXT + '.". @\\é(),:;<>[]', min_size=0, max_size=70)
labels = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=0, max_size=65),
    st.sampled_from(["xn--bcher-kva", "bücher", "xn--", "123", "-a", "a-", "LOCAL", "test", "onion", "arpa"]),
)
domains = st.lists(labels, min_size=1, max_size=5).map(".".join) | st.sampled_from(
    ["localhost", "example.local", "a.test", "[127.0.0.1]", "Example.COM", "x.invalid", "mail.example.org."]
)


def library(value: str) -> str | None:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@settings(max_examples=3000, deadline=None)
@given(local=local_parts, domain=domains)
@example(local="Postmaster", domain="example.com")
@example(local="a" * 64, domain="b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 50)
@example(local="a" * 65, domain="example.com")
@example(local="a..b", domain="example.com")
@example(local=".a", domain="example.com")
@example(local="Anna.Berg+car", domain="Mail.Example.COM")
def test_the_quick_path_agrees_with_email_validator(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    expected = library(value)
    quick = _plain_email(value.strip())
    if quick is not None:
        assert quick == expected, value
    errors: list[FieldError] = []
    cleaned = clean_email(value, "email", errors)
    if expected is None:
        assert errors and errors[0].field == "email"
    else:
        assert (cleaned, errors) == (expected, [])


def test_plain_addresses_take_the_quick_path() -> None:
    assert _plain_email("Anna.Berg+car@Mail.Example.COM") == "Anna.Berg+car@mail.example.com"
    assert _plain_email("jörg@example.com") is None  # the library decides (SMTPUTF8)
    assert _plain_email("anna@bücher.example") is None
    assert _plain_email("anna@localhost") is None
