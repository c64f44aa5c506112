"""Planner statistics: gathered on start and after imports, so SQLite plans FHIR joins well."""

from __future__ import annotations

from sqlalchemy import text

from dicomhub.bootstrap import Services, prepare_storage
from dicomhub.context import RequestContext


def test_analyze_gathers_statistics_of_the_fhir_index(services: Services) -> None:
    ctx = RequestContext()
    for n in range(30):
        services.fhir.service.update(
            ctx,
            "Patient",
            f"p{n}",
            {"resourceType": "Patient", "id": f"p{n}", "gender": "female" if n % 2 else "male"},
        )
    prepare_storage(services.settings)  # what every start does
    with services.db.read() as conn:
        if services.db.is_sqlite:
            rows = conn.execute(text("SELECT tbl, idx, stat FROM sqlite_stat1")).all()
            tables = {r[0] for r in rows}
        else:
            rows = conn.execute(
                text("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
            ).all()
            tables = {r[0] for r in rows}
    assert {"fhir_resource", "fhir_idx_token"} <= tables
