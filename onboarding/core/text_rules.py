"""The one rule every text field obeys, whatever it arrives through (API, form, CSV): no NUL bytes,
no lone surrogates, no control characters and no bidirectional override or isolate characters.

NUL cannot be stored in PostgreSQL text (SQLite stores it), a lone surrogate cannot be encoded as
UTF-8 by either driver, control characters have no place in names, codes or addresses, and bidi
overrides make a value read differently from what it is ("Trojan Source"). Refusing them here, with
an error naming the field, gives the same answer on both databases instead of a 500 on one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from onboarding.core.errors import FieldError

# U+202A-U+202E (embeddings and overrides), U+2066-U+2069 (isolates).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Only a free-text message (a textarea) may span lines.
LINE_BREAKS = frozenset("\n\r\t")

UNSAFE_TEXT_MESSAGE = (
    "Contains a character that is not allowed (a control, bidirectional or invalid character)."
)


def unsafe_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character the rule refuses, as ``U+XXXX``, or None when the value is clean."""
    for ch in value:
        if ch in BIDI_CONTROLS or (ch < "\x20" and not (multiline and ch in LINE_BREAKS)):
            return f"U+{ord(ch):04X}"
        if ch >= "\x7f" and unicodedata.category(ch) in ("Cc", "Cs"):
            return f"U+{ord(ch):04X}"
    return None


def check_text(field: str, value: str, *, multiline: bool = False) -> FieldError | None:
    """A field error naming ``field`` (code ``unsafe_text``) when ``value`` breaks the rule."""
    found = unsafe_character(value, multiline=multiline)
    if found is None:
        return None
    return FieldError(field, UNSAFE_TEXT_MESSAGE, "unsafe_text")


def check_texts(values: Iterable[tuple[str, str]], *, multiline: Iterable[str] = ()) -> list[FieldError]:
    """Every (field, value) pair that breaks the rule, e.g. a CSV row's or a form's fields."""
    multiline_fields = frozenset(multiline)
    errors = []
    for field, value in values:
        error = check_text(field, value, multiline=field in multiline_fields)
        if error is not None:
            errors.append(error)
    return errors


def _refuse_unsafe(value: str) -> str:
    if unsafe_character(value) is not None:
        raise PydanticCustomError("unsafe_text", UNSAFE_TEXT_MESSAGE)
    return value


# A ``str`` for pydantic models and path parameters that refuses what ``unsafe_character`` finds.
SafeStr = Annotated[str, AfterValidator(_refuse_unsafe)]
