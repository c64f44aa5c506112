"""Administration routes: the DICOM -> FHIR sync's state, and retrying its dead letters."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request

from dicomhub.errors import Unsupported
from dicomhub.sync.worker import SyncWorker

__all__ = ["router"]

router = APIRouter()


def _worker(request: Request) -> SyncWorker:
    worker: SyncWorker | None = request.app.state.sync
    if worker is None:
        raise Unsupported("the FHIR sync is off in this process (DICOMHUB_FHIR_SYNC=false)")
    return worker


@router.get("/sync", summary="FHIR sync: cursor, backlog, lease, dead-lettered studies")
async def sync_status(request: Request) -> dict[str, Any]:
    worker = _worker(request)
    return await to_thread.run_sync(worker.status)


@router.post("/sync/retry", summary="Sync the dead-lettered studies again")
async def sync_retry(
    request: Request, study: Annotated[list[str] | None, Query()] = None
) -> dict[str, Any]:
    """`?study=UID` (repeatable) names the studies; none: every dead-lettered one."""
    worker = _worker(request)
    outcomes = await to_thread.run_sync(lambda: worker.retry_dead_letters(study or None))
    return {"retried": [{"studyInstanceUid": k, "outcome": v} for k, v in outcomes.items()]}
