import re
from collections import Counter
from pathlib import Path

import pytest

from notifications.support import FALLBACK_NOTE, SupportContact, directory_countries, support_contact

SEED = Path("/work/shared/seeds/004_64896a917531656b.txt")
# "Country name: mailbox" pairs; names may contain spaces or hyphens ("Hong Kong").
SEED_ENTRY = re.compile(r"([^\s:][^:@]*?): ([a-z0-9.]+)@([a-z0-9.-]*[a-z])")


def _seed_entries() -> list[tuple[str, str, str]]:
    if not SEED.parent.exists():
        pytest.skip("seed directory not available")
    return SEED_ENTRY.findall(SEED.read_text(encoding="utf-8"))


def test_every_seed_country_is_in_directory() -> None:
    entries = _seed_entries()
    assert len(entries) > 40  # guards against the regex silently matching nothing
    assert len(directory_countries()) == len(entries)
    # Local parts are the one part of the seed kept verbatim, so their mix must match too.
    seed_locals = Counter(local for _name, local, _domain in entries)
    ours = Counter(support_contact(c, "example.com").email.split("@")[0] for c in directory_countries())
    assert ours == seed_locals


def test_directory_is_sorted_iso_codes() -> None:
    countries = directory_countries()
    assert countries == sorted(countries)
    assert len(set(countries)) == len(countries)
    assert all(re.fullmatch(r"[A-Z]{2}", c) for c in countries)
    assert "GB" in countries and "UK" not in countries


@pytest.mark.parametrize(
    "country, email",
    [
        ("AL", "smartmobility@al.brand.example"),
        ("AU", "connect@au.brand.example"),
        ("GB", "smartmobility@uk.brand.example"),
        ("HK", "connect@cn.brand.example"),
        ("CN", "connect@cn.brand.example"),
        ("US", "connect@us.brand.example"),
        ("CA", "connect@ca.brand.example"),
        ("RU", "connect@ru.brand.example"),
        ("TW", "connect@tw.brand.example"),
        ("JP", "connect@jp.brand.example"),
        ("DE", "smartmobility@de.brand.example"),
        ("SE", "smartmobility@se.brand.example"),
    ],
)
def test_listed_country_mailbox_uses_brand_domain(country: str, email: str) -> None:
    contact = support_contact(country, "brand.example")
    assert contact == SupportContact(
        country=country,
        email=email,
        languages=contact.languages,
        is_fallback=False,
        note=None,
    )


def test_country_code_is_case_insensitive() -> None:
    assert support_contact("se", "brand.example") == support_contact("SE", "brand.example")
    assert support_contact(" gb ", "brand.example").email == "smartmobility@uk.brand.example"


def test_languages_always_include_english_and_official_ones() -> None:
    for country in directory_countries():
        languages = support_contact(country, "brand.example").languages
        assert "en" in languages, country
        assert len(set(languages)) == len(languages), country
        assert all(re.fullmatch(r"[a-z]{2}", lang) for lang in languages), country
    assert support_contact("NO", "b.example").languages[0] == "nb"
    assert "no" not in support_contact("NO", "b.example").languages
    assert support_contact("DE", "b.example").languages[0] == "de"
    assert set(support_contact("CH", "b.example").languages) >= {"de", "fr", "it"}
    assert support_contact("SE", "b.example").languages == ("sv", "en")


def test_unlisted_country_routes_to_dealer() -> None:
    contact = support_contact("br", "brand.example", dealer_email="service@dealer.example", dealer_name="X")
    assert contact.is_fallback
    assert contact.email == "service@dealer.example"
    assert contact.country == "BR"
    assert contact.note == FALLBACK_NOTE
    assert "dealer" in FALLBACK_NOTE and "fewer connected services" in FALLBACK_NOTE


def test_unlisted_country_without_dealer_uses_brand_support() -> None:
    contact = support_contact("ZA", "brand.example")
    assert contact.is_fallback
    assert contact.email == "support@brand.example"
    assert contact.note == FALLBACK_NOTE


def test_listed_country_ignores_dealer() -> None:
    contact = support_contact("FR", "brand.example", dealer_email="d@dealer.example")
    assert contact.email == "smartmobility@fr.brand.example"
    assert not contact.is_fallback
