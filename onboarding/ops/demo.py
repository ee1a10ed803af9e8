"""Demo data: a fictional brand's dealers, models and orders, so a local run shows the whole path
(invitations appear in the development mailbox within a minute of ``serve``)."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.api.keys import create_api_key
from onboarding.api.models import ApiKey
from onboarding.core.settings import Settings
from vehicles.models import Powertrain
from vehicles.schemas import DealerIn, OrderIn, ServiceIn, VehicleModelIn
from vehicles.service import upsert_dealer, upsert_model, upsert_order, validate_order

DEALERS = {
    "SE-STO-01": DealerIn(
        name="Nordlicht Centre Stockholm",
        country="SE",
        email="stockholm@dealers.nordlicht-motors.example",
        phone="+46 8 123 456 70",
        language="sv",
    ),
    "NO-OSL-01": DealerIn(
        name="Nordlicht Senter Oslo",
        country="NO",
        email="oslo@dealers.nordlicht-motors.example",
        phone="+47 22 12 34 56",
        language="nb",
    ),
    "DE-MUC-01": DealerIn(
        name="Nordlicht Zentrum München",
        country="DE",
        email="muenchen@dealers.nordlicht-motors.example",
        phone="+49 89 1234567",
        language="de",
    ),
    "ZA-CPT-01": DealerIn(
        name="Nordlicht Cape Town",
        country="ZA",
        email="capetown@dealers.nordlicht-motors.example",
        phone="+27 21 123 4567",
        language="en",
    ),
}
# Codes of the standard catalogue (vehicles/catalogue.py), plus one service of the E40's own.
_BASE: list[str | ServiceIn] = ["navigation", "voice_assistant", "remote_climate", "remote_lock", "trip_log"]
_NORDICS = {c: _BASE for c in ("SE", "NO", "DE")}
_BATTERY_CARE = ServiceIn(
    code="battery_care",
    name={"en": "Battery care", "de": "Batteriepflege", "sv": "Batterivård", "nb": "Batteripleie"},
    description={
        "en": "Battery health reports and charging advice that keep the range up.",
        "de": "Berichte zum Batteriezustand und Ladetipps, die die Reichweite erhalten.",
        "sv": "Rapporter om batteriets skick och laddråd som bevarar räckvidden.",
        "nb": "Rapporter om batteriets tilstand og laderåd som bevarer rekkevidden.",
    },
    works_without_login=False,
    remote_function=False,
    included_months=60,
)
MODELS = {
    "NM-S90-26": VehicleModelIn(
        name="Nordlicht S90",
        model_year=2026,
        powertrain=Powertrain.ICE,
        requires_security_pin=False,
        offers_data_pass=False,
        services=_NORDICS,
    ),
    "NM-X60H-26": VehicleModelIn(
        name="Nordlicht X60 Hybrid",
        model_year=2026,
        powertrain=Powertrain.PHEV,
        requires_security_pin=True,
        offers_data_pass=False,
        services={c: [*s, "charging"] for c, s in _NORDICS.items()},
    ),
    "NM-E40-27": VehicleModelIn(
        name="Nordlicht E40",
        model_year=2027,
        powertrain=Powertrain.BEV,
        requires_security_pin=True,
        offers_data_pass=True,
        services={c: [*s, "charging", "data_pass", _BATTERY_CARE] for c, s in _NORDICS.items()},
    ),
}
# (order number, dealer, model, days to delivery, buyer, email, phone, country, language, status)
ORDERS = [
    (
        "DEMO-1001",
        "SE-STO-01",
        "NM-E40-27",
        3,
        ("Astrid", "Lindqvist"),
        "astrid@example.com",
        "+46 70 123 45 67",
        "SE",
        "sv",
        None,
    ),
    (
        "DEMO-1002",
        "NO-OSL-01",
        "NM-X60H-26",
        10,
        ("Ola", "Nordmann"),
        "ola@example.com",
        "+47 912 34 567",
        "NO",
        "nb",
        None,
    ),
    (
        "DEMO-1003",
        "DE-MUC-01",
        "NM-S90-26",
        14,
        ("Jonas", "Becker"),
        "jonas@example.com",
        "+49 151 23456789",
        "DE",
        "de",
        None,
    ),
    (
        "DEMO-1004",
        "ZA-CPT-01",
        "NM-E40-27",
        5,
        ("Thandi", "Mokoena"),
        "thandi@example.com",
        "+27 82 123 4567",
        "ZA",
        "en",
        None,
    ),
    (
        "DEMO-1005",
        "SE-STO-01",
        "NM-S90-26",
        20,
        ("Erik", "Sandberg"),
        "erik@example.com",
        "+46 70 765 43 21",
        "SE",
        "en",
        None,
    ),
    (
        "DEMO-1006",
        "NO-OSL-01",
        "NM-E40-27",
        60,
        ("Kari", "Hansen"),
        "kari@example.com",
        "+47 987 65 432",
        "NO",
        "nb",
        None,
    ),
    (
        "DEMO-1007",
        "DE-MUC-01",
        "NM-X60H-26",
        7,
        ("Lena", "Vogel"),
        "lena@example.com",
        "+49 160 1234567",
        "DE",
        "de",
        "cancelled",
    ),
]
DEMO_KEY_NAME = "demo order system"
NEW_KEY_COMMAND = f"onboarding api-keys create {shlex.quote(DEMO_KEY_NAME)}"


def seed_demo(session: Session, settings: Settings, *, now: datetime) -> list[str]:
    lines = []
    for code, dealer in DEALERS.items():
        upsert_dealer(session, code, dealer, now)
    for code, model in MODELS.items():
        upsert_model(session, code, model, now)
    session.flush()
    for number, dealer_code, model_code, days, (first, last), email, phone, country, lang, status in ORDERS:
        data = OrderIn(
            dealer_code=dealer_code,
            model_code=model_code,
            buyer_first_name=first,
            buyer_last_name=last,
            buyer_email=email,
            buyer_phone=phone,
            country=country,
            language=lang,
            planned_delivery_date=(now + timedelta(days=days)).date(),
            production_status=status,
        )
        clean = validate_order(session, number, data, today=now.date())
        upsert_order(session, clean, now=now, actor="demo", lead_days=settings.invitation_lead_days)
    counts = f"{len(DEALERS)} dealers, {len(MODELS)} models, {len(ORDERS)} orders"
    if session.scalar(select(ApiKey.id).where(ApiKey.name == DEMO_KEY_NAME).limit(1)) is None:
        _key, plaintext = create_api_key(session, DEMO_KEY_NAME, now=now)
        lines.append(f"{counts} seeded.")
        lines.append(f"Demo API key (shown once): {plaintext}")
    else:
        # An earlier run created the key and printed it; only its hash is stored, so say how to get one.
        lines.append(f"Demo data already exists ({counts}; delivery dates now count from today).")
        lines.append("Its API key was shown once, by the first run. For a new key, run:")
        lines.append(f"  {NEW_KEY_COMMAND}")
    lines.append("Orders due within 14 days are invited on the next scheduler pass; see /dev/mailbox.")
    return lines
