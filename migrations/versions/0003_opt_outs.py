"""Opt-outs providers list on their own (smsend's SMS blacklist), remembered by number.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

``opt_outs`` keeps every opt-out a provider reported, whether or not the book
holds the number yet: a number added to the book later starts opted out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "opt_outs",
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.current_timestamp(),
                  nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_opt_outs")),
    )
    op.create_index(op.f("ix_opt_outs_provider_listed_at"), "opt_outs", ["provider", "listed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_opt_outs_provider_listed_at"), table_name="opt_outs")
    op.drop_table("opt_outs")
