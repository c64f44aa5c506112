"""SQLAlchemy Core tables of the archive index and its change feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UtcDateTime",
    "blob_deletion",
    "changefeed",
    "fhir_idx_date",
    "fhir_idx_number",
    "fhir_idx_quantity",
    "fhir_idx_reference",
    "fhir_idx_string",
    "fhir_idx_token",
    "fhir_idx_uri",
    "fhir_resource",
    "fhir_version",
    "instance",
    "instance_metadata",
    "metadata",
    "partition",
    "series",
    "study",
    "sync_dead_letter",
    "sync_state",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite keeps no zone, so it stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY (its rowid); PostgreSQL gets BIGINT.
# Tables keyed this way also set sqlite_autoincrement, so that SQLite never hands the key of a
# deleted row to a new one (keys appear in ETags and in change-feed rows).
Key = BigInteger().with_variant(Integer(), "sqlite")

partition = Table(
    "partition",
    metadata,
    Column("partition_key", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Study rows also hold the patient attributes QIDO matches at study level.
# *_norm columns hold dicom.normalize output, *_words the fuzzy-match words.
study = Table(
    "study",
    metadata,
    Column("study_key", Key, primary_key=True, autoincrement=True),
    Column("partition_key", ForeignKey("partition.partition_key"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("patient_id", Text),
    Column("patient_name_norm", Text),
    Column("patient_name_words", Text),
    Column("patient_birth_date", String(8)),
    Column("patient_sex", Text),
    Column("study_date", String(8)),
    Column("study_time", String(13)),
    Column("accession_number", Text),
    Column("referring_physician_norm", Text),
    Column("referring_physician_words", Text),
    Column("study_id", Text),
    Column("study_description", Text),
    Column("num_series", Integer, nullable=False, server_default="0"),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Column("modalities", Text),
    Column("sop_classes", Text),
    Column("attributes", LargeBinary, nullable=False),
    Column("index_version", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("partition_key", "study_uid"),
    # QIDO pages are found by key in insertion order: this index walks them without a sort.
    Index(None, "partition_key", "study_key"),
    Index(None, "partition_key", "patient_id"),
    Index(None, "partition_key", "patient_name_norm"),
    Index(None, "partition_key", "study_date"),
    Index(None, "partition_key", "accession_number"),
    sqlite_autoincrement=True,
)

series = Table(
    "series",
    metadata,
    Column("series_key", Key, primary_key=True, autoincrement=True),
    Column("study_key", ForeignKey("study.study_key"), nullable=False),
    Column("partition_key", ForeignKey("partition.partition_key"), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("modality", Text),
    Column("series_number", Integer),
    Column("series_description", Text),
    Column("body_part_examined", Text),
    Column("manufacturer", Text),
    Column("institution_name", Text),
    Column("pps_start_date", String(8)),
    Column("pps_start_time", String(13)),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Column("attributes", LargeBinary, nullable=False),
    Column("index_version", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("partition_key", "series_uid"),
    Index(None, "partition_key", "series_key"),
    Index(None, "study_key", "modality"),
    Index(None, "partition_key", "modality"),
    sqlite_autoincrement=True,
)

instance = Table(
    "instance",
    metadata,
    Column("instance_key", Key, primary_key=True, autoincrement=True),
    Column("series_key", ForeignKey("series.series_key"), nullable=False),
    Column("study_key", ForeignKey("study.study_key"), nullable=False),
    Column("partition_key", ForeignKey("partition.partition_key"), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("blob_id", String(32), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("number_of_frames", Integer, nullable=False),
    Column("frames", LargeBinary),
    Column("attributes", LargeBinary, nullable=False),
    Column("index_version", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("partition_key", "sop_instance_uid"),
    Index(None, "partition_key", "instance_key"),
    Index(None, "series_key", "instance_number"),
    Index(None, "study_key", "sop_class_uid"),
    sqlite_autoincrement=True,
)

# The full DICOM JSON (bulk data as BulkDataURI placeholders), apart so instance scans stay narrow.
instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("instance_key", ForeignKey("instance.instance_key"), primary_key=True),
    Column("json", LargeBinary, nullable=False),
)

# Blobs whose index rows are gone; removed after the commit, and on start if a crash intervened.
blob_deletion = Table(
    "blob_deletion",
    metadata,
    Column("blob_id", String(32), primary_key=True),
    Column("requested_at", UtcDateTime(), nullable=False),
)

# Rows are never deleted: state changes to "deleted" and a delete row is appended.
changefeed = Table(
    "changefeed",
    metadata,
    Column("sequence", Key, primary_key=True, autoincrement=True),
    Column("partition_key", ForeignKey("partition.partition_key"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("action", String(8), nullable=False),
    Column("state", String(8), nullable=False),
    Column("timestamp", UtcDateTime(), nullable=False),
    Column("instance_key", Key),
    Index(None, "timestamp", "sequence"),
    Index(None, "partition_key", "sop_instance_uid"),
    sqlite_autoincrement=True,
)


# --- DICOM -> FHIR sync ------------------------------------------------------------------------
# One row per sync target: the change-feed sequence done, and the lease that lets one worker
# of many process it at a time (owner + expiry, renewed while working).
sync_state = Table(
    "sync_state",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("sequence", Key, nullable=False),
    Column("lease_owner", String(100)),
    Column("lease_until", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Studies whose sync kept failing: visible and retryable (dicomhub sync status / retry).
sync_dead_letter = Table(
    "sync_dead_letter",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("partition_key", ForeignKey("partition.partition_key"), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("sequence", Key, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("first_failed_at", UtcDateTime(), nullable=False),
    Column("last_failed_at", UtcDateTime(), nullable=False),
)


# --- The FHIR store ---------------------------------------------------------------------------
# One row per logical resource (its current version), every version in fhir_version, and the
# search index in one table per parameter type, rewritten on each write (current versions only).
# res_type/param are repeated in index rows so that each search predicate hits one index.

fhir_resource = Table(
    "fhir_resource",
    metadata,
    Column("resource_pk", Key, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", UtcDateTime(), nullable=False),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("body", LargeBinary),  # the current version's JSON; NULL once deleted
    Column("index_version", Integer, nullable=False),
    UniqueConstraint("res_type", "res_id"),
    Index(None, "res_type", "last_updated"),
    sqlite_autoincrement=True,
)

fhir_version = Table(
    "fhir_version",
    metadata,
    Column("resource_pk", ForeignKey("fhir_resource.resource_pk"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("last_updated", UtcDateTime(), nullable=False),
    Column("method", String(8), nullable=False),  # POST, PUT, DELETE
    Column("body", LargeBinary),  # NULL for a delete
    Index(None, "res_type", "last_updated"),
    Index(None, "last_updated"),
)


def _index_table(name: str, *columns: Column[Any], indexes: tuple[tuple[str, ...], ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("resource_pk", ForeignKey("fhir_resource.resource_pk"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        Index(None, "resource_pk"),
        *(Index(None, "res_type", "param", *cols) for cols in indexes),
    )


fhir_idx_string = _index_table(
    "fhir_idx_string",
    Column("norm", Text, nullable=False),
    Column("exact", Text, nullable=False),
    indexes=(("norm",),),
)
fhir_idx_token = _index_table(
    "fhir_idx_token",
    Column("system", Text),
    Column("code", Text),
    Column("text", Text),
    indexes=(("code", "system"),),
)
fhir_idx_date = _index_table(
    "fhir_idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("low",), ("high",)),
)
fhir_idx_number = _index_table(
    "fhir_idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=(("value",),),
)
fhir_idx_quantity = _index_table(
    "fhir_idx_quantity",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", Text),
    Column("code", Text),
    Column("unit", Text),
    indexes=(("code", "value"),),
)
fhir_idx_uri = _index_table(
    "fhir_idx_uri",
    Column("uri", Text, nullable=False),
    indexes=(("uri",),),
)
fhir_idx_reference = _index_table(
    "fhir_idx_reference",
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", Text),
    Column("identifier_system", Text),
    Column("identifier_value", Text),
    indexes=(("target_type", "target_id"),),
)
# Reverse chaining (_has) and _revinclude look references up by their target.
Index(
    "ix_fhir_idx_reference_target", fhir_idx_reference.c.target_type, fhir_idx_reference.c.target_id
)
