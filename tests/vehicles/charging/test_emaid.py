"""eMAIDs (ISO 15118-1 / eMI3): the check character against published values, round trips of
generated IDs, both written forms, and refusals that name the field and what is wrong."""

from __future__ import annotations

import random

import pytest

from onboarding.core.errors import ValidationFailed
from vehicles.charging.emaid import ALPHABET, check_character, make_emaid, parse_emaid

KNOWN_GOOD = ["NL-TNM-C00122045-K", "DE-83D-UIEN83QGZ-D", "FR-XYZ-123456789-2", "NN-123-ABCDEFGHI-T"]


@pytest.mark.parametrize("emaid", KNOWN_GOOD)
def test_the_check_character_matches_the_published_values(emaid: str) -> None:
    compact = emaid.replace("-", "")
    assert check_character(compact[:14]) == compact[14]
    assert check_character(compact[:14].lower()) == compact[14]
    assert str(parse_emaid(emaid)) == emaid


@pytest.mark.parametrize("emaid", KNOWN_GOOD)
def test_parsing_takes_the_forms_with_and_without_dashes_in_any_case(emaid: str) -> None:
    compact = emaid.replace("-", "")
    for written in (emaid, compact, compact.lower(), f"  {emaid.lower()} "):
        parsed = parse_emaid(written)
        assert str(parsed) == emaid and parsed.compact == compact


def test_generated_ids_round_trip() -> None:
    rng = random.Random(15118)
    for _ in range(500):
        country = "".join(rng.choice(ALPHABET[10:]) for _ in range(2))
        provider = "".join(rng.choice(ALPHABET) for _ in range(3))
        instance = "".join(rng.choice(ALPHABET) for _ in range(9))
        made = make_emaid(country, provider, instance)
        assert parse_emaid(str(made)) == made
        assert parse_emaid(made.compact) == made
        # Any other check character is refused.
        wrong = rng.choice([c for c in ALPHABET if c != made.check])
        with pytest.raises(ValidationFailed) as refused:
            parse_emaid(made.compact[:14] + wrong)
        assert refused.value.errors[0].code == "check_character"


def test_a_single_wrong_character_or_a_swap_of_neighbours_is_caught() -> None:
    emaid = "NLTNMC00122045K"
    for position in range(14):
        for replacement in ALPHABET:
            if replacement != emaid[position]:
                changed = emaid[:position] + replacement + emaid[position + 1 :]
                assert check_character(changed[:14]) != "K", changed
    for position in range(13):
        if emaid[position] != emaid[position + 1]:
            swapped = emaid[:position] + emaid[position + 1] + emaid[position] + emaid[position + 2 :]
            assert check_character(swapped[:14]) != "K", swapped


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("NL-TNM-C00122045-X", "check_character"),
        ("NL-TNM-C00122045", "check_missing"),
        ("N1-TNM-C00122045-K", "country"),
        ("NL-T_M-C00122045-K", "provider"),
        ("NL-TNM-C0012204!-K", "instance"),
        ("NL-TNM-C0012-K", "format"),
        ("", "format"),
        ("NLTNMC00122045KK", "format"),
    ],
)
def test_a_malformed_or_wrong_id_is_refused_naming_the_field(text: str, code: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_emaid(text, field="contract_id")
    assert [(e.field, e.code) for e in refused.value.errors] == [("contract_id", code)]
