"""Charging contracts and cards written straight into the database (Core), and a registered OCPI
party, for the OCPI tests and bench/ocpi.py."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Vehicle

CONTRACTS = cast(Table, ChargingContract.__table__)
CARDS = cast(Table, ChargingCard.__table__)


def card_uid(n: int) -> str:
    return f"04{n:012X}"


def make_cards(
    session: Session, account_id: int, now: datetime, count: int, *, start: int = 0, state: str = "delivered"
) -> list[int]:
    """``count`` contracts, each with a car and one card (uid ``card_uid(start + i)``); their ids."""
    vehicles = cast(Table, Vehicle.__table__)
    vehicle_ids = list(
        session.scalars(
            insert(vehicles).returning(vehicles.c.id),
            [{"vin": None, "model_code": "E40", "country": "SE", "created_at": now} for _ in range(count)],
        )
    )
    contract_ids = list(
        session.scalars(
            insert(CONTRACTS).returning(CONTRACTS.c.id),
            [
                {
                    "emaid": f"SENLMC{start + i:08d}X"[:18],
                    "account_id": account_id,
                    "vehicle_id": vehicle_ids[i],
                    "created_at": now,
                }
                for i in range(count)
            ],
        )
    )
    return list(
        session.scalars(
            insert(CARDS).returning(CARDS.c.id),
            [
                {
                    "contract_id": contract_ids[i],
                    "uid": card_uid(start + i),
                    "visual_number": f"NLM-{start + i:010d}",
                    "state": state,
                    "requested_at": now,
                    "expected_by": date(now.year, now.month, now.day),
                    "state_changed_at": now,
                    "last_updated": now,
                }
                for i in range(count)
            ],
        )
    )


def register_party(
    factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    *,
    tokens_url: str | None = None,
    their_token: str | None = None,
    party_id: str = "CPO",
) -> tuple[int, dict[str, str]]:
    """A registered operator and the headers it calls us with."""
    with transaction(factory) as session:
        party, token = ocpi.add_party(
            session,
            settings,
            country_code="SE",
            party_id=party_id,
            name="Test operator",
            tokens_url=tokens_url,
            their_token=their_token,
            now=now,
        )
        party_row_id = party.id
    return party_row_id, {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}
