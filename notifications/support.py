"""Support directory (SPEC §3.9): which mailbox and languages serve each country.

The country list and mailbox scheme come from seed 004 (a manufacturer's
published list). The product is white-label, so only the *pattern* is kept and
the brand's own mail domain is filled in at lookup time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from onboarding.core.i18n import N_
from onboarding.core.settings import Settings

# Shown (translated) in page and email footers where the country has no support mailbox.
FALLBACK_NOTE = N_(
    "There is no support team for your country yet, so your dealer helps you, "
    "and fewer connected services may be available."
)

_SMART = "smartmobility"
_CONNECT = "connect"


@dataclass(frozen=True)
class _Entry:
    local_part: str
    subdomain: str
    languages: tuple[str, ...]


def _entry(local_part: str, subdomain: str, *official: str) -> _Entry:
    # Support teams always answer in English too, so it is offered everywhere.
    languages = official if "en" in official else (*official, "en")
    return _Entry(local_part, subdomain, languages)


# Sub-domains follow the seed's addresses: mostly the country code, but the UK
# uses "uk" (not ISO's "gb") and Hong Kong is served by the China team.
_DIRECTORY: dict[str, _Entry] = {
    "AL": _entry(_SMART, "al", "sq"),
    "AD": _entry(_SMART, "ad", "ca"),
    "AU": _entry(_CONNECT, "au", "en"),
    "AT": _entry(_SMART, "at", "de"),
    "BE": _entry(_SMART, "be", "nl", "fr", "de"),
    "BA": _entry(_SMART, "ba", "bs", "hr", "sr"),
    "BG": _entry(_SMART, "bg", "bg"),
    "CA": _entry(_CONNECT, "ca", "en", "fr"),
    "CN": _entry(_CONNECT, "cn", "zh"),
    "HR": _entry(_SMART, "hr", "hr"),
    "CY": _entry(_SMART, "cy", "el", "tr"),
    "CZ": _entry(_SMART, "cz", "cs"),
    "DK": _entry(_SMART, "dk", "da"),
    "EE": _entry(_SMART, "ee", "et"),
    "FI": _entry(_SMART, "fi", "fi", "sv"),
    "FR": _entry(_SMART, "fr", "fr"),
    "DE": _entry(_SMART, "de", "de"),
    "GI": _entry(_SMART, "gi", "en"),
    "GB": _entry(_SMART, "uk", "en"),
    "GR": _entry(_SMART, "gr", "el"),
    "HK": _entry(_CONNECT, "cn", "zh", "en"),
    "HU": _entry(_SMART, "hu", "hu"),
    "IS": _entry(_SMART, "is", "is"),
    "IE": _entry(_SMART, "ie", "en", "ga"),
    "IT": _entry(_SMART, "it", "it"),
    "JP": _entry(_CONNECT, "jp", "ja"),
    "LV": _entry(_SMART, "lv", "lv"),
    "LI": _entry(_SMART, "li", "de"),
    "LT": _entry(_SMART, "lt", "lt"),
    "LU": _entry(_SMART, "lu", "lb", "fr", "de"),
    "MT": _entry(_SMART, "mt", "mt", "en"),
    "MC": _entry(_SMART, "mc", "fr"),
    "NL": _entry(_SMART, "nl", "nl"),
    "NO": _entry(_SMART, "no", "nb"),
    "PL": _entry(_SMART, "pl", "pl"),
    "PT": _entry(_SMART, "pt", "pt"),
    "RO": _entry(_SMART, "ro", "ro"),
    "RU": _entry(_CONNECT, "ru", "ru"),
    "SK": _entry(_SMART, "sk", "sk"),
    "SI": _entry(_SMART, "si", "sl"),
    "ES": _entry(_SMART, "es", "es"),
    "SE": _entry(_SMART, "se", "sv"),
    "CH": _entry(_SMART, "ch", "de", "fr", "it", "rm"),
    "TW": _entry(_CONNECT, "tw", "zh"),
    "US": _entry(_CONNECT, "us", "en"),
}


@dataclass(frozen=True)
class SupportContact:
    country: str
    email: str
    languages: tuple[str, ...]
    is_fallback: bool
    note: str | None


def directory_countries() -> list[str]:
    return sorted(_DIRECTORY)


@lru_cache(maxsize=1024)
def support_contact(
    country: str,
    mail_domain: str,
    dealer_email: str | None = None,
    dealer_name: str | None = None,
) -> SupportContact:
    """Return who helps a buyer in ``country``.

    ``dealer_name`` is accepted so callers can pass what they have; the note is
    a fixed, translatable string, so the name is left for the template to show.
    """
    code = country.strip().upper()
    domain = mail_domain.strip().lower()
    entry = _DIRECTORY.get(code)
    if entry is not None:
        return SupportContact(
            country=code,
            email=f"{entry.local_part}@{entry.subdomain}.{domain}",
            languages=entry.languages,
            is_fallback=False,
            note=None,
        )
    email = dealer_email.strip() if dealer_email and dealer_email.strip() else f"support@{domain}"
    return SupportContact(
        country=code,
        email=email,
        languages=("en",),
        is_fallback=True,
        note=FALLBACK_NOTE,
    )


class DealerContact(Protocol):
    """What the directory needs of a dealer (``vehicles.models.Dealer``)."""

    @property
    def country(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...


def contact_for(settings: Settings, country: str | None, dealer: DealerContact | None) -> SupportContact:
    """Whom a person writes to: the market's support, or the dealer where the market has none."""
    if not country and dealer is None:
        # Nothing is known about the person yet: the brand's general mailbox, without the note
        # about dealers that applies to unlisted countries.
        return SupportContact("", f"support@{settings.brand_mail_domain}", ("en",), False, None)
    return support_contact(
        country or (dealer.country if dealer else "") or "",
        settings.brand_mail_domain,
        dealer_email=dealer.email if dealer else None,
        dealer_name=dealer.name if dealer else None,
    )
