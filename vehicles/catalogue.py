"""The connected-services catalogue (SPEC §3.5): which services a model offers in which country, what
each does, whether it works without an in-car login, whether it is a remote function that needs the
security PIN, and how many months it is included.

A model's ``services`` (``PUT /api/v1/models/{code}``) name, per country, either a service of the
standard catalogue below by its code, or a service of the model's own as a whole object. Either way
what is stored is the whole object (``VehicleModel.services``: ``{country: [offer, ...]}``), so a
model's offer does not change when the standard catalogue does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from onboarding.core.errors import FieldError
from onboarding.core.fields import clean_country
from onboarding.core.i18n import N_
from onboarding.core.text_rules import UNSAFE_TEXT_MESSAGE, check_text, unsafe_character

LANGUAGES = ("en", "de", "sv", "nb")
MAX_MONTHS = 120
_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class ServiceOffer:
    code: str
    # Texts per language (en, de, sv, nb; English is the fallback).
    name: Mapping[str, str]
    description: Mapping[str, str]
    # Works in the car without a logged-in user (e.g. navigation; SPEC §3.7's anonymous set).
    works_without_login: bool
    # A remote function: authorised in the car or app with the security PIN.
    remote_function: bool
    included_months: int

    def text(self, field: str, language: str) -> str:
        texts: Mapping[str, str] = getattr(self, field)
        return texts.get(language) or texts.get("nb" if language == "no" else "en") or texts["en"]

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": dict(self.name), "description": dict(self.description)}


def _standard(
    code: str,
    names: tuple[str, str, str, str],
    descriptions: tuple[str, str, str, str],
    *,
    anonymous: bool = False,
    remote: bool = False,
    months: int = 36,
) -> ServiceOffer:
    return ServiceOffer(
        code,
        dict(zip(LANGUAGES, names, strict=True)),
        dict(zip(LANGUAGES, descriptions, strict=True)),
        anonymous,
        remote,
        months,
    )


STANDARD_SERVICES: dict[str, ServiceOffer] = {
    offer.code: offer
    for offer in (
        _standard(
            "navigation",
            ("Online navigation", "Online-Navigation", "Onlinenavigering", "Nettbasert navigasjon"),
            (
                "Routes with real-time traffic and map updates.",
                "Routen mit Echtzeit-Verkehrsinformationen und Kartenaktualisierungen.",
                "Rutter med trafikinformation i realtid och kartuppdateringar.",
                "Ruter med trafikkinformasjon i sanntid og kartoppdateringer.",
            ),
            anonymous=True,
        ),
        _standard(
            "voice_assistant",
            ("Voice assistant", "Sprachassistent", "Röstassistent", "Stemmeassistent"),
            (
                "Speak to set destinations, call and change settings.",
                "Ziele, Anrufe und Einstellungen per Sprache.",
                "Ange mål, ring och ändra inställningar med rösten.",
                "Angi mål, ring og endre innstillinger med stemmen.",
            ),
        ),
        _standard(
            "remote_climate",
            (
                "Remote climate control",
                "Klimatisierung aus der Ferne",
                "Fjärrstyrd klimatanläggning",
                "Fjernstyrt klima",
            ),
            (
                "Heat or cool the car from your phone before you leave.",
                "Das Auto vor der Abfahrt per Smartphone heizen oder kühlen.",
                "Värm eller kyl bilen från telefonen innan du åker.",
                "Varm opp eller kjøl ned bilen fra telefonen før du drar.",
            ),
            remote=True,
        ),
        _standard(
            "remote_lock",
            ("Remote locking", "Fernverriegelung", "Fjärrlåsning", "Fjernlåsing"),
            (
                "Lock and unlock the car from your phone.",
                "Das Auto per Smartphone ver- und entriegeln.",
                "Lås och lås upp bilen från telefonen.",
                "Lås og lås opp bilen fra telefonen.",
            ),
            remote=True,
        ),
        _standard(
            "trip_log",
            ("Trip log", "Fahrtenbuch", "Körjournal", "Kjørebok"),
            (
                "Your trips with distance, time and consumption.",
                "Ihre Fahrten mit Strecke, Zeit und Verbrauch.",
                "Dina resor med sträcka, tid och förbrukning.",
                "Turene dine med distanse, tid og forbruk.",
            ),
            months=12,
        ),
        _standard(
            "charging",
            ("Charging planner", "Ladeplaner", "Laddplanerare", "Ladeplanlegger"),
            (
                "Charging stations on your route and charging timers.",
                "Ladestationen auf Ihrer Route und Lade-Timer.",
                "Laddstationer längs din rutt och laddtimer.",
                "Ladestasjoner langs ruten og ladetidsur.",
            ),
            anonymous=True,
        ),
        _standard(
            "data_pass",
            ("Data Pass", "Data Pass", "Datapass", "Datapass"),
            (
                "Mobile data in the car for streaming and hotspot, from the network provider.",
                "Mobile Daten im Auto für Streaming und Hotspot, vom Netzbetreiber.",
                "Mobildata i bilen för streaming och surfzon, från nätverksleverantören.",
                "Mobildata i bilen for strømming og Wi-Fi-sone, fra nettverksleverandøren.",
            ),
            months=3,
        ),
    )
}


def _texts(value: object, field: str, errors: list[FieldError]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        errors.append(FieldError(field, N_("Give the text per language, at least in English (en).")))
        return {}
    texts: dict[str, str] = {}
    for language, text in value.items():
        if language not in LANGUAGES:
            errors.append(FieldError(f"{field}.{language}", N_("Use one of: en, de, sv, nb.")))
        elif isinstance(text, str) and unsafe_character(text):
            errors.append(FieldError(f"{field}.{language}", UNSAFE_TEXT_MESSAGE, "unsafe_text"))
        elif not isinstance(text, str) or not text.strip() or len(text) > 500:
            errors.append(FieldError(f"{field}.{language}", N_("Give a text of 1 to 500 characters.")))
        else:
            texts[language] = text.strip()
    if "en" not in value:
        errors.append(FieldError(f"{field}.en", N_("An English text is required (it is the fallback).")))
    return texts


def parse_offer(value: object, field: str, errors: list[FieldError]) -> ServiceOffer | None:
    """One entry of a model's services: a standard code or a whole service object."""
    if isinstance(value, str):
        unsafe = check_text(field, value)
        if unsafe is not None:
            errors.append(unsafe)
            return None
        offer = STANDARD_SERVICES.get(value)
        if offer is None:
            errors.append(
                FieldError(
                    field,
                    N_("Unknown service code; standard codes are %(codes)s, or give the whole service."),
                    "unknown_service",
                    {"codes": ", ".join(sorted(STANDARD_SERVICES))},
                )
            )
        return offer
    if not isinstance(value, Mapping):
        errors.append(FieldError(field, N_("Give a service code or a service object.")))
        return None
    before = len(errors)
    allowed = {"code", "name", "description", "works_without_login", "remote_function", "included_months"}
    for key in sorted(set(value) - allowed):
        errors.append(FieldError(f"{field}.{key}", N_("Unknown field.")))
    code = value.get("code")
    if not isinstance(code, str) or not 1 <= len(code) <= 64 or not set(code) <= _CODE_CHARS:
        errors.append(FieldError(f"{field}.code", N_("Use 1-64 lower-case letters, digits, '_' or '-'.")))
    name = _texts(value.get("name"), f"{field}.name", errors)
    description = _texts(value.get("description"), f"{field}.description", errors)
    flags = {}
    for key in ("works_without_login", "remote_function"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            errors.append(FieldError(f"{field}.{key}", N_("Give true or false.")))
        flags[key] = flag is True
    months = value.get("included_months")
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        errors.append(FieldError(f"{field}.included_months", N_("Give whole months from 1 to 120.")))
    if len(errors) > before:
        return None
    assert isinstance(code, str) and isinstance(months, int)
    return ServiceOffer(
        code, name, description, flags["works_without_login"], flags["remote_function"], months
    )


def parse_services(value: Mapping[str, Any], errors: list[FieldError]) -> dict[str, list[dict[str, Any]]]:
    """A model's ``services`` from the API: ``{country: [code or object, ...]}`` → stored form."""
    stored: dict[str, list[dict[str, Any]]] = {}
    for country, entries in value.items():
        before = len(errors)
        cc = clean_country(country, f"services.{country}", errors)
        if not isinstance(entries, list):
            errors.append(FieldError(f"services.{country}", N_("Give a list of services.")))
            continue
        offers: dict[str, ServiceOffer] = {}
        for index, entry in enumerate(entries):
            offer = parse_offer(entry, f"services.{country}[{index}]", errors)
            if offer is not None and offer.code in offers and offers[offer.code] != offer:
                errors.append(
                    FieldError(f"services.{country}[{index}].code", N_("This service is listed twice."))
                )
            elif offer is not None:
                offers[offer.code] = offer
        if len(errors) == before:
            stored[cc] = [offers[code].as_json() for code in sorted(offers)]
    return stored


def _stored_offer(entry: object) -> ServiceOffer | None:
    # Rows stored before the catalogue held only codes (``{"SE": ["navigation"]}``): read them from the
    # standard catalogue.
    if isinstance(entry, str):
        return STANDARD_SERVICES.get(entry)
    if isinstance(entry, Mapping):
        return ServiceOffer(
            entry["code"],
            entry["name"],
            entry["description"],
            bool(entry["works_without_login"]),
            bool(entry["remote_function"]),
            int(entry["included_months"]),
        )
    return None


def services_for(services: Mapping[str, Any] | None, country: str) -> list[ServiceOffer]:
    """The services a model (its stored ``services``) offers in ``country``, by code."""
    offers = [_stored_offer(entry) for entry in (services or {}).get(country, [])]
    return sorted((offer for offer in offers if offer is not None), key=lambda offer: offer.code)


def public_services(services: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """The stored services as the API shows them: whole objects per country."""
    return {
        country: [offer.as_json() for offer in services_for(services, country)]
        for country in sorted(services or {})
    }
