"""Tenancy (SPEC §3.8: nobody sees another dealer's or market's data), in the queries: every portal
query takes its rows through ``scoped``, which adds the signed-in staff member's tenant to the
statement. A row outside it is then not found (the pages answer 404, as for a row that does not
exist), whatever the page does next.

Dealer agents and admins see their dealer's rows, market agents their country's, platform admins
all. Each table the portal reads is listed in ``TENANT_COLUMNS`` with the columns that hold its
dealer and its country; a table not listed cannot be scoped (``KeyError``), so it cannot be read
unscoped by mistake."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, false
from sqlalchemy.orm import InstrumentedAttribute

from onboarding.activation.models import SupportRequest
from onboarding.identity.models import AuditEvent
from onboarding.portal.models import DEALER_ROLES, StaffMember, StaffRole
from vehicles.models import Dealer, Order

S = TypeVar("S", bound=Select[*tuple[Any, ...]])

TENANT_COLUMNS: dict[type, tuple[InstrumentedAttribute[Any], InstrumentedAttribute[Any]]] = {
    Order: (Order.dealer_code, Order.country),
    SupportRequest: (SupportRequest.dealer_code, SupportRequest.country),
    Dealer: (Dealer.code, Dealer.country),
    StaffMember: (StaffMember.dealer_code, StaffMember.country),
    AuditEvent: (AuditEvent.dealer_code, AuditEvent.country),
}


def tenant_of(row: object) -> tuple[str | None, str | None]:
    """The dealer and country of ``row`` (of a table in ``TENANT_COLUMNS``)."""
    dealer_column, country_column = TENANT_COLUMNS[type(row)]
    return getattr(row, dealer_column.key), getattr(row, country_column.key)


def scoped(staff: StaffMember, statement: S, entity: type) -> S:
    """``statement`` limited to the rows of ``entity`` (a table in ``TENANT_COLUMNS``) that ``staff``
    may see."""
    dealer_column, country_column = TENANT_COLUMNS[entity]
    if staff.deactivated_at is not None:
        return statement.where(false())
    if staff.role == StaffRole.PLATFORM_ADMIN:
        return statement
    if staff.role in DEALER_ROLES and staff.dealer_code:
        return statement.where(dealer_column == staff.dealer_code)
    if staff.role == StaffRole.MARKET_AGENT and staff.country:
        return statement.where(country_column == staff.country)
    return statement.where(false())  # a role or tenant we do not know sees nothing
