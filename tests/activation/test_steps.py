"""The activation's steps are defined once (``onboarding.activation.steps.STEPS``): the pages walk
them in that order and the order's funnel reports them as its stages, in the same order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.activation import steps
from onboarding.activation.invitations import FUNNEL_STAGES, funnel
from onboarding.activation.models import Invitation
from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from tests.conftest import Database
from tests.helpers import (
    billing_step,
    charging_step,
    data_pass_step,
    id_form,
    invite_through_api,
    path_of,
    services_step,
    set_pin_step,
    terms_step,
    vehicle_step,
    verify_phone_step,
)
from vehicles.models import Order, VehicleModel
from vehicles.schemas import OnboardingFunnel


def test_the_funnel_has_one_stage_per_step_in_the_steps_order() -> None:
    names = [step.name for step in steps.STEPS]
    stages = [step.stage for step in steps.STEPS]
    assert len(set(names)) == len(names) and len(set(stages)) == len(stages)
    ladder = ("not_due", "due", "invited", "opened", *stages, "completed")
    assert ladder == FUNNEL_STAGES
    # The orders API documents the stages (its schema is part of the contract): in the same order.
    description = OnboardingFunnel.model_fields["stage"].description or ""
    assert tuple(description.replace(" or ", ", ").split(", ")) == FUNNEL_STAGES
    assert [steps.step_url(name) for name in names] == [step.url for step in steps.STEPS]
    assert steps.step_url(None) == steps.DONE_URL


def _where(db: Database, model_code: str) -> tuple[str | None, str]:
    """The step due and the funnel's stage for order SO-1, from what is stored."""
    with db.factory() as session:
        order = session.scalars(select(Order).where(Order.order_number == "SO-1")).one()
        invitation = session.scalars(select(Invitation).where(Invitation.order_id == order.id)).one()
        model = session.get(VehicleModel, model_code)
        assert order.model_code == model_code and model is not None
        return steps.next_step(session, invitation, model), funnel(session, order, now=utcnow()).stage


# How a buyer does each step through the pages; the answer redirects to what comes next. A new step
# in ``steps.STEPS`` needs its entry here (the walk below fails without it).
_DO: dict[str, Callable[[TestClient, Database], Any]] = {
    steps.ID: lambda client, db: client.post("/activate/id", data=id_form(client), follow_redirects=False),
    steps.PHONE: lambda client, db: verify_phone_step(client, db.factory),
    steps.PIN: lambda client, db: set_pin_step(client),
    steps.TERMS: lambda client, db: terms_step(client),
    steps.BILLING: lambda client, db: billing_step(client),
    steps.DATA_PASS: lambda client, db: data_pass_step(client),
    steps.SERVICES: lambda client, db: services_step(client),
    steps.VEHICLE: lambda client, db: vehicle_step(client),
    steps.CHARGING: lambda client, db: charging_step(client),
}


@pytest.mark.parametrize("model_code", ["E40", "S90"], ids=["needs a PIN", "no PIN"])
def test_a_buyer_walks_the_steps_in_order(
    db: Database,
    reference: None,
    settings: Settings,
    client: TestClient,
    api_headers: dict[str, str],
    model_code: str,
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers, model_code=model_code)))
    with db.factory() as session:
        model = session.get(VehicleModel, model_code)
        due = [step for step in steps.STEPS if step.applies(model)]
    after_pin = [steps.TERMS, steps.BILLING, steps.SERVICES, steps.VEHICLE]
    assert [step.name for step in due] == (
        [
            steps.ID,
            steps.PHONE,
            steps.PIN,
            steps.TERMS,
            steps.BILLING,
            steps.DATA_PASS,
            steps.SERVICES,
            steps.VEHICLE,
            steps.CHARGING,
        ]
        if model_code == "E40"
        else [steps.ID, steps.PHONE, *after_pin]
    )

    stage = "opened"
    for i, step in enumerate(due):
        assert _where(db, model_code) == (step.name, stage)
        page = client.get("/activate")
        assert page.status_code == 200 and f'href="{step.url}"' in page.text
        answer = _DO[step.name](client, db)
        following = due[i + 1].url if i + 1 < len(due) else steps.DONE_URL
        assert (answer.status_code, answer.headers["location"]) == (303, following)
        # The order has no VIN: the funnel counts the vehicle step reached only once the car is linked.
        if step.name != steps.VEHICLE:
            stage = step.stage
    assert _where(db, model_code) == (None, "completed")
    assert client.get(steps.DONE_URL).status_code == 200


def test_each_later_step_waits_for_the_one_before(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    first, *later = steps.STEPS
    for step in later:
        early = client.get(step.url, follow_redirects=False)
        assert (early.status_code, early.headers["location"]) == (303, first.url)
    _DO[first.name](client, db)
    # Every step after the next one sends the buyer back to the one that is due.
    due, *after = later
    for step in after:
        early = client.get(step.url, follow_redirects=False)
        assert (early.status_code, early.headers["location"]) == (303, due.url)
    client.cookies.delete("onb_session")
    for step in later:
        signed_out = client.get(step.url, follow_redirects=False)
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, f"/login?next={step.url}")
