"""dicomweb-client, the third-party Python DICOMweb client, drives STOW, QIDO and WADO."""

from __future__ import annotations

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import LiveServer
from tests.dicomfiles import make_dataset


def test_store_search_retrieve_with_dicomweb_client(live_server: LiveServer) -> None:
    client = DICOMwebClient(url=f"{live_server.url}/dicom-web")
    study = generate_uid()
    series = generate_uid()
    datasets = [
        make_dataset(study_uid=study, series_uid=series, InstanceNumber=i, pixel_seed=i)
        for i in range(1, 4)
    ]
    for ds in datasets:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in response

    studies = client.search_for_studies(search_filters={"PatientID": "PID-1"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    assert studies[0]["00201208"]["Value"] == [3]

    series_found = client.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in series_found] == [series]

    instances = client.search_for_instances(
        study_instance_uid=study, series_instance_uid=series, fields=["Rows"]
    )
    assert sorted(i["00200013"]["Value"][0] for i in instances) == [1, 2, 3]

    sop = datasets[1].SOPInstanceUID
    retrieved = client.retrieve_instance(study, series, sop)
    assert retrieved.SOPInstanceUID == sop
    assert retrieved.PixelData == datasets[1].PixelData

    series_instances = client.retrieve_series(study, series)
    assert {d.SOPInstanceUID for d in series_instances} == {d.SOPInstanceUID for d in datasets}

    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 3
    assert all("BulkDataURI" in m["7FE00010"] for m in metadata)

    instance_metadata = client.retrieve_instance_metadata(study, series, sop)
    assert instance_metadata["00080018"]["Value"] == [sop]

    frames = client.retrieve_bulkdata(instance_metadata["7FE00010"]["BulkDataURI"])
    assert frames == [datasets[1].PixelData]


def test_sample_file_with_dicomweb_client(live_server: LiveServer) -> None:
    client = DICOMwebClient(url=f"{live_server.url}/v2")
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    client.store_instances([ds])
    found = client.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})
    assert len(found) == 1
    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert back.PixelData == ds.PixelData
    assert back.PatientName == ds.PatientName
