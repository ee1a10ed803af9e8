"""Password rules for brand IDs, following NIST SP 800-63B.

Length plus a block-list of known passwords stops most guessing; composition
rules (digits, symbols) are deliberately absent because they push people to
predictable patterns without making passwords stronger.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources

from onboarding.core.i18n import N_

MIN_PASSWORD_LENGTH = 10
# Short fragments like "Li" or "Bo" would flag far too many good passwords.
MIN_PERSONAL_LENGTH = 4

# A fixed sentence rather than an f-string, so the catalogues can translate it; the number must stay in
# step with MIN_PASSWORD_LENGTH (tests/test_i18n.py checks).
PASSWORD_TOO_SHORT = N_("The password must be at least 10 characters long.")

_COMMON_PACKAGE = "onboarding.identity"
_COMMON_RESOURCE = ("data", "common-passwords.txt.gz")


@cache
def _common_passwords() -> frozenset[str]:
    # Loaded on first use: ~20,000 entries are not worth paying for at import time
    # in processes (CLI, scheduler) that never check a password.
    resource = resources.files(_COMMON_PACKAGE).joinpath(*_COMMON_RESOURCE)
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return frozenset(stripped for line in lines if (stripped := line.strip().lower()))


def common_password_count() -> int:
    return len(_common_passwords())


def is_common_password(password: str) -> bool:
    return password.strip().lower() in _common_passwords()


def _personal_fragments(personal: Sequence[str]) -> Iterator[str]:
    for item in personal:
        value = item.strip().lower()
        # A whole address is unlikely inside a password; its local part is not.
        if "@" in value:
            value = value.split("@", 1)[0]
        # "Anna-Lena Svensson" should also catch "svensson" on its own.
        yield value
        yield from value.replace("-", " ").replace(".", " ").replace("_", " ").split()


def password_problems(password: str, personal: Sequence[str] = ()) -> list[str]:
    problems: list[str] = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(PASSWORD_TOO_SHORT)
    if is_common_password(password):
        problems.append(N_("This password is too common and easy to guess; please choose another one."))
    lowered = password.lower()
    if any(
        len(fragment) >= MIN_PERSONAL_LENGTH and fragment in lowered
        for fragment in _personal_fragments(personal)
    ):
        problems.append(N_("The password must not contain your name or email address."))
    return problems
