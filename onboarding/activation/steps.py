"""The activation flow's steps (SPEC §3.4), defined once: ``STEPS``, in their order. Each step is
resumable: the next step is derived from what is stored, never from where the browser was. The
pages walk the steps (``next_step``); the order's funnel reports how far the buyer got
(``invitations.funnel``, one stage per step): the ID (create or log in), the mobile number (SMS
code), the security PIN (models that need it), terms and consents, the billing address, the Data Pass
(models that offer it), the connected services, the vehicle link. A later step (charging) is one more
entry in ``STEPS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.activation.models import Invitation
from onboarding.identity.models import Account, SecurityPin
from vehicles.models import Vehicle, VehicleModel, VehicleRole, VehicleUser

ID, PHONE, PIN = "id", "phone", "pin"
TERMS, BILLING, DATA_PASS, SERVICES, VEHICLE = "terms", "billing", "data_pass", "services", "vehicle"
CHARGING = "charging"
DONE_URL = "/activate/done"


class Progress:
    """What is stored of one invitation's way through the flow, read once and only as a step asks
    (walking the steps stops at the first one not done)."""

    def __init__(self, session: Session, invitation: Invitation | None) -> None:
        self.session = session
        self.invitation = invitation

    @cached_property
    def account(self) -> Account | None:
        """The ID this invitation activates, once it is created or linked."""
        if self.invitation is None or self.invitation.account_id is None:
            return None
        return self.session.get(Account, self.invitation.account_id)

    @cached_property
    def security_pin(self) -> SecurityPin | None:
        return self.session.get(SecurityPin, self.account.id) if self.account is not None else None

    @cached_property
    def vehicle_linked_at(self) -> datetime | None:
        """When the order's vehicle was linked to this invitation's ID as its primary user."""
        if self.invitation is None or self.invitation.account_id is None:
            return None
        return self.session.scalar(
            select(VehicleUser.linked_at)
            .join(Vehicle, Vehicle.id == VehicleUser.vehicle_id)
            .where(
                Vehicle.order_id == self.invitation.order_id,
                VehicleUser.account_id == self.invitation.account_id,
                VehicleUser.role == VehicleRole.PRIMARY,
                VehicleUser.ended_at.is_(None),
            )
        )


def _always(model: VehicleModel | None) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    url: str
    # The order's funnel stage once this step is done (the orders API's ``onboarding.stage``).
    stage: str
    # When the buyer did it, from what is stored; None while it is not done.
    done_at: Callable[[Progress], datetime | None]
    # Whether the flow asks for it, for the car's model.
    applies: Callable[[VehicleModel | None], bool] = _always
    # When the funnel counts it reached, where that differs from the flow's "done" (the vehicle step is
    # done for the flow once the buyer has read that the link follows the VIN; the funnel waits for the
    # link itself).
    reached_at: Callable[[Progress], datetime | None] | None = None

    def funnel_at(self, progress: Progress) -> datetime | None:
        return (self.reached_at or self.done_at)(progress)


def _id_done_at(progress: Progress) -> datetime | None:
    # Set together with the invitation's ID (``invitations.attach_account``).
    return progress.invitation.id_created_at if progress.invitation and progress.account else None


def _phone_done_at(progress: Progress) -> datetime | None:
    return progress.account.phone_verified_at if progress.account else None


def _pin_done_at(progress: Progress) -> datetime | None:
    return progress.security_pin.set_at if progress.security_pin else None


def _needs_pin(model: VehicleModel | None) -> bool:
    # The buyer who activates from the order's invitation is the car's primary user, the only one who
    # sets the PIN (SPEC §3.3).
    return model is not None and model.requires_security_pin


def _offers_data_pass(model: VehicleModel | None) -> bool:
    return model is not None and model.offers_data_pass


def _invitation_time(name: str) -> Callable[[Progress], datetime | None]:
    def done_at(progress: Progress) -> datetime | None:
        value: datetime | None = getattr(progress.invitation, name) if progress.invitation else None
        return value

    return done_at


def _plugs_in(model: VehicleModel | None) -> bool:
    # The charging service is offered for plug-in hybrids and electric cars (SPEC §3.6).
    return model is not None and model.powertrain in ("PHEV", "BEV")


def _vehicle_linked_at(progress: Progress) -> datetime | None:
    return progress.vehicle_linked_at


STEPS: tuple[Step, ...] = (
    Step(ID, "/activate/id", "id_created", _id_done_at),
    Step(PHONE, "/activate/phone", "phone_verified", _phone_done_at),
    Step(PIN, "/activate/pin", "pin_set", _pin_done_at, _needs_pin),
    Step(TERMS, "/activate/terms", "terms_accepted", _invitation_time("terms_done_at")),
    Step(BILLING, "/activate/billing", "billing_checked", _invitation_time("billing_done_at")),
    Step(
        DATA_PASS,
        "/activate/data-pass",
        "data_pass",
        _invitation_time("data_pass_done_at"),
        _offers_data_pass,
    ),
    Step(SERVICES, "/activate/services", "services_active", _invitation_time("services_done_at")),
    Step(
        VEHICLE,
        "/activate/vehicle",
        "vehicle_linked",
        _invitation_time("vehicle_done_at"),
        reached_at=_vehicle_linked_at,
    ),
    Step(CHARGING, "/activate/charging", "charging", _invitation_time("charging_done_at"), _plugs_in),
)
_BY_NAME = {step.name: step for step in STEPS}


def step(name: str) -> Step:
    return _BY_NAME[name]


def next_step(session: Session, invitation: Invitation, model: VehicleModel | None) -> str | None:
    """The first unfinished step that applies to the model, or None when the flow is done."""
    progress = Progress(session, invitation)
    for candidate in STEPS:
        if candidate.applies(model) and candidate.done_at(progress) is None:
            return candidate.name
    return None


def step_url(name: str | None) -> str:
    return DONE_URL if name is None else _BY_NAME[name].url
