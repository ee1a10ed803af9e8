"""Contract IDs (eMAID) in the ISO 15118-1 / eMI3 form ``CC-PPP-CXXXXXXXX-D``: a country code, a
provider id, a 9-character instance and a check character.

The check character is ISO 15118-1's (the eMI3 "Check Digit Calculation for Contract-IDs"): each of the
36 characters 0-9A-Z stands for a 2x2 matrix with entries in Z2 (first row) and Z3 (second row); the
14 characters are weighted with the powers of two fixed matrices P1 (over Z2) and P2 (over Z3), and the
sum, brought into place with -P2^-15, is the matrix of the check character. It catches every single
wrong character and every swap of neighbours, as the eMI3 paper explains."""

from __future__ import annotations

import re
from dataclasses import dataclass

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# The ISO 15118-1 code of each character: bits 0-1 are the Z2 row (q1, q2), bits 2-3 and 4-5 the Z3
# row (r1, r2).
_CODES = (
    0, 16, 32, 4, 20, 36, 8, 24, 40, 2,  # 0-9
    18, 34, 6, 22, 38, 10, 26, 42, 1, 17, 33, 5, 21, 37, 9, 25, 41, 3, 19, 35, 7, 23, 39, 11, 27, 43,
)  # fmt: skip

Matrix = tuple[int, int, int, int]  # (m11, m12, m21, m22)


def _matrix(code: int) -> Matrix:
    return (code & 1, (code >> 1) & 1, (code >> 2) & 3, code >> 4)


def _times(a: Matrix, b: Matrix) -> Matrix:
    return (
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
    )


def _powers(base: Matrix, count: int) -> list[Matrix]:
    result = [base]
    while len(result) < count:
        result.append(_times(result[-1], base))
    return result


_MATRIX_OF = {char: _matrix(code) for char, code in zip(ALPHABET, _CODES, strict=True)}
_CHAR_OF = {matrix: char for char, matrix in _MATRIX_OF.items()}
_P1 = _powers((0, 1, 1, 1), 14)
_P2 = _powers((0, 1, 1, 2), 14)
_NEG_P2_INV_15: Matrix = (0, 2, 2, 1)


def check_character(base14: str) -> str:
    """The check character of the 14 characters country + provider + instance (no dashes)."""
    text = base14.upper()
    if len(text) != 14 or any(char not in _MATRIX_OF for char in text):
        raise ValueError("an eMAID's check character is computed over 14 characters 0-9 and A-Z")
    q1 = q2 = r1 = r2 = 0
    for position, char in enumerate(text):
        m = _MATRIX_OF[char]
        p1, p2 = _P1[position], _P2[position]
        # The Z2 row times P1, the Z3 row times P2, summed over the positions.
        q1 += m[0] * p1[0] + m[1] * p1[2]
        q2 += m[0] * p1[1] + m[1] * p1[3]
        r1 += m[2] * p2[0] + m[3] * p2[2]
        r2 += m[2] * p2[1] + m[3] * p2[3]
    n = _NEG_P2_INV_15
    t1, t2 = r1 * n[0] + r2 * n[2], r1 * n[1] + r2 * n[3]
    return _CHAR_OF[(q1 & 1, q2 & 1, t1 % 3, t2 % 3)]


@dataclass(frozen=True, slots=True)
class Emaid:
    country: str
    provider: str
    instance: str
    check: str

    def __str__(self) -> str:
        return f"{self.country}-{self.provider}-{self.instance}-{self.check}"

    @property
    def compact(self) -> str:
        return f"{self.country}{self.provider}{self.instance}{self.check}"


_COUNTRY = re.compile(r"[A-Z]{2}")
_PROVIDER = re.compile(r"[A-Z0-9]{3}")
_INSTANCE = re.compile(r"[A-Z0-9]{9}")


def _parts_errors(country: str, provider: str, instance: str, field: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not _COUNTRY.fullmatch(country):
        errors.append(FieldError(field, N_("The country code must be two letters."), "country"))
    if not _PROVIDER.fullmatch(provider):
        errors.append(FieldError(field, N_("The provider id must be three letters or digits."), "provider"))
    if not _INSTANCE.fullmatch(instance):
        errors.append(
            FieldError(field, N_("The contract instance must be nine letters or digits."), "instance")
        )
    return errors


def make_emaid(country: str, provider: str, instance: str) -> Emaid:
    """The eMAID of these parts with its check character."""
    country, provider, instance = country.upper(), provider.upper(), instance.upper()
    errors = _parts_errors(country, provider, instance, "emaid")
    if errors:
        raise ValidationFailed(errors)
    return Emaid(country, provider, instance, check_character(country + provider + instance))


_DASHED = re.compile(r"([^-]{2})-([^-]{3})-([^-]{9})(?:-([^-]))?")


def parse_emaid(text: str, *, field: str = "emaid") -> Emaid:
    """An eMAID written with or without dashes, in any case (``NL-TNM-C00122045-K``,
    ``nltnmc00122045k``); the check character is required and must be right."""
    value = text.strip().upper()
    dashed = _DASHED.fullmatch(value)
    if dashed is not None:
        country, provider, instance, check = dashed.groups()
    elif "-" not in value and len(value) == 15:
        country, provider, instance, check = value[:2], value[2:5], value[5:14], value[14]
    else:
        raise ValidationFailed(
            [
                FieldError(
                    field,
                    N_("A contract ID has the form CC-PPP-CXXXXXXXX-D (15 characters without the dashes)."),
                    "format",
                )
            ]
        )
    errors = _parts_errors(country, provider, instance, field)
    if check is None:
        errors.append(FieldError(field, N_("The contract ID's check character is missing."), "check_missing"))
    if errors:
        raise ValidationFailed(errors)
    assert check is not None
    expected = check_character(country + provider + instance)
    if check != expected:
        raise ValidationFailed(
            [FieldError(field, N_("The contract ID's check character is wrong."), "check_character")]
        )
    return Emaid(country, provider, instance, check)
