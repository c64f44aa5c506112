"""DICOM to FHIR sync: the mapping, the change-feed worker and its FHIR targets."""
