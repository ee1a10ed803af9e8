import pytest

from vehicles.vin import CHECK_DIGIT_MARKETS, check_vin, vin_check_character

# Classic textbook example; check digit 'X' (remainder 10).
TEXTBOOK_VIN = "1M8GDM9AXKP042788"
# Honda Accord VIN; weighted sum 311, 311 mod 11 = 3, verified by hand.
HONDA_VIN = "1HGCM82633A004352"
# TEXTBOOK_VIN with the check digit replaced by a wrong one.
BAD_CHECK_VIN = "1M8GDM9A1KP042788"


@pytest.mark.parametrize("vin", [TEXTBOOK_VIN, HONDA_VIN])
@pytest.mark.parametrize("country", ["US", "CN", "DE", "SE"])
def test_real_vins_with_correct_check_digit_pass(vin: str, country: str) -> None:
    result = check_vin(vin, country)
    assert result.ok
    assert result.problems == []
    assert result.hints == []
    assert result.vin == vin


def test_check_character_values() -> None:
    assert vin_check_character(TEXTBOOK_VIN) == "X"
    assert vin_check_character(HONDA_VIN) == "3"
    assert vin_check_character(BAD_CHECK_VIN) == "X"


def test_check_character_rejects_malformed_vin() -> None:
    with pytest.raises(ValueError):
        vin_check_character("1M8GDM9AXKP04278")
    with pytest.raises(ValueError):
        vin_check_character("1M8GDM9AXKP04278O")


@pytest.mark.parametrize("raw, given", [(TEXTBOOK_VIN[:16], 16), (TEXTBOOK_VIN + "1", 18), ("", 0)])
def test_wrong_length_says_how_many(raw: str, given: int) -> None:
    result = check_vin(raw, "US")
    assert not result.ok
    codes = [p.code for p in result.problems]
    assert codes == ["length"]
    assert "17" in result.problems[0].message
    assert f"{given} were given" in result.problems[0].message


def test_look_alike_letters_named_by_position_with_replacement() -> None:
    raw = "1M8GDM9AXKPO42788"  # 'O' typed at position 12 instead of '0'
    result = check_vin(raw, "US")
    assert not result.ok
    assert [p.code for p in result.problems] == ["look_alike"]
    assert result.problems[0].message == "position 12: 'O' is not used in VINs; did you mean '0'?"
    assert any(TEXTBOOK_VIN in hint and "check digit is correct" in hint for hint in result.hints)


def test_i_and_q_suggest_digits() -> None:
    result = check_vin("IM8GDM9AXKP04278Q", "DE")
    messages = [p.message for p in result.problems]
    assert messages == [
        "position 1: 'I' is not used in VINs; did you mean '1'?",
        "position 17: 'Q' is not used in VINs; did you mean '0'?",
    ]


def test_lowercase_spaces_and_hyphens_are_normalised() -> None:
    result = check_vin("  1m8gdm9a-xkp 042788 ", "us")
    assert result.vin == TEXTBOOK_VIN
    assert result.ok


@pytest.mark.parametrize("country", ["US", "CN", "ca", "MX"])
def test_bad_check_digit_blocks_in_check_digit_markets(country: str) -> None:
    result = check_vin(BAD_CHECK_VIN, country)
    assert not result.ok
    assert [p.code for p in result.problems] == ["check_digit"]
    assert "'X'" in result.problems[0].message


@pytest.mark.parametrize("country", ["DE", "SE"])
def test_bad_check_digit_is_only_a_hint_elsewhere(country: str) -> None:
    assert country not in CHECK_DIGIT_MARKETS
    result = check_vin(BAD_CHECK_VIN, country)
    assert result.ok
    assert len(result.hints) == 1
    assert "'X'" in result.hints[0]


def test_invalid_symbol_named_by_position() -> None:
    result = check_vin("1M8GDM9AXKP0427*8", "US")
    assert not result.ok
    assert [p.code for p in result.problems] == ["invalid_character"]
    assert result.problems[0].message.startswith("position 16: '*'")
