import pytest

from onboarding.identity.passwords import (
    MIN_PASSWORD_LENGTH,
    common_password_count,
    is_common_password,
    password_problems,
)

PASSPHRASE = "velvet tractor ignores 7 lighthouses"


def test_bundled_list_is_large() -> None:
    assert common_password_count() >= 10_000


@pytest.mark.parametrize("password", ["password123", "Password123", "PASSWORD1", "passw0rd", "qwerty"])
def test_common_passwords_detected_case_insensitively(password: str) -> None:
    assert is_common_password(password)


@pytest.mark.parametrize("password", ["password123", "1234567890", "qwertyuiop"])
def test_common_passwords_refused_even_when_long_enough(password: str) -> None:
    assert len(password) >= MIN_PASSWORD_LENGTH
    problems = password_problems(password)
    assert len(problems) == 1
    assert "common" in problems[0]


def test_long_random_passphrase_accepted() -> None:
    assert not is_common_password(PASSPHRASE)
    assert password_problems(PASSPHRASE, personal=["anna.svensson@example.com", "Anna", "Svensson"]) == []


def test_no_composition_rules() -> None:
    # Only lower-case letters, no digits or symbols: fine as long as it is long and uncommon.
    assert password_problems("plumbingcathedralmoss") == []


def test_nine_characters_refused_ten_accepted() -> None:
    nine = "kx7Qp2vLm"
    assert len(nine) == 9
    problems = password_problems(nine)
    assert len(problems) == 1
    assert str(MIN_PASSWORD_LENGTH) in problems[0]
    assert password_problems(nine + "w") == []


@pytest.mark.parametrize(
    "password, personal",
    [
        ("svensson-rocks-2024", ["Anna", "Svensson"]),
        ("ANNA.SVENSSON", ["anna.svensson"]),
        ("my-annasvensson-key", ["annasvensson@example.com"]),
        ("lindqvist-harbour", ["Karl-Erik Lindqvist"]),
    ],
)
def test_personal_data_refused(password: str, personal: list[str]) -> None:
    problems = password_problems(password, personal)
    assert problems == ["The password must not contain your name or email address."]


def test_short_personal_inputs_ignored() -> None:
    # A three-letter name is too short to count; otherwise "Bob" would block "bobsleigh".
    assert password_problems("bobsleigh-winter-games", ["Bob", "bo@example.com"]) == []
