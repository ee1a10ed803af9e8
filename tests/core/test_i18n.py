"""Translations: every extracted string is translated in de, sv and nb; emails render in the buyer's
language; language codes are normalised.

The catalogue check re-extracts the strings with the map in ``babel.cfg``, so a new ``_("...")`` in a
template or ``N_("...")`` in Python fails here until ``scripts/update-translations.sh`` has been run
and the new entries translated.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import DictLoader

from notifications import email as email_module
from notifications.email import RenderedEmail, render_email
from notifications.support import FALLBACK_NOTE, support_contact
from onboarding.core import i18n
from onboarding.core.i18n import gettext_, normalise_language, use_language
from onboarding.core.messages_extra import VEHICLE_SERVICE_MESSAGES
from onboarding.identity.passwords import MIN_PASSWORD_LENGTH, PASSWORD_TOO_SHORT, password_problems

ROOT = Path(__file__).resolve().parents[2]
LOCALE_DIR = ROOT / "onboarding" / "core" / "locale"
TRANSLATED = ("de", "sv", "nb")

# Every printf-style directive, including "%%": Jinja's new-style gettext always applies "%", so a stray
# "%" in a translation breaks rendering just as a renamed placeholder does.
DIRECTIVE = re.compile(r"%(?:\(\w+\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")


@cache
def extracted() -> dict[str, list[str]]:
    """msgid -> locations, extracted now from the source tree exactly as babel.cfg says."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as handle:
        # Babel ships no annotations for this one function.
        method_map, options_map = parse_mapping_cfg(handle, "babel.cfg")  # type: ignore[no-untyped-call]
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        # A plural (ngettext) is one catalogue entry, found under its singular.
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def load_catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"


def directives(text: str) -> Counter[str]:
    return Counter(DIRECTIVE.findall(text))


def _strings(value: str | tuple[str, ...] | list[str] | None) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif value:
        yield from value


# --- the catalogues ----------------------------------------------------------------------------------


def test_extraction_finds_the_marked_strings() -> None:
    messages = extracted()
    # One string from each kind of source babel.cfg covers: page template, email (.html/.txt/subject),
    # Python N_() and the list of vehicles/service.py messages.
    assert "Create your %(brand)s ID" in messages
    assert "Your %(model)s is almost here: activate your %(brand)s ID" in messages
    assert "Continue to activation:" in messages
    assert "The password must not contain your name or email address." in messages
    assert "Must not be empty." in messages
    # Page templates of packages outside onboarding/ (the in-car API's /device pages).
    assert "Log in to this car?" in messages
    # The fallback note reaches the pages as support.note and must be translatable too.
    assert FALLBACK_NOTE in messages
    locations = [loc for locs in messages.values() for loc in locs]
    # The developer mailbox pages are English-only and stay out of the catalogues.
    assert not [loc for loc in locations if loc.startswith("onboarding/ops/templates/")]


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_extracted_string_is_translated(lang: str) -> None:
    catalog = load_catalog(po_path(lang), lang)
    problems: list[str] = []
    for msgid, locations in sorted(extracted().items()):
        where = ", ".join(locations)
        entry = catalog.get(msgid)
        if entry is None:
            problems.append(f"missing: {msgid!r} ({where})")
        elif entry.fuzzy:
            problems.append(f"fuzzy: {msgid!r} ({where})")
        elif not any(s.strip() for s in _strings(entry.string)):
            problems.append(f"untranslated: {msgid!r} ({where})")
    assert not problems, (
        f"{po_path(lang).relative_to(ROOT)} is incomplete; run scripts/update-translations.sh and "
        "translate:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_keep_the_placeholders(lang: str) -> None:
    catalog = load_catalog(po_path(lang), lang)
    assert catalog.fuzzy is False, "the catalogue header is marked fuzzy"
    problems: list[str] = []
    for entry in catalog:
        if not entry.id:
            continue
        for original in _strings(entry.id):
            for translation in _strings(entry.string):
                if translation and directives(original) != directives(translation):
                    problems.append(
                        f"{original!r}: {sorted(directives(original).elements())} != "
                        f"{translation!r}: {sorted(directives(translation).elements())}"
                    )
    assert not problems, "\n".join(problems)


def test_template_pot_is_up_to_date() -> None:
    pot = load_catalog(LOCALE_DIR / "messages.pot")
    in_pot = {entry.id if isinstance(entry.id, str) else entry.id[0] for entry in pot if entry.id}
    stale = sorted(set(extracted()) - in_pot)
    assert not stale, (
        f"onboarding/core/locale/messages.pot is out of date; run scripts/update-translations.sh: {stale}"
    )


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalogue_compiles_and_translates(lang: str) -> None:
    assert type(i18n.translations(lang)).__name__ == "GNUTranslations"
    with use_language(lang):
        assert gettext_("Password") != "Password"
        assert gettext_("Welcome to %(brand)s", brand="Aurora").endswith("Aurora")


# --- the strings marked in Python ---------------------------------------------------------------------


def test_vehicle_service_messages_match_their_source() -> None:
    """messages_extra repeats strings from onboarding/core/fields.py; a reworded original would lose its
    translation silently."""
    source = (ROOT / "onboarding" / "core" / "fields.py").read_text(encoding="utf-8")
    for message in VEHICLE_SERVICE_MESSAGES:
        assert f'FieldError(name, "{message}")' in source, message


def test_password_length_message_matches_the_rule() -> None:
    assert f"at least {MIN_PASSWORD_LENGTH} characters" in PASSWORD_TOO_SHORT
    hint = (ROOT / "onboarding" / "web" / "templates" / "web/_forms.html").read_text(encoding="utf-8")
    assert f'_("At least {MIN_PASSWORD_LENGTH} characters.' in hint  # the new-password fields' hint
    assert password_problems("x" * (MIN_PASSWORD_LENGTH - 1)) == [PASSWORD_TOO_SHORT]


def test_password_problem_shown_in_german() -> None:
    problems = password_problems("password")
    with use_language("de"):
        shown = [gettext_(problem) for problem in problems]
    assert "Das Passwort muss mindestens 10 Zeichen lang sein." in shown
    assert any("Passwort ist zu verbreitet" in text for text in shown)


# --- the invitation email ---------------------------------------------------------------------------

LINK = "https://onboarding.example.test/i/Zt3q-abc_123"


def invitation_context() -> dict[str, Any]:
    return {
        "brand": {"name": "Aurora", "colour": "#0b3d5c"},
        "support": support_contact("SE", "example.test"),
        "first_name": "Astrid",
        "model_name": "Nova E40",
        "dealer_name": "Bilhallen Centrum",
        "delivery_date": date(2026, 3, 16),
        "link": LINK,
        "valid_days": 14,
        "expires_on": date(2026, 3, 30),
    }


@cache
def english_invitation() -> RenderedEmail:
    return render_email("invitation", "en", invitation_context())


# lang -> (word in the subject, phrase in the text, the delivery date as the language writes it)
EXPECTED = {
    "de": ("fast da", "Weiter zur Aktivierung", "16. März 2026"),
    "sv": ("Snart är", "Fortsätt till aktiveringen", "16 mars 2026"),
    "nb": ("Snart er", "Fortsett til aktiveringen", "16. mars 2026"),
}


@pytest.mark.parametrize("lang", TRANSLATED)
def test_invitation_email_in_the_buyers_language(lang: str) -> None:
    subject_word, text_phrase, delivery = EXPECTED[lang]
    english = english_invitation()
    rendered = render_email("invitation", lang, invitation_context())

    assert rendered.subject != english.subject
    assert subject_word in rendered.subject
    assert "Nova E40" in rendered.subject and "Aurora" in rendered.subject

    assert rendered.text != english.text
    assert text_phrase in rendered.text
    assert delivery in rendered.text
    assert "Astrid" in rendered.text and "Bilhallen Centrum" in rendered.text
    assert "smartmobility@se.example.test" in rendered.text
    for leftover in ("Hello", "Continue to activation", "The link is valid"):
        assert leftover not in rendered.text
        assert leftover not in rendered.html

    assert f'<html lang="{lang}">' in rendered.html
    assert text_phrase in rendered.html

    assert LINK in rendered.text
    assert f'href="{LINK}"' in rendered.html


def test_invitation_email_in_english() -> None:
    english = english_invitation()
    assert english.subject == "Your Nova E40 is almost here: activate your Aurora ID"
    assert "Hello Astrid," in english.text
    assert LINK in english.text and f'href="{LINK}"' in english.html


PRINTED = ("first_name", "model_name", "dealer_name", "link")
# Values that escaping, str.format and %-formatting treat specially, whitespace the subject collapses,
# and the characters of the markers that stand for printed values while a template runs.
AWKWARD = {
    "first_name": '<b>Åsa</b> & "Ola" O\'Neil {0} {x}} %(name)s',
    "model_name": "Nova  E40\t{",
    "dealer_name": "Bil & Co \ue000a&\ue001 \ue000a&amp;\ue001",
    "link": LINK + "?a=1&b=<2>",
}


def split_printed(context: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    return (
        {k: v for k, v in context.items() if k not in PRINTED},
        {k: v for k, v in context.items() if k in PRINTED},
    )


@pytest.mark.parametrize("template", ["invitation", "invitation_reminder"])
@pytest.mark.parametrize("lang", ("en", *TRANSLATED))
@pytest.mark.parametrize("country", ["SE", "ZA"])  # ZA: not in the directory, the dealer's note
def test_printed_values_give_the_same_email_as_a_full_render(
    template: str, lang: str, country: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = Counter[str]()
    full_render = email_module._render

    def counted(*args: Any) -> RenderedEmail:
        runs["templates"] += 1
        return full_render(*args)

    monkeypatch.setattr(email_module, "_render", counted)
    context = invitation_context() | {"support": support_contact(country, "example.test", "d@dealer.test")}
    context["brand"] = {"name": "Aurora & Sons", "colour": "#0b3d5c"}
    for values in (AWKWARD, {**AWKWARD, "first_name": "Astrid", "link": LINK + "2"}):
        shared, printed = split_printed(context | values)
        assert render_email(template, lang, shared, printed=printed) == full_render(
            template, lang, shared | printed
        )
    assert runs["templates"] <= 1  # both emails from one form (none if an earlier test made it)


def test_a_filtered_printed_value_is_rendered_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A template that transforms a printed value cannot be filled in: each email is rendered."""
    templates = {
        "t.txt": "{% macro subject() %}Hi {{ first_name }}{% endmacro %}{{ first_name|upper }}",
        "t.html": "<p>{{ first_name }}</p>",
        "u.txt": "{% macro subject() %}Hi{% endmacro %}{{ first_name }}",
        "u.html": "<p>{{ first_name|safe }}</p>",
    }
    monkeypatch.setattr(email_module, "_templates", i18n.make_environment(DictLoader(templates)))
    for name in ("ada", "<i>bo</i>"):
        assert render_email("t", "en", {}, printed={"first_name": name}).text == name.upper()
        assert render_email("u", "en", {}, printed={"first_name": name}).html == f"<p>{name}</p>"


# --- language codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("no", "nb"),
        ("nb-NO", "nb"),
        ("nn", "nb"),
        ("NB_no", "nb"),
        ("sv_SE", "sv"),
        ("sv-FI", "sv"),
        ("de-AT", "de"),
        (" de ", "de"),
        ("en-GB", "en"),
    ],
)
def test_normalise_language_maps_supported_codes(code: str, expected: str) -> None:
    assert normalise_language(code) == expected


@pytest.mark.parametrize("code", ["fr", "fr-CA", "da", "", None])
def test_normalise_language_rejects_unsupported(code: str | None) -> None:
    assert normalise_language(code) is None
