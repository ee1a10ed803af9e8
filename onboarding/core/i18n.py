"""Languages, gettext catalogues (Babel ``.po`` files) and the Jinja environments that use them.

The catalogues under ``onboarding/core/locale`` are compiled in memory at first use, so a checkout needs
no build step. The active language is a context variable: set it with ``use_language`` around any
rendering, in the thread that renders.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import BaseLoader, Environment, select_autoescape

LANGUAGES: dict[str, str] = {"en": "English", "de": "Deutsch", "sv": "Svenska", "nb": "Norsk bokmål"}
DEFAULT_LANGUAGE = "en"
_ALIASES = {"no": "nb", "nn": "nb"}

_current: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)


def normalise_language(code: str | None) -> str | None:
    """The supported language for a code such as ``sv``, ``sv-SE`` or ``no``; None if unsupported."""
    if not code:
        return None
    base = code.strip().replace("_", "-").split("-")[0].lower()
    base = _ALIASES.get(base, base)
    return base if base in LANGUAGES else None


def negotiate(accept_language: str | None) -> str:
    for part in (accept_language or "").split(","):
        found = normalise_language(part.split(";")[0])
        if found:
            return found
    return DEFAULT_LANGUAGE


@cache
def translations(language: str) -> gettext.NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    po = resources.files("onboarding.core").joinpath("locale", language, "LC_MESSAGES", "messages.po")
    if not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def current_language() -> str:
    return _current.get()


@contextmanager
def use_language(language: str) -> Iterator[None]:
    token = _current.set(normalise_language(language) or DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _current.reset(token)


def gettext_(message: str, **variables: Any) -> str:
    text = translations(_current.get()).gettext(message)
    return text % variables if variables else text


@dataclass(frozen=True)
class Text:
    """A catalogue message and its values, translated when shown (``str``), in the language current
    then. A route's texts go into a page whose language ``render`` decides (the reader's, or the
    account's), and an email's into a message rendered in the recipient's."""

    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return gettext_(self.message, **self.values)


def lazy_gettext(message: str, **values: Any) -> Text:
    """``gettext_`` for route code: translated when the page is rendered (see ``Text``)."""
    return Text(message, values)


def ngettext_(singular: str, plural: str, n: int) -> str:
    # Unformatted: Jinja's new-style gettext fills in ``num`` and the other variables itself.
    return translations(_current.get()).ngettext(singular, plural, n)


def format_date(value: Any, format: str = "long") -> str:
    return _format_date(value, format, _babel_locale())


@lru_cache(maxsize=4096)
def _format_date(value: Any, format: str, locale: str) -> str:
    # Babel's formatting is slow next to a template render, and the same dates recur in a batch.
    return babel_format_date(value, format=format, locale=locale)


def country_choices(codes: Iterable[str]) -> list[tuple[str, str]]:
    """(code, name in the current language) pairs, sorted by name, for country pickers."""
    territories = Locale.parse(_babel_locale()).territories
    return sorted(((c, territories.get(c, c)) for c in codes), key=lambda pair: pair[1])


def _babel_locale() -> str:
    return {"nb": "nb_NO"}.get(_current.get(), _current.get())


def field_message(error: Any) -> str:
    """A validation error's message in the current language (see ``onboarding.core.errors.FieldError``)."""
    return gettext_(error.message, **error.params)


def make_environment(loader: BaseLoader, *, auto_reload: bool = True) -> Environment:
    env = Environment(
        loader=loader,
        auto_reload=auto_reload,
        autoescape=select_autoescape(["html", "xml"], default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(gettext_, ngettext_, newstyle=True)  # type: ignore[attr-defined]
    # ``_("Hello %(name)s", name=x)`` straight to ``gettext_`` instead of through Jinja's new-style
    # wrapper (a second context call per string; a third of an email's render time). Escaping is
    # unchanged: the result is a plain string, so autoescaping escapes it, variables included.
    env.globals["_"] = env.globals["gettext"] = gettext_
    env.filters["date"] = format_date
    env.globals["field_message"] = field_message
    env.globals["country_choices"] = country_choices
    env.globals["LANGUAGES"] = LANGUAGES
    env.globals["current_language"] = current_language
    return env


def N_(message: str) -> str:
    """Marks a string for extraction into the catalogues; it is translated where it is shown."""
    return message
