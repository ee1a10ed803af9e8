"""dealer staff carry their dealer's country

Revision ID: ddd41446e552
Revises: 4409872d0222
Create Date: 2026-12-03 07:13:53.961067
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import onboarding.core.db


revision: str = 'ddd41446e552'
down_revision: str | None = '4409872d0222'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Data only: dealer staff created before this carried no country, so their own audit entries
    # (sign-ins, failures) were hidden from their market's agents.
    op.execute(
        "UPDATE staff_members SET country = "
        "(SELECT dealers.country FROM dealers WHERE dealers.code = staff_members.dealer_code) "
        "WHERE dealer_code IS NOT NULL AND country IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE staff_members SET country = NULL WHERE dealer_code IS NOT NULL")
