"""The activation flow's order of steps (SPEC §3.4). Each step is resumable: the next step is
derived from what is stored, never from where the browser was. Steps so far: the ID (create or log
in), the mobile number (SMS code), the security PIN (models that need it). Later steps (terms,
billing, Data Pass, services, vehicle link, charging) slot into ``next_step`` as they are built."""

from __future__ import annotations

from sqlalchemy.orm import Session

from onboarding.activation.models import Invitation
from onboarding.identity import pin
from onboarding.identity.models import Account
from vehicles.models import VehicleModel

ID, PHONE, PIN = "id", "phone", "pin"
STEP_URLS = {ID: "/activate/id", PHONE: "/activate/phone", PIN: "/activate/pin", None: "/activate/done"}


def next_step(session: Session, invitation: Invitation, model: VehicleModel | None) -> str | None:
    """The first unfinished step, or None when the flow is done."""
    if invitation.account_id is None:
        return ID
    account = session.get(Account, invitation.account_id)
    if account is None:
        return ID
    if account.phone_verified_at is None:
        return PHONE
    # The buyer who activates from the order's invitation is the car's primary user, the only one who
    # sets the PIN (SPEC §3.3).
    if model is not None and model.requires_security_pin and not pin.has_pin(session, account):
        return PIN
    return None


def step_url(step: str | None) -> str:
    return STEP_URLS[step]
