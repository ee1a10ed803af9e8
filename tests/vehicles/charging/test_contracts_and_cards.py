"""Charging contracts and cards at the service level (SPEC §3.6): who may book, one live contract per
car also under racing bookings, the card's state machine, a blocked card's replacement, contracts
ended with the link, and overdue cards by time travel (each claimed once, never twice)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from onboarding.core.db import transaction
from onboarding.core.errors import ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from tests.account_support import make_account
from tests.conftest import NOW, Database
from vehicles import links
from vehicles.charging import cards, changes, contracts
from vehicles.charging.emaid import parse_emaid
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Vehicle, VehicleRole

VIN = "YV1DZ8256C2271234"


def _car(db: Database, settings: Settings, model_code: str = "E40") -> tuple[int, int, int]:
    """A car with a primary and a secondary user: (vehicle id, primary id, secondary id)."""
    primary_id = make_account(db.factory, settings, NOW, email="astrid@example.com")
    secondary_id = make_account(db.factory, settings, NOW, email="erik@example.com")
    with transaction(db.factory) as session:
        vehicle = Vehicle(vin=VIN, model_code=model_code, country="SE", created_at=NOW)
        session.add(vehicle)
        session.flush()
        links.link_user(session, vehicle, primary_id, VehicleRole.PRIMARY, now=NOW, actor="test")
        links.link_user(session, vehicle, secondary_id, VehicleRole.SECONDARY, now=NOW, actor="test")
        return vehicle.id, primary_id, secondary_id


def _book(db: Database, settings: Settings, vehicle_id: int, account_id: int, now: datetime = NOW) -> int:
    with transaction(db.factory) as session:
        contract, _created = contracts.book(
            session,
            settings,
            session.get_one(Vehicle, vehicle_id),
            session.get_one(Account, account_id),
            now=now,
        )
        return contract.id


def _cards(db: Database) -> list[tuple[int, str]]:
    with db.factory() as session:
        return [(c.id, c.state) for c in session.scalars(select(ChargingCard).order_by(ChargingCard.id))]


@pytest.fixture
def announced() -> Iterator[list[list[int]]]:
    heard: list[list[int]] = []

    def listen(session: object, card_ids: list[int], now: datetime) -> None:
        heard.append(card_ids)

    changes.on_tokens_changed.append(listen)
    yield heard
    changes.on_tokens_changed.remove(listen)


def test_the_primary_user_books_a_contract_with_an_emaid_and_a_first_card(
    db: Database, reference: None, settings: Settings, announced: list[list[int]]
) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    contract_id = _book(db, settings, vehicle_id, primary_id)
    with db.factory() as session:
        contract = session.get_one(ChargingContract, contract_id)
        emaid = parse_emaid(contract.emaid)
        assert (emaid.country, emaid.provider) == (settings.emsp_country_code, settings.emsp_party_id)
        assert emaid.instance.startswith("C") and len(emaid.instance) == 9
        (card,) = session.scalars(select(ChargingCard)).all()
        assert card.state == cards.REQUESTED and len(card.uid) == 14 and int(card.uid, 16) >= 0
        assert card.uid == card.uid.upper()
        assert card.visual_number.startswith(f"{settings.emsp_country_code}-") and cards.luhn_valid(
            card.visual_number
        )
        assert card.expected_by == (NOW + timedelta(days=settings.charging_card_delivery_days)).date()
    assert announced == [[card.id]]
    # Booking again is the same contract.
    assert _book(db, settings, vehicle_id, primary_id) == contract_id
    assert len(_cards(db)) == 1


def test_a_secondary_user_or_a_combustion_car_cannot_book(
    db: Database, reference: None, settings: Settings
) -> None:
    vehicle_id, _primary, secondary_id = _car(db, settings)
    with pytest.raises(ValidationFailed) as refused:
        _book(db, settings, vehicle_id, secondary_id)
    assert refused.value.errors[0].field == "vehicle" and refused.value.errors[0].code == "not_primary"
    with transaction(db.factory) as session:
        session.get_one(Vehicle, vehicle_id).model_code = "S90"  # a combustion car (reference data)
    with pytest.raises(ValidationFailed) as refused:
        _book(db, settings, vehicle_id, _primary)
    assert refused.value.errors[0].code == "powertrain"
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(ChargingContract)) == 0


def test_racing_bookings_make_one_contract(db: Database, reference: None, settings: Settings) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    start = threading.Barrier(6)

    def book() -> int:
        start.wait()
        return _book(db, settings, vehicle_id, primary_id)

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(lambda _: book(), range(6)))
    assert len(set(ids)) == 1
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(ChargingContract)) == 1
        assert session.scalar(select(func.count()).select_from(ChargingCard)) == 1


def test_the_supplier_moves_a_card_only_forwards(db: Database, reference: None, settings: Settings) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    _book(db, settings, vehicle_id, primary_id)
    ((card_id, _state),) = _cards(db)
    later = NOW + timedelta(hours=1)
    for bad in (cards.SHIPPED, cards.DELIVERED, cards.BLOCKED, "lost"):
        with pytest.raises(ValidationFailed) as refused, transaction(db.factory) as session:
            cards.supplier_update(session, card_id, bad, now=later)
        assert refused.value.errors[0].field == "state"
    for step in (cards.PRODUCED, cards.PRODUCED, cards.SHIPPED, cards.DELIVERED):
        with transaction(db.factory) as session:
            card = cards.supplier_update(session, card_id, step, now=later)
            assert card is not None and card.state == step and card.last_updated == later
    with pytest.raises(ValidationFailed), transaction(db.factory) as session:
        cards.supplier_update(session, card_id, cards.SHIPPED, now=later)
    with transaction(db.factory) as session:
        assert cards.supplier_update(session, 999_999, cards.PRODUCED, now=later) is None


def test_blocking_a_lost_card_orders_a_replacement_once(
    db: Database, reference: None, settings: Settings, announced: list[list[int]]
) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    _book(db, settings, vehicle_id, primary_id)
    ((card_id, _state),) = _cards(db)
    later = NOW + timedelta(days=3)
    for _twice in range(2):
        with transaction(db.factory) as session:
            cards.block(session, settings, session.get_one(ChargingCard, card_id), now=later, actor="self")
    rows = _cards(db)
    assert [state for _id, state in rows] == [cards.BLOCKED, cards.REQUESTED]
    with db.factory() as session:
        old, new = session.get_one(ChargingCard, rows[0][0]), session.get_one(ChargingCard, rows[1][0])
        assert (
            old.replaced_by_id == new.id and old.contract_id == new.contract_id and old.last_updated == later
        )
        assert new.expected_by == (later + timedelta(days=settings.charging_card_delivery_days)).date()
    assert [new.id] in announced and [old.id] in announced


def test_the_contract_ends_with_the_holders_link_and_its_cards_turn_invalid(
    db: Database, reference: None, settings: Settings, announced: list[list[int]]
) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    contract_id = _book(db, settings, vehicle_id, primary_id)
    later = NOW + timedelta(days=1)
    with transaction(db.factory) as session:
        link = links.link_of(session, vehicle_id, primary_id)
        assert link is not None
        links.end_link(session, link, reason=links.CAR_REMOVED, now=later, actor="test")
    with db.factory() as session:
        contract = session.get_one(ChargingContract, contract_id)
        assert (contract.ended_at, contract.ended_reason) == (later, links.CAR_REMOVED)
    ((card_id, state),) = _cards(db)
    assert state == cards.BLOCKED and announced[-1] == [card_id]


def _claimed(db: Database, now: datetime) -> list[int]:
    with transaction(db.factory) as session:
        return [late.card_id for late in cards.claim_overdue(session, now=now)]


def test_overdue_cards_are_claimed_once_each(db: Database, reference: None, settings: Settings) -> None:
    vehicle_id, primary_id, _secondary = _car(db, settings)
    _book(db, settings, vehicle_id, primary_id)
    ((first_id, _state),) = _cards(db)
    days = settings.charging_card_delivery_days
    assert _claimed(db, NOW + timedelta(days=days)) == []  # on the expected day the card is not late yet
    with transaction(db.factory) as session:
        (late,) = cards.claim_overdue(session, now=NOW + timedelta(days=days + 1))
        # What support needs: whose card, where, and the card as the supplier knows it.
        assert (late.card_id, late.account_id, late.country) == (first_id, primary_id, "SE")
        assert VIN in late.description and "requested" in late.description
    assert _claimed(db, NOW + timedelta(days=days + 5)) == []
    # A blocked card is never late; its replacement, late in turn, is claimed on its own.
    with transaction(db.factory) as session:
        cards.block(
            session,
            settings,
            session.get_one(ChargingCard, first_id),
            now=NOW + timedelta(days=days + 2),
            actor="self",
        )
    (second,) = _claimed(db, NOW + timedelta(days=2 * days + 3))
    assert second != first_id and _claimed(db, NOW + timedelta(days=2 * days + 3)) == []
