"""one live order per VIN: a partial unique index on orders.vin (cancelled orders excluded)

Revision ID: 63d4562de61f
Revises: f0827a63c02a
Create Date: 2026-12-01 22:43:31.974802
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '63d4562de61f'
down_revision: str | None = 'f0827a63c02a'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("production_status != 'cancelled'")


def upgrade() -> None:
    # The application refused such duplicates before, but two concurrent requests could store one;
    # name them rather than fail on the index with the database's message.
    shared = op.get_bind().execute(
        sa.text(
            "SELECT vin FROM orders WHERE vin IS NOT NULL AND production_status != 'cancelled' "
            "GROUP BY vin HAVING count(*) > 1"
        )
    ).scalars().all()
    if shared:
        raise RuntimeError(
            f"{len(shared)} VIN(s) belong to more than one live order (e.g. {shared[0]}); "
            "cancel or correct those orders, then upgrade again."
        )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('uq_orders_vin_live', ['vin'], unique=True, sqlite_where=LIVE, postgresql_where=LIVE)


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('uq_orders_vin_live', sqlite_where=LIVE, postgresql_where=LIVE)
