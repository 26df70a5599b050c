"""Deliveries record when they started sending; destinations lose their credentials.

`sending_since` lets the reconciler find sends whose worker died. Rows already `sending`
get the upgrade time, so a send in flight during the upgrade is not re-queued at once.
Destination labels written before credentials were redacted have their `user:password@`
replaced by `***@` (the audit trail is append-only and keeps what it recorded).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_USERINFO = re.compile(r"^(https?://)[^/?#]*@", re.IGNORECASE)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sending_since", sa.DateTime(timezone=True), nullable=True))
    deliveries = sa.table("deliveries", sa.column("id", sa.Integer()),
                          sa.column("status", sa.String()), sa.column("destination", sa.Text()),
                          sa.column("sending_since", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    bind.execute(deliveries.update().where(deliveries.c.status == "sending")
                 .values(sending_since=datetime.now(UTC)))
    rows = bind.execute(sa.select(deliveries.c.id, deliveries.c.destination)
                        .where(deliveries.c.destination.like("%@%"))).all()
    for row_id, destination in rows:
        redacted = _USERINFO.sub(r"\1***@", destination)
        if redacted != destination:
            bind.execute(deliveries.update().where(deliveries.c.id == row_id)
                         .values(destination=redacted))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("sending_since")
