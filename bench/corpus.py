"""Deterministic benchmark corpora, generated once into bench/work/corpus/<size>/ and reused.

* The ingest corpus: a few patients whose studies hold several CT/MR series of 512x512
  16-bit images (~0.5 MB per instance, Explicit VR Little Endian), one study holding a large
  series. It is used for STOW ingest, WADO-RS retrieve and WADO-RS metadata.
* The query corpus: many small studies (one 16x16 instance each) with varied patient names,
  IDs, dates, modalities and accession numbers, for QIDO-RS latency.

Every ingest UID is `<UID_ROOT>1<variant>.<...>` with a one-digit variant, so the driver can
make a byte-for-byte copy of the corpus under fresh UIDs by replacing the fixed-length prefix
(`with_variant`): each ingest configuration stores instances that no server has seen yet. The
digit before the variant (1 as generated) is the STOW round: a repeated round stores the
same bytes under UIDs of its own again.
"""

from __future__ import annotations

import json
import random
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = [
    "FRAME_CODE_BITS",
    "CorpusSpec",
    "IngestCorpus",
    "IngestInstance",
    "MultiFrame",
    "QueryCorpus",
    "QueryStudy",
    "StudyRecord",
    "fold",
    "frame_code_boxes",
    "load_or_generate",
    "load_or_generate_multiframe",
    "spec_for",
    "variant_uid",
    "with_variant",
]

# pydicom's UID root (1.2.826.0.1.3680043.8.498), then fixed-width numbers (no leading zero).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
INGEST_ROOT = UID_ROOT + "1"  # + variant digit + "."; the "1" is the STOW round
QUERY_ROOT = UID_ROOT + "2."
MULTIFRAME_ROOT = UID_ROOT + "3."
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC Image
IMPLEMENTATION_UID = UID_ROOT + "9.1"
FORMAT_VERSION = 2  # bump when the generated content changes


@dataclass(frozen=True)
class SeriesSpec:
    modality: str
    description: str
    instances: int
    body_part: str


@dataclass(frozen=True)
class StudySpec:
    description: str
    series: tuple[SeriesSpec, ...]


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    ingest_studies: tuple[StudySpec, ...]
    query_studies: int
    image_size: int = 512

    def key(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}


def _ct(desc: str, n: int, part: str = "CHEST") -> SeriesSpec:
    return SeriesSpec("CT", desc, n, part)


def _mr(desc: str, n: int, part: str = "BRAIN") -> SeriesSpec:
    return SeriesSpec("MR", desc, n, part)


FULL = CorpusSpec(
    name="full",
    ingest_studies=(
        # 620 instances; its first series (500) is the series-metadata target.
        StudySpec(
            "CT CHEST ABDOMEN PELVIS WITH CONTRAST",
            (
                _ct("Axial 1.0mm STD", 500, "CHEST"),
                _ct("Axial 5.0mm STD", 100, "CHEST"),
                _ct("Topogram 0.6 T20s", 20, "CHEST"),
            ),
        ),
        # 200 instances in five series: the study-metadata and whole-study retrieve target.
        StudySpec(
            "MR BRAIN WITHOUT AND WITH CONTRAST",
            (
                _mr("t1_mprage_sag", 40),
                _mr("t2_tse_tra", 40),
                _mr("t2_flair_tra", 40),
                _mr("ep2d_diff_tra", 40),
                _mr("t1_mprage_sag POST", 40),
            ),
        ),
        StudySpec(
            "CT HEAD WITHOUT CONTRAST",
            (
                _ct("Head 5mm", 40, "HEAD"),
                _ct("Head 1mm bone", 40, "HEAD"),
                _ct("Head 1mm soft", 40, "HEAD"),
            ),
        ),
        StudySpec(
            "MR LUMBAR SPINE", (_mr("t2_tse_sag", 30, "LSPINE"), _mr("t1_tse_sag", 30, "LSPINE"))
        ),
    ),
    query_studies=10_000,
)

QUICK = CorpusSpec(
    name="quick",
    ingest_studies=(
        StudySpec(
            "CT CHEST ABDOMEN PELVIS WITH CONTRAST",
            (_ct("Axial 1.0mm STD", 100), _ct("Topogram 0.6 T20s", 10)),
        ),
        StudySpec(
            "MR BRAIN WITHOUT AND WITH CONTRAST",
            (_mr("t1_mprage_sag", 10), _mr("t2_tse_tra", 10), _mr("t2_flair_tra", 10)),
        ),
        StudySpec("CT HEAD WITHOUT CONTRAST", (_ct("Head 5mm", 20, "HEAD"),)),
    ),
    query_studies=1_000,
)


def spec_for(quick: bool) -> CorpusSpec:
    return QUICK if quick else FULL


# ----------------------------------------------------------------------------------------
# Loaded corpora


@dataclass(frozen=True)
class IngestInstance:
    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    study_index: int
    series_index: int
    size: int


@dataclass(frozen=True)
class StudyRecord:
    """What QIDO matching needs to know about one stored study."""

    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    modalities: frozenset[str]


@dataclass
class IngestCorpus:
    instances: list[IngestInstance]
    studies: list[StudyRecord]  # under variant 0
    # (study index, series index) of the largest series; study index of the multi-series study
    big_series: tuple[int, int]
    multi_series_study: int

    def study_uids(self) -> list[str]:
        return sorted({i.study_uid for i in self.instances})

    def in_study(self, study_index: int) -> list[IngestInstance]:
        return [i for i in self.instances if i.study_index == study_index]

    def in_series(self, study_index: int, series_index: int) -> list[IngestInstance]:
        return [
            i
            for i in self.instances
            if i.study_index == study_index and i.series_index == series_index
        ]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    def study_records(self, variant: int, stow_round: int = 1) -> list[StudyRecord]:
        return [
            StudyRecord(
                variant_uid(s.study_uid, variant, stow_round),
                s.patient_name,
                s.patient_id,
                s.study_date,
                s.modalities,
            )
            for s in self.studies
        ]


@dataclass(frozen=True)
class QueryStudy:
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    modality: str
    accession: str
    path: Path

    def record(self) -> StudyRecord:
        return StudyRecord(
            self.study_uid,
            self.patient_name,
            self.patient_id,
            self.study_date,
            frozenset([self.modality]),
        )


@dataclass
class QueryCorpus:
    studies: list[QueryStudy] = field(default_factory=list)


def _root(variant: int, stow_round: int) -> str:
    if not 0 <= variant <= 9:
        raise ValueError("variant is one digit")
    if not 1 <= stow_round <= 9:
        raise ValueError("the STOW round is one digit, 1 to 9 (a UID component has no leading 0)")
    return f"{UID_ROOT}{stow_round}{variant}."


def with_variant(data: bytes, variant: int, stow_round: int = 1) -> bytes:
    """The same instance under other UIDs (same lengths, so no length field changes)."""
    return data.replace(f"{INGEST_ROOT}0.".encode(), _root(variant, stow_round).encode())


def variant_uid(uid: str, variant: int, stow_round: int = 1) -> str:
    prefix = f"{INGEST_ROOT}0."
    assert uid.startswith(prefix), uid
    return _root(variant, stow_round) + uid[len(prefix) :]


def fold(text: str) -> str:
    """Case- and accent-insensitive form for computing expected name matches."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# ----------------------------------------------------------------------------------------
# Generation


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "DHBENCH_1"
    return meta


def _write(ds: Dataset, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def _grayscale_12_bit(ds: Dataset, rows: int, columns: int) -> None:
    """Image Pixel module of the corpus: MONOCHROME2, 16 bits allocated, 12 stored, unsigned."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0


def _phantom(size: int, rng: np.random.Generator, slice_pos: float, kind: str) -> np.ndarray:
    """A plausible-looking 12-bit image: body ellipse, a few organs, noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img = np.zeros((size, size), np.float32)
    body = (x / 0.42) ** 2 + (y / 0.34) ** 2 < 1
    img[body] = 1000 if kind == "CT" else 600
    for k in range(4):
        cx = 0.2 * np.sin(slice_pos * 3 + k * 1.7)
        cy = 0.15 * np.cos(slice_pos * 2 + k)
        r = 0.05 + 0.03 * ((k + slice_pos) % 1)
        img[((x - cx) ** 2 + (y - cy) ** 2) < r * r] = 1100 + 250 * k
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _patients() -> list[tuple[str, str, str, str]]:
    return [
        ("Anderson^Margaret^E", "BENCH-P0001", "19520314", "F"),
        ("Okafor^Chinedu", "BENCH-P0002", "19780921", "M"),
        ("Lindqvist^Astrid", "BENCH-P0003", "19650102", "F"),
        ("Moreau^Jean^Pierre", "BENCH-P0004", "19891130", "M"),
    ]


def _generate_ingest(spec: CorpusSpec, root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(20261125)
    patients = _patients()
    records: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    for s_idx, study in enumerate(spec.ingest_studies):
        name, pid, birth, sex = patients[s_idx % len(patients)]
        study_uid = f"{INGEST_ROOT}0.1.{101 + s_idx}"
        study_date = f"2024{(s_idx % 12) + 1:02d}{(s_idx * 7) % 28 + 1:02d}"
        studies.append(
            {
                "study_uid": study_uid,
                "patient_name": name,
                "patient_id": pid,
                "study_date": study_date,
                "modalities": sorted({s.modality for s in study.series}),
            }
        )
        frame_uid = f"{INGEST_ROOT}0.4.{101 + s_idx}"
        for r_idx, series in enumerate(study.series):
            series_uid = f"{INGEST_ROOT}0.2.{101 + s_idx}.{101 + r_idx}"
            thickness = 1.0 if "1" in series.description else 5.0
            for i in range(series.instances):
                sop_uid = f"{INGEST_ROOT}0.3.{101 + s_idx}.{101 + r_idx}.{10001 + i}"
                sop_class = CT_IMAGE if series.modality == "CT" else MR_IMAGE
                ds = Dataset()
                ds.file_meta = _meta(sop_class, sop_uid)
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.SOPClassUID = sop_class
                ds.SOPInstanceUID = sop_uid
                ds.StudyDate = study_date
                ds.SeriesDate = study_date
                ds.ContentDate = study_date
                ds.StudyTime = f"{8 + s_idx:02d}1500"
                ds.SeriesTime = f"{8 + s_idx:02d}{16 + r_idx:02d}00"
                ds.ContentTime = f"{8 + s_idx:02d}{16 + r_idx:02d}{i % 60:02d}"
                ds.AccessionNumber = f"BA{20240000 + s_idx + 1}"
                ds.Modality = series.modality
                ds.Manufacturer = "SIEMENS" if series.modality == "MR" else "GE MEDICAL SYSTEMS"
                ds.InstitutionName = "Bench General Hospital"
                ds.ReferringPhysicianName = "Referrer^Rita"
                ds.StudyDescription = study.description
                ds.SeriesDescription = series.description
                ds.PatientName = name
                ds.PatientID = pid
                ds.PatientBirthDate = birth
                ds.PatientSex = sex
                ds.BodyPartExamined = series.body_part
                ds.SliceThickness = thickness
                if series.modality == "MR":
                    ds.MagneticFieldStrength = 3.0
                    ds.RepetitionTime = 2300.0
                    ds.EchoTime = 2.98
                else:
                    ds.KVP = 120.0
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.StudyID = str(s_idx + 1)
                ds.SeriesNumber = r_idx + 1
                ds.AcquisitionNumber = 1
                ds.InstanceNumber = i + 1
                ds.ImagePositionPatient = [-250.0, -250.0, -i * thickness]
                ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                ds.FrameOfReferenceUID = frame_uid
                ds.SliceLocation = -i * thickness
                _grayscale_12_bit(ds, spec.image_size, spec.image_size)
                ds.PixelSpacing = [0.9765625, 0.9765625]
                ds.WindowCenter = 40 if series.modality == "CT" else 600
                ds.WindowWidth = 400 if series.modality == "CT" else 1200
                if series.modality == "CT":
                    ds.RescaleIntercept = -1024
                    ds.RescaleSlope = 1
                    ds.RescaleType = "HU"
                pixels = _phantom(
                    spec.image_size, rng, i / max(series.instances, 1), series.modality
                )
                ds.PixelData = pixels.tobytes()
                rel = Path("ingest") / f"{s_idx + 1:03d}" / f"{r_idx + 1:03d}" / f"{i + 1:04d}.dcm"
                size = _write(ds, root / rel)
                records.append(
                    {
                        "path": str(rel),
                        "study_uid": study_uid,
                        "series_uid": series_uid,
                        "sop_uid": sop_uid,
                        "study_index": s_idx,
                        "series_index": r_idx,
                        "size": size,
                    }
                )
    return {"instances": records, "studies": studies}


# Family names, several sharing a prefix (Smi*, John*, Mar*, Wil*, Bro*, Gar*, Ha*, Mc*...).
FAMILIES = [
    "Smith", "Smithson", "Smits", "Smirnov", "Johnson", "Johnston", "Johns", "Jones",
    "Williams", "Wilson", "Wilkinson", "Wills", "Brown", "Brooks", "Brody", "Brophy",
    "Garcia", "Gardner", "Garner", "Garrett", "Martin", "Martinez", "Marshall", "Marsh",
    "Harris", "Hall", "Harrison", "Hamilton", "Hansen", "Hayes", "Miller", "Mills",
    "Davis", "Davidson", "Rodriguez", "Robinson", "Roberts", "Robertson", "Taylor", "Thomas",
    "Thompson", "Thomson", "Moore", "Morgan", "Morris", "Morrison", "Jackson", "White",
    "Lee", "Lewis", "Lopez", "Clark", "Clarke", "Walker", "Wallace", "Young", "King",
    "Kingston", "Wright", "Scott", "Green", "Greene", "Greenberg", "Baker", "Adams", "Nelson",
    "Hill", "Campbell", "Mitchell", "Carter", "Carpenter", "Turner", "Phillips", "Parker",
    "Evans", "Edwards", "Collins", "Stewart", "Sanchez", "Santos", "Morales", "Murphy",
    "Cook", "Cooper", "Rogers", "Reed", "Bailey", "Bell", "Gomez", "Kelly", "Howard", "Ward",
    "Cox", "Diaz", "Richardson", "Wood", "Watson", "Nguyen", "Tran", "Kim", "Park", "Chen",
    "Wang", "Li", "Zhang", "Singh", "Patel", "Shah", "Khan", "Ali", "Ahmed", "Okafor",
    "Mensah", "Dubois", "Lefebvre", "Moreau", "Bernard", "Schmidt", "Schneider", "Fischer",
    "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Rossi", "Russo", "Ferrari", "Esposito",
    "Bianchi", "Jansen", "De Vries", "Van Dijk", "Bakker", "Visser", "Andersson", "Johansson",
    "Karlsson", "Nilsson", "Larsen", "Nielsen", "Kowalski", "Nowak", "Novak", "Horvat",
    "O'Brien", "O'Connor", "McDonald", "McCarthy", "McKenzie", "MacLeod", "Müller", "Núñez",
    "Çelik", "Öztürk",
]  # fmt: skip
GIVEN = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark",
    "Sandra", "Paul", "Ashley", "Steven", "Emily", "Andrew", "Donna", "Kenneth", "Michelle",
    "Joshua", "Carol", "Kevin", "Amanda", "Brian", "Melissa", "George", "Deborah", "Wei", "Mei",
    "Ahmed", "Fatima", "Olga", "Ivan", "Ana", "Jose", "Lucia", "Pierre", "Sophie", "Hans",
    "Greta", "Lars", "Ingrid", "Kwame", "Ama", "Ravi", "Priya",
]  # fmt: skip
# Weighted so that some modalities are common and others rare.
MODALITIES = [
    ("CT", 18), ("MR", 16), ("CR", 14), ("US", 12), ("DX", 10), ("MG", 8), ("NM", 6),
    ("PT", 5), ("XA", 5), ("RF", 4), ("ES", 2),
]  # fmt: skip
QUERY_DESCRIPTIONS = {
    "CT": ["CT HEAD WO", "CT CHEST W", "CT ABD PELVIS W", "CT ANGIO CHEST"],
    "MR": ["MR BRAIN WWO", "MR KNEE RT", "MR LUMBAR SPINE", "MR CARDIAC"],
    "CR": ["XR CHEST 2 VIEWS", "XR HAND LT", "XR PELVIS"],
    "US": ["US ABDOMEN COMPLETE", "US THYROID", "US OB 2ND TRIM"],
    "DX": ["DX CHEST PA", "DX KNEE 3 VIEWS"],
    "MG": ["MAMMO SCREENING BILAT", "MAMMO DIAGNOSTIC LT"],
    "NM": ["NM BONE SCAN WHOLE BODY", "NM MYOCARDIAL PERFUSION"],
    "PT": ["PET CT WHOLE BODY FDG"],
    "XA": ["CORONARY ANGIOGRAPHY", "CEREBRAL ANGIOGRAPHY"],
    "RF": ["FLUORO UPPER GI", "FLUORO BARIUM SWALLOW"],
    "ES": ["COLONOSCOPY", "GASTROSCOPY"],
}


def _generate_query(spec: CorpusSpec, root: Path) -> dict[str, Any]:
    rng = random.Random(424242)
    family_weights = [1.0 / (1 + k) ** 0.6 for k in range(len(FAMILIES))]
    patients: list[tuple[str, str, str, str]] = []
    n_patients = max(1, spec.query_studies * 3 // 10)
    seen_names: set[str] = set()
    for p in range(n_patients):
        family = rng.choices(FAMILIES, family_weights)[0]
        given = rng.choice(GIVEN)
        name = f"{family}^{given}"
        if name in seen_names and rng.random() < 0.5:
            name = f"{name}^{rng.choice('ABCDEFGHJKLMNPRSTW')}"
        seen_names.add(name)
        birth = f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        patients.append((name, f"PID{p + 1:07d}", birth, rng.choice("FM")))
    modalities = [m for m, _ in MODALITIES]
    weights = [w for _, w in MODALITIES]
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    records: list[dict[str, Any]] = []
    for s in range(spec.query_studies):
        # Each patient gets at least one study; the rest go to a random (skewed) patient.
        p_idx = s if s < n_patients else int(rng.expovariate(1.0 / (n_patients / 3))) % n_patients
        name, pid, birth, sex = patients[p_idx]
        modality = rng.choices(modalities, weights)[0]
        year = rng.randint(2010, 2024)
        date = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        time = f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
        study_uid = f"{QUERY_ROOT}1.{100001 + s}"
        series_uid = f"{QUERY_ROOT}2.{100001 + s}"
        sop_uid = f"{QUERY_ROOT}3.{100001 + s}"
        accession = f"A{year % 100:02d}{s + 1:07d}"
        ds = Dataset()
        ds.file_meta = _meta(SECONDARY_CAPTURE, sop_uid)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = date
        ds.StudyTime = time
        ds.AccessionNumber = accession
        ds.Modality = modality
        ds.ConversionType = "WSD"
        ds.InstitutionName = rng.choice(["Bench General Hospital", "Northside Clinic", "St Ada"])
        ds.ReferringPhysicianName = f"{rng.choice(FAMILIES[:40])}^{rng.choice(GIVEN)}"
        ds.StudyDescription = rng.choice(QUERY_DESCRIPTIONS[modality])
        ds.SeriesDescription = ds.StudyDescription
        ds.PatientName = name
        ds.PatientID = pid
        ds.PatientBirthDate = birth
        ds.PatientSex = sex
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = str(s + 1)
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        _grayscale_12_bit(ds, 16, 16)
        ds.PixelData = (pixels + (s % 1000)).tobytes()
        rel = Path("query") / f"{s // 1000:03d}" / f"{s + 1:06d}.dcm"
        _write(ds, root / rel)
        records.append(
            {
                "study_uid": study_uid,
                "series_uid": series_uid,
                "sop_uid": sop_uid,
                "patient_name": name,
                "patient_id": pid,
                "study_date": date,
                "modality": modality,
                "accession": accession,
                "path": str(rel),
            }
        )
    return {"studies": records}


def _cached(
    root: Path,
    field: str,
    key: dict[str, Any],
    generate: Callable[[], dict[str, Any]],
    announce: Callable[[], None],
) -> dict[str, Any]:
    """root/manifest.json when its `field` equals `key`; else root is emptied, `generate`
    fills it and the manifest is written last (its presence means the content is complete)."""
    manifest_path = root / "manifest.json"
    key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
    if manifest_path.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get(field) == key:
            return manifest
    announce()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    manifest = {field: key, **generate()}
    manifest_path.write_text(json.dumps(manifest))
    return manifest


def load_or_generate(
    spec: CorpusSpec, base: Path, log: Any = print
) -> tuple[IngestCorpus, QueryCorpus]:
    """The corpus of `spec` under base/<name>, generated first if missing or out of date."""
    root = base / spec.name
    manifest = _cached(
        root,
        "spec",
        spec.key(),
        lambda: {"ingest": _generate_ingest(spec, root), "query": _generate_query(spec, root)},
        lambda: log(f"generating the {spec.name} corpus into {root} (once; reused by later runs)"),
    )
    ingest = [
        IngestInstance(
            path=root / r["path"],
            study_uid=r["study_uid"],
            series_uid=r["series_uid"],
            sop_uid=r["sop_uid"],
            study_index=r["study_index"],
            series_index=r["series_index"],
            size=r["size"],
        )
        for r in manifest["ingest"]["instances"]
    ]
    big = max(
        {(i.study_index, i.series_index) for i in ingest},
        key=lambda k: sum(1 for i in ingest if (i.study_index, i.series_index) == k),
    )
    multi = max(
        {i.study_index for i in ingest} - {big[0]},
        key=lambda s: (len({i.series_index for i in ingest if i.study_index == s}), -s),
    )
    query = QueryCorpus(
        [QueryStudy(**{**r, "path": root / r["path"]}) for r in manifest["query"]["studies"]]
    )
    studies = [
        StudyRecord(
            r["study_uid"],
            r["patient_name"],
            r["patient_id"],
            r["study_date"],
            frozenset(r["modalities"]),
        )
        for r in manifest["ingest"]["studies"]
    ]
    return IngestCorpus(ingest, studies, big, multi), query


# ----------------------------------------------------------------------------------------
# The multi-frame instance (issue 5: frames, rendered frames)

MULTIFRAME_FORMAT = 1  # bump when the generated content changes
FRAME_CODE_BITS = 7  # frame numbers 1..127


@dataclass(frozen=True)
class MultiFrame:
    """One multi-frame instance: where it is and what each frame must contain."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    frames: int
    rows: int
    columns: int

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * 2

    def url(self) -> str:
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


def frame_code_boxes() -> list[tuple[float, float, float, float]]:
    """(top, bottom, left, right) as fractions of the image, one box per bit of the frame
    number (least significant first), in the empty band above the phantom's body."""
    width = 1 / (FRAME_CODE_BITS + 1)
    return [
        (0.03, 0.10, (k + 0.5) * width + 0.1 * width, (k + 1.5) * width - 0.1 * width)
        for k in range(FRAME_CODE_BITS)
    ]


def _frame_code(img: np.ndarray, number: int) -> None:
    """Write `number` into the boxes: white (4095) for a 1 bit, black (0) for a 0 bit."""
    rows, cols = img.shape
    for k, (top, bottom, left, right) in enumerate(frame_code_boxes()):
        box = (
            slice(int(top * rows), int(bottom * rows)),
            slice(int(left * cols), int(right * cols)),
        )
        img[box] = 4095 if number >> k & 1 else 0


def _generate_multiframe(root: Path, frames: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng(20261126)
    study_uid = f"{MULTIFRAME_ROOT}1.101"
    series_uid = f"{MULTIFRAME_ROOT}2.101.101"
    sop_uid = f"{MULTIFRAME_ROOT}3.101.101.10001"
    pixels = np.empty((frames, size, size), np.uint16)
    for n in range(frames):
        pixels[n] = _phantom(size, rng, n / frames, "CT")
        _frame_code(pixels[n], n + 1)
    ds = Dataset()
    ds.file_meta = _meta(MULTIFRAME_WORD_SC, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MULTIFRAME_WORD_SC
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240615"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = "BA20249001"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "DICOMHUB BENCH"
    ds.StudyDescription = "MULTI-FRAME VOLUME"
    ds.SeriesDescription = f"{frames} frames {size}x{size} 16-bit"
    ds.PatientName = "Volume^Vera"
    ds.PatientID = "BENCH-P0100"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "100"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.NumberOfFrames = frames
    # PS3.3 C.8.6.3: the frame increment of a Multi-frame SC image, here one slice per frame.
    ds.FrameIncrementPointer = 0x00182005  # Slice Location Vector
    ds.SliceLocationVector = [float(-n) for n in range(frames)]
    _grayscale_12_bit(ds, size, size)
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.tobytes()
    rel = Path("multiframe.dcm")
    _write(ds, root / rel)
    return {
        "path": str(rel),
        "study_uid": study_uid,
        "series_uid": series_uid,
        "sop_uid": sop_uid,
        "frames": frames,
        "rows": size,
        "columns": size,
    }


def load_or_generate_multiframe(
    base: Path, log: Any = print, *, frames: int = 100, size: int = 512
) -> MultiFrame:
    """The multi-frame instance under base/multiframe, generated first if missing or stale."""
    root = base / "multiframe"
    manifest = _cached(
        root,
        "key",
        {"format": MULTIFRAME_FORMAT, "frames": frames, "size": size},
        lambda: {"instance": _generate_multiframe(root, frames, size)},
        lambda: log(f"generating the {frames}-frame {size}x{size} instance into {root} (once)"),
    )
    record = manifest["instance"]
    return MultiFrame(**{**record, "path": root / record["path"]})
