"""Room in change_log.status for the pending-delete statuses (``awaiting_approval`` is 17 characters).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

PostgreSQL enforces a varchar's length; SQLite does not, but the column is
widened there too so that both schemas match the models. SQLite cannot alter a
column's type in place: alembic's batch mode copies the table once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=24),
                           existing_nullable=False)


def downgrade() -> None:
    # a pending-delete status does not fit the old column: they go back to a plain "skipped"
    op.execute("UPDATE change_log SET status = 'skipped' WHERE length(status) > 16")
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("status", existing_type=sa.String(length=24), type_=sa.String(length=16),
                           existing_nullable=False)
