"""Charging cards (SPEC §3.6): made for a contract, moved through their states by the card supplier,
blocked by the buyer when lost (with a replacement), claimed as overdue when not delivered in time
(``activation.support_requests`` makes each a support request).

States: requested → produced → shipped → delivered; any card not yet blocked or replaced can be
blocked (lost, stolen) and a requested or produced card can be replaced. Every change sets the card's
``last_updated`` (the OCPI token's) and is announced with ``changes.tokens_changed``. Nothing here
commits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import audit
from vehicles.charging.changes import tokens_changed
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Dealer, Order, Vehicle
from vehicles.service import insert_once

REQUESTED, PRODUCED, SHIPPED, DELIVERED = "requested", "produced", "shipped", "delivered"
BLOCKED, REPLACED = "blocked", "replaced"
STATES = (REQUESTED, PRODUCED, SHIPPED, DELIVERED, BLOCKED, REPLACED)
# A card's state as the buyer (and staff) read it.
STATE_LABELS = {
    REQUESTED: N_("Ordered"),
    PRODUCED: N_("Produced"),
    SHIPPED: N_("On its way"),
    DELIVERED: N_("Delivered"),
    BLOCKED: N_("Blocked"),
    REPLACED: N_("Replaced"),
}
# Where the supplier may move a card from each state (repeating the current state is a no-op).
SUPPLIER_MOVES: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({PRODUCED}),
    PRODUCED: frozenset({SHIPPED}),
    SHIPPED: frozenset({DELIVERED}),
    DELIVERED: frozenset(),
    BLOCKED: frozenset(),
    REPLACED: frozenset(),
}
# States in which a card is (or will be) in the buyer's hands and can authorise charging.
LIVE_STATES = frozenset({REQUESTED, PRODUCED, SHIPPED, DELIVERED})


def _luhn_digit(digits: str) -> str:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:  # doubled: the rightmost digit of the payload, then every second one
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def visual_number(country: str) -> str:
    """The number printed on the card: the eMSP's country, 12 random digits and a Luhn check digit."""
    digits = "".join(secrets.choice("0123456789") for _ in range(12))
    return f"{country}-{digits}{_luhn_digit(digits)}"


def luhn_valid(number: str) -> bool:
    digits = number.rpartition("-")[2]
    return digits.isdigit() and _luhn_digit(digits[:-1]) == digits[-1]


def new_uid() -> str:
    """A 7-byte RFID UID as 14 upper-case hex characters."""
    return secrets.token_hex(7).upper()


def create_card(
    session: Session, settings: Settings, contract: ChargingContract, *, now: datetime
) -> ChargingCard:
    """A new card for the contract, requested now and expected within the configured delivery days
    (a random UID or visual number that someone holds already is drawn again)."""
    expected_by = (now + timedelta(days=settings.charging_card_delivery_days)).date()
    for _attempt in range(10):
        card = ChargingCard(
            contract_id=contract.id,
            uid=new_uid(),
            visual_number=visual_number(settings.emsp_country_code),
            state=REQUESTED,
            requested_at=now,
            expected_by=expected_by,
            state_changed_at=now,
            last_updated=now,
        )
        refused = insert_once(session, card)
        if refused is None:
            tokens_changed(session, [card.id], now=now)
            return card
    raise RuntimeError("no free card UID or visual number after 10 attempts")


def cards_of(session: Session, contract_id: int) -> list[ChargingCard]:
    return list(
        session.scalars(
            select(ChargingCard).where(ChargingCard.contract_id == contract_id).order_by(ChargingCard.id)
        )
    )


def _set_state(session: Session, card: ChargingCard, state: str, *, now: datetime) -> None:
    card.state = state
    card.state_changed_at = now
    card.last_updated = now
    session.flush()


def supplier_update(session: Session, card_id: int, state: str, *, now: datetime) -> ChargingCard | None:
    """The card supplier reports a card's new state. None for an unknown card; a state that is not
    one or not reachable from the card's state is refused with an error on "state". Repeating the
    current state changes nothing (the supplier may retry)."""
    if state not in STATES:
        raise ValidationFailed(
            [
                FieldError(
                    "state",
                    N_("Unknown card state: use one of %(states)s."),
                    "unknown",
                    {"states": ", ".join(STATES)},
                )
            ]
        )
    card = session.scalar(select(ChargingCard).where(ChargingCard.id == card_id).with_for_update())
    if card is None:
        return None
    if card.state == state:
        return card
    if state not in SUPPLIER_MOVES[card.state]:
        raise ValidationFailed(
            [
                FieldError(
                    "state",
                    N_("A card in state %(current)s cannot move to %(state)s."),
                    "transition",
                    {"current": card.state, "state": state},
                )
            ]
        )
    _set_state(session, card, state, now=now)
    tokens_changed(session, [card.id], now=now)
    return card


def block(
    session: Session,
    settings: Settings,
    card: ChargingCard,
    *,
    now: datetime,
    actor: str,
    account_id: int | None = None,
) -> ChargingCard | None:
    """A lost or stolen card: blocked at once, and a replacement ordered for the same contract while the
    contract runs. Returns the replacement (None when the card was blocked already or the contract
    ended). A card blocked twice (two tabs) is blocked and replaced once: the first claim wins."""
    claimed = session.execute(
        update(ChargingCard)
        .where(ChargingCard.id == card.id, ChargingCard.state.in_(LIVE_STATES))
        .values(state=BLOCKED, state_changed_at=now, last_updated=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.refresh(card)
    if not claimed:
        return None
    contract = session.get(ChargingContract, card.contract_id)
    replacement: ChargingCard | None = None
    if contract is not None and contract.ended_at is None:
        replacement = create_card(session, settings, contract, now=now)
        card.replaced_by_id = replacement.id
        session.flush()
    audit.record(
        session,
        "charging_card_blocked",
        account_id=account_id,
        actor=actor,
        now=now,
        card_id=card.id,
        replacement_id=replacement.id if replacement else None,
    )
    tokens_changed(session, [card.id], now=now)
    return replacement


def invalidate_contract_cards(session: Session, contract: ChargingContract, *, now: datetime) -> list[int]:
    """The contract ended: its live cards are blocked (their tokens no longer valid). Returns their ids."""
    ids = list(
        session.scalars(
            select(ChargingCard.id).where(
                ChargingCard.contract_id == contract.id, ChargingCard.state.in_(LIVE_STATES)
            )
        )
    )
    if ids:
        session.execute(
            update(ChargingCard)
            .where(ChargingCard.id.in_(ids))
            .values(state=BLOCKED, state_changed_at=now, last_updated=now)
            .execution_options(synchronize_session=False)
        )
        for card in session.scalars(select(ChargingCard).where(ChargingCard.id.in_(ids))):
            session.refresh(card)
        tokens_changed(session, ids, now=now)
    return ids


@dataclass(frozen=True)
class OverdueCard:
    """A card flagged as late, with what support needs to act on it."""

    card_id: int
    account_id: int
    country: str
    order: Order | None
    dealer: Dealer | None
    description: str


def claim_overdue(session: Session, *, now: datetime) -> list[OverdueCard]:
    """Cards still on their way after their expected day, each claimed once (``overdue_flagged_at``):
    a racing scheduler's pass that flagged a card first leaves it out. The caller records the support
    request of each, in this transaction."""
    today = now.date()
    candidates = (
        session.execute(
            select(ChargingCard.id)
            .where(
                ChargingCard.expected_by < today,
                ChargingCard.state.in_((REQUESTED, PRODUCED, SHIPPED)),
                ChargingCard.overdue_flagged_at.is_(None),
            )
            .order_by(ChargingCard.id)
        )
        .scalars()
        .all()
    )
    claimed: list[OverdueCard] = []
    for card_id in candidates:
        won = session.execute(
            update(ChargingCard)
            .where(ChargingCard.id == card_id, ChargingCard.overdue_flagged_at.is_(None))
            .values(overdue_flagged_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if won:
            claimed.append(_overdue(session, card_id))
    return claimed


def _overdue(session: Session, card_id: int) -> OverdueCard:
    card, contract, vehicle = session.execute(
        select(ChargingCard, ChargingContract, Vehicle)
        .join(ChargingContract, ChargingContract.id == ChargingCard.contract_id)
        .join(Vehicle, Vehicle.id == ChargingContract.vehicle_id)
        .where(ChargingCard.id == card_id)
    ).one()
    order = session.get(Order, vehicle.order_id) if vehicle.order_id is not None else None
    dealer = session.get(Dealer, order.dealer_code) if order is not None else None
    # Staff-facing and in English, like every support email: the card as the supplier knows it.
    description = (
        f"Charging card {card.visual_number} (UID {card.uid}) of contract {contract.emaid} was expected "
        f"by {card.expected_by.isoformat()} and is still {card.state}. VIN: {vehicle.vin or 'not assigned'}."
    )
    return OverdueCard(card.id, contract.account_id, vehicle.country, order, dealer, description)
