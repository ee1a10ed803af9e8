"""Charging contracts (SPEC §3.6): the charging service booked by the live primary user of a plug-in
hybrid or electric car, identified by an eMAID, with its first card; ended when that user's link to
the car ends (removal, leaving, transfer), which makes its cards invalid.

One live contract per vehicle: booking locks the vehicle's row (PostgreSQL; SQLite's write transaction
is exclusive already) and looks again, so two racing bookings make one contract and the second
returns it. Nothing here commits."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity import account_blocking, audit
from onboarding.identity.models import Account
from vehicles import links
from vehicles.charging import cards
from vehicles.charging.emaid import make_emaid
from vehicles.charging.models import ChargingCard, ChargingContract
from vehicles.models import Vehicle, VehicleModel
from vehicles.service import insert_once

PLUG_IN_POWERTRAINS = ("PHEV", "BEV")
_INSTANCE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Why a contract ended (``ChargingContract.ended_reason``), besides a link's end reason.
ENDED_BY_USER = "ended_by_user"


def plugs_in(session: Session, vehicle: Vehicle) -> bool:
    model = session.get(VehicleModel, vehicle.model_code)
    return model is not None and model.powertrain in PLUG_IN_POWERTRAINS


def live_contract(session: Session, vehicle_id: int) -> ChargingContract | None:
    return session.scalar(
        select(ChargingContract)
        .where(ChargingContract.vehicle_id == vehicle_id, ChargingContract.ended_at.is_(None))
        .order_by(ChargingContract.id)
        .limit(1)
    )


def may_book(session: Session, vehicle: Vehicle, account_id: int) -> bool:
    """Whether this ID can book the charging service for the car now (no contract yet)."""
    primary = links.primary_of(session, vehicle.id)
    return (
        primary is not None
        and primary.account_id == account_id
        and plugs_in(session, vehicle)
        and live_contract(session, vehicle.id) is None
    )


def _instance() -> str:
    return "C" + "".join(secrets.choice(_INSTANCE_ALPHABET) for _ in range(8))


def book(
    session: Session, settings: Settings, vehicle: Vehicle, account: Account, *, now: datetime
) -> tuple[ChargingContract, bool]:
    """Books the charging service for the car: (contract, created). Booking again returns the live
    contract. Refused (an error on "vehicle") unless the ID is the car's live primary user and the car
    is a plug-in hybrid or electric car."""
    if not plugs_in(session, vehicle):
        raise ValidationFailed(
            [
                FieldError(
                    "vehicle",
                    N_("The charging service is for plug-in hybrid and electric cars."),
                    "powertrain",
                )
            ]
        )
    # Serialise bookings of this car (no unique index says "one live contract per vehicle").
    session.scalar(select(Vehicle.id).where(Vehicle.id == vehicle.id).with_for_update())
    primary = links.primary_of(session, vehicle.id)
    if primary is None or primary.account_id != account.id:
        raise ValidationFailed(
            [
                FieldError(
                    "vehicle", N_("Only the car's primary user can book the charging service."), "not_primary"
                )
            ]
        )
    existing = live_contract(session, vehicle.id)
    if existing is not None:
        return existing, False
    for _attempt in range(10):
        emaid = make_emaid(settings.emsp_country_code, settings.emsp_party_id, _instance())
        contract = ChargingContract(
            emaid=str(emaid), account_id=account.id, vehicle_id=vehicle.id, created_at=now
        )
        if insert_once(session, contract) is None:
            break
    else:  # pragma: no cover - 36^8 instances
        raise RuntimeError("no free eMAID instance after 10 attempts")
    cards.create_card(session, settings, contract, now=now)
    audit.record(
        session,
        "charging_booked",
        account_id=account.id,
        actor="self",
        now=now,
        vehicle_id=vehicle.id,
        emaid=contract.emaid,
    )
    return contract, True


def end_contract(session: Session, contract: ChargingContract, *, reason: str, now: datetime) -> list[int]:
    """Ends the contract (kept for the record) and invalidates its cards; returns the cards' ids.
    Ending an ended contract does nothing."""
    if contract.ended_at is not None:
        return []
    contract.ended_at = now
    contract.ended_reason = reason[:40]
    session.flush()
    return cards.invalidate_contract_cards(session, contract, now=now)


def contract_cards(session: Session, contract: ChargingContract) -> list[ChargingCard]:
    return cards.cards_of(session, contract.id)


@links.on_link_ended
def end_contracts_of_ended_link(session: Session, event: links.LinkEnded) -> None:
    """The contract holder no longer uses the car: their contract for it ends, with the link's reason."""
    for contract in session.scalars(
        select(ChargingContract).where(
            ChargingContract.vehicle_id == event.vehicle_id,
            ChargingContract.account_id == event.account_id,
            ChargingContract.ended_at.is_(None),
        )
    ).all():
        end_contract(session, contract, reason=event.reason, now=event.at)


def end_contracts_of_deactivated_account(
    session: Session, event: account_blocking.AccountDeactivated
) -> None:
    """A blocked (or deleted) ID's contracts end and their cards are blocked, so the operators are
    told at once that the tokens are no longer valid."""
    for contract in session.scalars(
        select(ChargingContract).where(
            ChargingContract.account_id == event.account_id, ChargingContract.ended_at.is_(None)
        )
    ).all():
        end_contract(session, contract, reason=event.reason, now=event.at)


account_blocking.on_account_deactivated.append(end_contracts_of_deactivated_account)
