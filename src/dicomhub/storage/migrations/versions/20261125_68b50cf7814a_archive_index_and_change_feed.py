"""archive index and change feed

Revision ID: 68b50cf7814a
Revises:
Create Date: 2026-11-25 11:55:27.627892
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "68b50cf7814a"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_deletion",
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", name=op.f("pk_blob_deletion")),
    )
    op.create_table(
        "partition",
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition_key", name=op.f("pk_partition")),
        sa.UniqueConstraint("name", name=op.f("uq_partition_name")),
    )
    op.create_table(
        "changefeed",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "instance_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["partition_key"],
            ["partition.partition_key"],
            name=op.f("fk_changefeed_partition_key_partition"),
        ),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_changefeed")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("changefeed", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_changefeed_partition_key_sop_instance_uid"),
            ["partition_key", "sop_instance_uid"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_changefeed_timestamp_sequence"), ["timestamp", "sequence"], unique=False
        )

    op.create_table(
        "study",
        sa.Column(
            "study_key",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=True),
        sa.Column("patient_name_norm", sa.Text(), nullable=True),
        sa.Column("patient_name_words", sa.Text(), nullable=True),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=True),
        sa.Column("patient_sex", sa.Text(), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=13), nullable=True),
        sa.Column("accession_number", sa.Text(), nullable=True),
        sa.Column("referring_physician_norm", sa.Text(), nullable=True),
        sa.Column("referring_physician_words", sa.Text(), nullable=True),
        sa.Column("study_id", sa.Text(), nullable=True),
        sa.Column("study_description", sa.Text(), nullable=True),
        sa.Column("num_series", sa.Integer(), server_default="0", nullable=False),
        sa.Column("num_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("modalities", sa.Text(), nullable=True),
        sa.Column("sop_classes", sa.Text(), nullable=True),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partition_key"],
            ["partition.partition_key"],
            name=op.f("fk_study_partition_key_partition"),
        ),
        sa.PrimaryKeyConstraint("study_key", name=op.f("pk_study")),
        sa.UniqueConstraint(
            "partition_key", "study_uid", name=op.f("uq_study_partition_key_study_uid")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_study_partition_key_accession_number"),
            ["partition_key", "accession_number"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_study_partition_key_patient_id"),
            ["partition_key", "patient_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_study_partition_key_patient_name_norm"),
            ["partition_key", "patient_name_norm"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_study_partition_key_study_date"),
            ["partition_key", "study_date"],
            unique=False,
        )

    op.create_table(
        "series",
        sa.Column(
            "series_key",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "study_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.Text(), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.Text(), nullable=True),
        sa.Column("body_part_examined", sa.Text(), nullable=True),
        sa.Column("manufacturer", sa.Text(), nullable=True),
        sa.Column("institution_name", sa.Text(), nullable=True),
        sa.Column("pps_start_date", sa.String(length=8), nullable=True),
        sa.Column("pps_start_time", sa.String(length=13), nullable=True),
        sa.Column("num_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partition_key"],
            ["partition.partition_key"],
            name=op.f("fk_series_partition_key_partition"),
        ),
        sa.ForeignKeyConstraint(
            ["study_key"], ["study.study_key"], name=op.f("fk_series_study_key_study")
        ),
        sa.PrimaryKeyConstraint("series_key", name=op.f("pk_series")),
        sa.UniqueConstraint(
            "partition_key", "series_uid", name=op.f("uq_series_partition_key_series_uid")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_series_partition_key_modality"),
            ["partition_key", "modality"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_series_study_key_modality"), ["study_key", "modality"], unique=False
        )

    op.create_table(
        "instance",
        sa.Column(
            "instance_key",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "series_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "study_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("partition_key", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        sa.Column("frames", sa.LargeBinary(), nullable=True),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partition_key"],
            ["partition.partition_key"],
            name=op.f("fk_instance_partition_key_partition"),
        ),
        sa.ForeignKeyConstraint(
            ["series_key"], ["series.series_key"], name=op.f("fk_instance_series_key_series")
        ),
        sa.ForeignKeyConstraint(
            ["study_key"], ["study.study_key"], name=op.f("fk_instance_study_key_study")
        ),
        sa.PrimaryKeyConstraint("instance_key", name=op.f("pk_instance")),
        sa.UniqueConstraint("blob_id", name=op.f("uq_instance_blob_id")),
        sa.UniqueConstraint(
            "partition_key",
            "sop_instance_uid",
            name=op.f("uq_instance_partition_key_sop_instance_uid"),
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_series_key_instance_number"),
            ["series_key", "instance_number"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_instance_study_key_sop_class_uid"),
            ["study_key", "sop_class_uid"],
            unique=False,
        )

    op.create_table(
        "instance_metadata",
        sa.Column(
            "instance_key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("json", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_key"],
            ["instance.instance_key"],
            name=op.f("fk_instance_metadata_instance_key_instance"),
        ),
        sa.PrimaryKeyConstraint("instance_key", name=op.f("pk_instance_metadata")),
    )
    # Data partitions exist from the start; this is the one every route uses until partition routes exist.
    partition = sa.table(
        "partition",
        sa.column("partition_key", sa.Integer),
        sa.column("name", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        partition,
        [{"partition_key": 1, "name": "Microsoft.Default", "created_at": datetime.now(UTC)}],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('partition', 'partition_key'), 1)")


def downgrade() -> None:
    op.drop_table("instance_metadata")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_study_key_sop_class_uid"))
        batch_op.drop_index(batch_op.f("ix_instance_series_key_instance_number"))

    op.drop_table("instance")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_study_key_modality"))
        batch_op.drop_index(batch_op.f("ix_series_partition_key_modality"))

    op.drop_table("series")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_partition_key_study_date"))
        batch_op.drop_index(batch_op.f("ix_study_partition_key_patient_name_norm"))
        batch_op.drop_index(batch_op.f("ix_study_partition_key_patient_id"))
        batch_op.drop_index(batch_op.f("ix_study_partition_key_accession_number"))

    op.drop_table("study")
    with op.batch_alter_table("changefeed", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_changefeed_timestamp_sequence"))
        batch_op.drop_index(batch_op.f("ix_changefeed_partition_key_sop_instance_uid"))

    op.drop_table("changefeed")
    op.drop_table("partition")
    op.drop_table("blob_deletion")
