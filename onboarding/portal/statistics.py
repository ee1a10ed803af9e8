"""Activation statistics per dealer and market (SPEC §3.8) over a chosen period (orders created in
it): the funnel (how many orders reached each stage of the activation, from the stored
``Order.onboarding_stage``, the furthest each reached), the median days from the invitation to active
services, and where buyers stall: the step with the largest drop and the orders stuck there longest.
Every query goes through ``scope.scoped``."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onboarding.activation import invitations
from onboarding.activation.models import Invitation
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.portal.models import StaffMember
from onboarding.portal.scope import scoped
from vehicles.models import Order

# The funnel's stages as stored ("due" is stored as "not_due": ordered, not invited yet).
STAGES: tuple[str, ...] = tuple(stage for stage in invitations.FUNNEL_STAGES if stage != "due")
STUCK_SHOWN = 10
MAX_DAYS = 731


@dataclass(frozen=True)
class StageCount:
    stage: str
    reached: int  # orders whose furthest stage is this one or a later one
    share: float  # of all orders in the period


@dataclass(frozen=True)
class StuckOrder:
    order_number: str
    days: int  # since the order last moved


@dataclass(frozen=True)
class ActivationStatistics:
    since: date
    until: date
    total: int
    funnel: list[StageCount]
    median_days_to_services: float | None
    services_measured: int
    stall_stage: str | None  # the stage after which most orders stop
    stall_drop: int
    stuck: list[StuckOrder]


def parse_period(since_text: str | None, until_text: str | None, *, today: date) -> tuple[date, date]:
    """The period's first and last day (default: the last 90 days); ``ValidationFailed`` names a bad one."""
    errors: list[FieldError] = []

    def day(text: str | None, name: str, default: date) -> date:
        if not text:
            return default
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            errors.append(FieldError(name, N_("Enter a date as YYYY-MM-DD.")))
            return default

    until = day(until_text, "until", today)
    since = day(since_text, "since", until - timedelta(days=89))
    if not errors and since > until:
        errors.append(FieldError("until", N_("The end of the period is before its start.")))
    if not errors and (until - since).days > MAX_DAYS:
        errors.append(FieldError("since", N_("Choose a period of at most two years.")))
    if errors:
        raise ValidationFailed(errors)
    return since, until


def activation_statistics(
    session: Session, staff: StaffMember, *, since: date, until: date, now: datetime
) -> ActivationStatistics:
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    in_period = (Order.created_at >= start, Order.created_at < end)
    counts: dict[str, int] = {
        row[0]: int(row[1])
        for row in session.execute(
            scoped(staff, select(Order.onboarding_stage, func.count()), Order)
            .where(*in_period)
            .group_by(Order.onboarding_stage)
        )
    }
    total = sum(counts.values())
    funnel = []
    reached = 0
    for stage in reversed(STAGES):
        reached += counts.get(stage, 0)
        funnel.append(StageCount(stage, reached, reached / total if total else 0.0))
    funnel.reverse()
    # The largest drop between two stages in a row (from "invited" on: before it, orders wait for
    # their invitation's day, which is no stall).
    stall_stage, stall_drop = None, 0
    for here, after in pairwise(funnel[1:]):
        drop = here.reached - after.reached
        if drop > stall_drop:
            stall_stage, stall_drop = here.stage, drop
    stuck = []
    if stall_stage is not None:
        rows = session.execute(
            scoped(staff, select(Order.order_number, Order.updated_at), Order)
            .where(*in_period, Order.onboarding_stage == stall_stage)
            .order_by(Order.updated_at, Order.id)
            .limit(STUCK_SHOWN)
        )
        stuck = [StuckOrder(number, max(0, (now - moved).days)) for number, moved in rows]
    durations = [
        (row[1] - row[0]).total_seconds() / 86400
        for row in session.execute(
            scoped(staff, select(Invitation.sent_at, Invitation.services_done_at), Order)
            .join(Order, Order.id == Invitation.order_id)
            .where(*in_period, Invitation.sent_at.is_not(None), Invitation.services_done_at.is_not(None))
        )
        if row[0] is not None and row[1] is not None
    ]
    median = round(statistics.median(durations), 1) if durations else None
    return ActivationStatistics(
        since, until, total, funnel, median, len(durations), stall_stage, stall_drop, stuck
    )
