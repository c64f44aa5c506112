"""fhir store resources versions and search index

Revision ID: 96a2c5a8d81b
Revises: c06f8d267a7c
Create Date: 2026-11-25 14:13:02.885342
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "96a2c5a8d81b"
down_revision: str | None = "c06f8d267a7c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_resource",
        sa.Column(
            "resource_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("resource_pk", name=op.f("pk_fhir_resource")),
        sa.UniqueConstraint("res_type", "res_id", name=op.f("uq_fhir_resource_res_type_res_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("fhir_resource", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_resource_res_type_last_updated"),
            ["res_type", "last_updated"],
            unique=False,
        )

    op.create_table(
        "fhir_idx_date",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_date_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_date", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_date_res_type_param_high"),
            ["res_type", "param", "high"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_date_res_type_param_low"),
            ["res_type", "param", "low"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_date_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_idx_number",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_number_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_number", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_number_res_type_param_value"),
            ["res_type", "param", "value"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_number_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_idx_quantity",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_quantity_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_quantity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_quantity_res_type_param_code_value"),
            ["res_type", "param", "code", "value"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_quantity_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_idx_reference",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("identifier_system", sa.Text(), nullable=True),
        sa.Column("identifier_value", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_reference_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_reference", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_reference_res_type_param_target_type_target_id"),
            ["res_type", "param", "target_type", "target_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_reference_resource_pk"), ["resource_pk"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_reference_target", ["target_type", "target_id"], unique=False
        )

    op.create_table(
        "fhir_idx_string",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("norm", sa.Text(), nullable=False),
        sa.Column("exact", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_string_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_string", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_string_res_type_param_norm"),
            ["res_type", "param", "norm"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_string_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_idx_token",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_token_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_token", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_token_res_type_param_code_system"),
            ["res_type", "param", "code", "system"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_token_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_idx_uri",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_idx_uri_resource_pk_fhir_resource"),
        ),
    )
    with op.batch_alter_table("fhir_idx_uri", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_uri_res_type_param_uri"),
            ["res_type", "param", "uri"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_idx_uri_resource_pk"), ["resource_pk"], unique=False
        )

    op.create_table(
        "fhir_version",
        sa.Column(
            "resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["fhir_resource.resource_pk"],
            name=op.f("fk_fhir_version_resource_pk_fhir_resource"),
        ),
        sa.PrimaryKeyConstraint("resource_pk", "version", name=op.f("pk_fhir_version")),
    )
    with op.batch_alter_table("fhir_version", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_version_last_updated"), ["last_updated"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_version_res_type_last_updated"),
            ["res_type", "last_updated"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("fhir_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_version_res_type_last_updated"))
        batch_op.drop_index(batch_op.f("ix_fhir_version_last_updated"))

    op.drop_table("fhir_version")
    with op.batch_alter_table("fhir_idx_uri", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_uri_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_uri_res_type_param_uri"))

    op.drop_table("fhir_idx_uri")
    with op.batch_alter_table("fhir_idx_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_token_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_token_res_type_param_code_system"))

    op.drop_table("fhir_idx_token")
    with op.batch_alter_table("fhir_idx_string", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_string_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_string_res_type_param_norm"))

    op.drop_table("fhir_idx_string")
    with op.batch_alter_table("fhir_idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_reference_target")
        batch_op.drop_index(batch_op.f("ix_fhir_idx_reference_resource_pk"))
        batch_op.drop_index(
            batch_op.f("ix_fhir_idx_reference_res_type_param_target_type_target_id")
        )

    op.drop_table("fhir_idx_reference")
    with op.batch_alter_table("fhir_idx_quantity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_quantity_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_quantity_res_type_param_code_value"))

    op.drop_table("fhir_idx_quantity")
    with op.batch_alter_table("fhir_idx_number", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_number_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_number_res_type_param_value"))

    op.drop_table("fhir_idx_number")
    with op.batch_alter_table("fhir_idx_date", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_idx_date_resource_pk"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_date_res_type_param_low"))
        batch_op.drop_index(batch_op.f("ix_fhir_idx_date_res_type_param_high"))

    op.drop_table("fhir_idx_date")
    with op.batch_alter_table("fhir_resource", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_resource_res_type_last_updated"))

    op.drop_table("fhir_resource")
