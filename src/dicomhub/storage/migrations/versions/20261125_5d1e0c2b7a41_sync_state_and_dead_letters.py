"""sync state and dead letters

Revision ID: 5d1e0c2b7a41
Revises: 96a2c5a8d81b
Create Date: 2026-11-25 16:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1e0c2b7a41"
down_revision: str | None = "96a2c5a8d81b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("sequence", _KEY, nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "sync_dead_letter",
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("sequence", _KEY, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partition_key"],
            ["partition.partition_key"],
            name=op.f("fk_sync_dead_letter_partition_key_partition"),
        ),
        sa.PrimaryKeyConstraint(
            "target", "partition_key", "study_uid", name=op.f("pk_sync_dead_letter")
        ),
    )


def downgrade() -> None:
    op.drop_table("sync_dead_letter")
    op.drop_table("sync_state")
