"""indexes for QIDO paging in key order

Revision ID: c06f8d267a7c
Revises: 68b50cf7814a
Create Date: 2026-11-25 13:26:02.671127
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c06f8d267a7c"
down_revision: str | None = "68b50cf7814a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_partition_key_instance_key"),
            ["partition_key", "instance_key"],
            unique=False,
        )

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_series_partition_key_series_key"),
            ["partition_key", "series_key"],
            unique=False,
        )

    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_study_partition_key_study_key"),
            ["partition_key", "study_key"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_partition_key_study_key"))

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_partition_key_series_key"))

    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_partition_key_instance_key"))
