"""Which attributes QIDO-RS matches and returns at each level (PS3.18 10.6, Tables 10.6.3-3 to -5)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

__all__ = [
    "COMPUTED",
    "DEFAULT_RETURN",
    "LEVEL_TAGS",
    "MATCHABLE",
    "Level",
    "QueryAttribute",
    "attribute_for",
    "resolve_tag",
]


class Level(IntEnum):
    STUDY = 1
    SERIES = 2
    INSTANCE = 3


@dataclass(frozen=True, slots=True)
class QueryAttribute:
    keyword: str
    tag: int
    vr: str
    level: Level


def _attr(keyword: str, level: Level) -> QueryAttribute:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return QueryAttribute(keyword, tag, dictionary_VR(tag), level)


# Matching keys: the ones PS3.18 requires at each level, plus the extras users ask for.
MATCHABLE: dict[str, QueryAttribute] = {
    a.keyword: a
    for a in [
        _attr("StudyDate", Level.STUDY),
        _attr("StudyTime", Level.STUDY),
        _attr("AccessionNumber", Level.STUDY),
        _attr("ModalitiesInStudy", Level.STUDY),
        _attr("SOPClassesInStudy", Level.STUDY),
        _attr("ReferringPhysicianName", Level.STUDY),
        _attr("PatientName", Level.STUDY),
        _attr("PatientID", Level.STUDY),
        _attr("StudyInstanceUID", Level.STUDY),
        _attr("StudyID", Level.STUDY),
        _attr("PatientBirthDate", Level.STUDY),
        _attr("PatientSex", Level.STUDY),
        _attr("StudyDescription", Level.STUDY),
        _attr("Modality", Level.SERIES),
        _attr("SeriesInstanceUID", Level.SERIES),
        _attr("SeriesNumber", Level.SERIES),
        _attr("PerformedProcedureStepStartDate", Level.SERIES),
        _attr("PerformedProcedureStepStartTime", Level.SERIES),
        _attr("SeriesDescription", Level.SERIES),
        _attr("BodyPartExamined", Level.SERIES),
        _attr("Manufacturer", Level.SERIES),
        _attr("InstitutionName", Level.SERIES),
        _attr("SOPClassUID", Level.INSTANCE),
        _attr("SOPInstanceUID", Level.INSTANCE),
        _attr("InstanceNumber", Level.INSTANCE),
    ]
}

_BY_TAG = {a.tag: a for a in MATCHABLE.values()}

# Computed by the server from the index, never read from an instance.
COMPUTED: dict[int, Level] = {
    0x00201206: Level.STUDY,  # NumberOfStudyRelatedSeries
    0x00201208: Level.STUDY,  # NumberOfStudyRelatedInstances
    0x00080061: Level.STUDY,  # ModalitiesInStudy
    0x00080062: Level.STUDY,  # SOPClassesInStudy
    0x00201209: Level.SERIES,  # NumberOfSeriesRelatedInstances
    0x00080056: Level.INSTANCE,  # InstanceAvailability (also answered at study and series level)
    0x00081190: Level.INSTANCE,  # RetrieveURL (built per level from the request's base URL)
}


def _tags(*keywords: str) -> frozenset[int]:
    out = set()
    for kw in keywords:
        tag = tag_for_keyword(kw)
        assert tag is not None, kw
        out.add(tag)
    return frozenset(out)


# Attributes returned when no includefield asks for more (PS3.18 Tables 10.6.3-3, -4, -5).
DEFAULT_RETURN: dict[Level, frozenset[int]] = {
    Level.STUDY: _tags(
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: _tags(
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    ),
    Level.INSTANCE: _tags(
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}

# The attributes kept per level in the index, so that QIDO never opens a file.
# Patient-module attributes (group 0010) are also kept at study level, by group.
LEVEL_TAGS: dict[Level, frozenset[int]] = {
    Level.STUDY: _tags(
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence",
        "StudyID",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "StudyDescription",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "ProcedureCodeSequence",
        "ReferencedStudySequence",
        "ReasonForPerformedProcedureCodeSequence",
        "AdmittingDiagnosesDescription",
        "AdditionalPatientHistory",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "StudyStatusID",
        "RequestingPhysician",
        "RequestedProcedureDescription",
    ),
    Level.SERIES: _tags(
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Laterality",
        "SeriesDate",
        "SeriesTime",
        "PerformingPhysicianName",
        "ProtocolName",
        "SeriesDescription",
        "SeriesDescriptionCodeSequence",
        "OperatorsName",
        "BodyPartExamined",
        "PatientPosition",
        "PerformedProcedureStepID",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepDescription",
        "RequestAttributesSequence",
        "Manufacturer",
        "ManufacturerModelName",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "SoftwareVersions",
        "FrameOfReferenceUID",
    ),
    Level.INSTANCE: _tags(
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "ContentDate",
        "ContentTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "ImageType",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "PhotometricInterpretation",
        "SamplesPerPixel",
    ),
}

PATIENT_GROUP = 0x0010


def level_of_tag(tag: int) -> Level | None:
    """The level whose index record keeps `tag`, if any."""
    if tag >> 16 == PATIENT_GROUP:
        return Level.STUDY
    for level, tags in LEVEL_TAGS.items():
        if tag in tags:
            return level
    return None


def resolve_tag(key: str) -> int | None:
    """A keyword (`PatientName`) or eight hex digits (`00100010`) to a tag; None if neither."""
    if len(key) == 8:
        try:
            return int(key, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(key)
    return int(tag) if tag is not None else None


def attribute_for(tag: int) -> QueryAttribute | None:
    """The matching key for `tag`, or None when the attribute cannot be matched on."""
    return _BY_TAG.get(tag)


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"
