"""Vehicle identification number (VIN) checks following ISO 3779.

Buyers and dealers type VINs by hand from paperwork, so the checks aim to say
precisely what is wrong and how to fix it rather than just rejecting input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VIN_LENGTH = 17
CHECK_DIGIT_POSITION = 9  # 1-based, as printed in the standard

# Only these markets make the position-9 check digit mandatory (FMVSS 115 in
# North America, GB 16735 in China); European makers often put a filler there,
# so enforcing it everywhere would reject genuine cars.
CHECK_DIGIT_MARKETS: frozenset[str] = frozenset({"US", "CA", "MX", "CN"})

# I, O and Q are excluded by the standard because they are easily misread as
# 1 and 0; people copying a VIN nearly always meant the digit.
LOOK_ALIKES: dict[str, str] = {"I": "1", "O": "0", "Q": "0"}

_ALLOWED = frozenset("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")

_TRANSLITERATION: dict[str, int] = {
    **{str(d): d for d in range(10)},
    "A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 6, "G": 7, "H": 8,
    "J": 1, "K": 2, "L": 3, "M": 4, "N": 5, "P": 7, "R": 9,
    "S": 2, "T": 3, "U": 4, "V": 5, "W": 6, "X": 7, "Y": 8, "Z": 9,
}  # fmt: skip

_WEIGHTS: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)

# Spaces and hyphens are how people group a VIN when copying it; they never
# belong to the VIN itself.
_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass(frozen=True)
class VinProblem:
    code: str
    message: str


@dataclass(frozen=True)
class VinCheck:
    vin: str
    problems: list[VinProblem] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def normalise_vin(raw: str) -> str:
    return _SEPARATORS.sub("", raw).upper()


def vin_check_character(vin: str) -> str:
    """Return the check character ISO 3779 expects at position 9 of ``vin``.

    Raises ``ValueError`` when ``vin`` is not 17 characters of the VIN alphabet,
    because a check character for such input would be meaningless.
    """
    vin = normalise_vin(vin)
    if len(vin) != VIN_LENGTH or not set(vin) <= _ALLOWED:
        raise ValueError(f"not a well-formed VIN: {vin!r}")
    total = sum(_TRANSLITERATION[ch] * weight for ch, weight in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def check_vin(raw: str, country: str) -> VinCheck:
    vin = normalise_vin(raw)
    market = country.strip().upper()
    problems: list[VinProblem] = []
    hints: list[str] = []

    if len(vin) != VIN_LENGTH:
        problems.append(
            VinProblem(
                "length",
                f"A VIN has exactly {VIN_LENGTH} characters; {len(vin)} were given.",
            )
        )

    has_look_alike = False
    for position, ch in enumerate(vin, start=1):
        if ch in _ALLOWED:
            continue
        if ch in LOOK_ALIKES:
            has_look_alike = True
            problems.append(
                VinProblem(
                    "look_alike",
                    f"position {position}: '{ch}' is not used in VINs; did you mean '{LOOK_ALIKES[ch]}'?",
                )
            )
        else:
            problems.append(
                VinProblem(
                    "invalid_character",
                    f"position {position}: '{ch}' is not allowed in VINs "
                    "(only digits and letters other than I, O and Q).",
                )
            )

    if has_look_alike:
        corrected = "".join(LOOK_ALIKES.get(ch, ch) for ch in vin)
        if len(corrected) == VIN_LENGTH and set(corrected) <= _ALLOWED:
            suffix = ""
            if vin_check_character(corrected) == corrected[CHECK_DIGIT_POSITION - 1]:
                suffix = " (its check digit is correct)"
            hints.append(f"With look-alike letters replaced the VIN reads {corrected}{suffix}.")

    if problems:
        return VinCheck(vin=vin, problems=problems, hints=hints)

    expected = vin_check_character(vin)
    actual = vin[CHECK_DIGIT_POSITION - 1]
    if actual != expected:
        if market in CHECK_DIGIT_MARKETS:
            problems.append(
                VinProblem(
                    "check_digit",
                    f"position {CHECK_DIGIT_POSITION}: check digit is '{actual}' but should be "
                    f"'{expected}'; one of the characters is probably mistyped.",
                )
            )
        else:
            hints.append(
                f"position {CHECK_DIGIT_POSITION}: '{actual}' does not match the computed check "
                f"digit '{expected}'; this is normal for many makers outside North America and "
                "China, but worth a second look."
            )

    return VinCheck(vin=vin, problems=problems, hints=hints)
