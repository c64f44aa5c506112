"""The reconciler keeps parsed instances between passes: answers must not depend on it."""

from __future__ import annotations

import io

import pytest
from pydicom.uid import generate_uid

from dicomhub.bootstrap import Services, build_sync_worker
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.sync import reconcile
from tests.dicomfiles import make_instance


def _instance_uids(reconciler: reconcile.StudyReconciler, study: str) -> list[str]:
    found = reconciler.target.search(
        "ImagingStudy", [("identifier", f"urn:dicom:uid|urn:oid:{study}")]
    )
    assert len(found) == 1
    return sorted(i["uid"] for s in found[0].get("series", []) for i in s["instance"])


@pytest.mark.parametrize("cache_bytes", [64 * 1024 * 1024, 1], ids=["kept", "evicted"])
def test_passes_over_a_growing_and_shrinking_study(
    settings: Settings,
    services: Services,
    cache_bytes: int,
) -> None:
    reconciler = build_sync_worker(settings, services).reconciler
    # With a 1-byte budget every parsed instance is dropped as soon as the next one is parsed.
    reconciler.parsed.max_bytes = cache_bytes
    ctx = RequestContext()
    study, series = generate_uid(), generate_uid()
    pk = services.store.partition_key(ctx.partition)
    sops = [generate_uid() for _ in range(4)]

    def store(sop: str) -> None:
        data = make_instance(study_uid=study, series_uid=series, sop_uid=sop)
        assert services.store.store_file(ctx, io.BytesIO(data)).stored

    for sop in sops[:2]:
        store(sop)
    assert reconciler.sync_study(pk, study) == "created"
    assert _instance_uids(reconciler, study) == sorted(sops[:2])
    assert len(reconciler.parsed) == 0  # read once so far: nothing kept

    for sop in sops[2:]:
        store(sop)
    assert reconciler.sync_study(pk, study) == "updated"
    assert _instance_uids(reconciler, study) == sorted(sops)

    services.delete.delete(ctx, study, series, sops[0])
    assert reconciler.sync_study(pk, study) == "updated"
    assert _instance_uids(reconciler, study) == sorted(sops[1:])
    assert reconciler.sync_study(pk, study) == "unchanged"
    if cache_bytes == 1:
        assert len(reconciler.parsed) <= 1
    else:  # the deleted instance's entry stays until it has not been read for a while
        assert len(reconciler.parsed) == len(sops)
