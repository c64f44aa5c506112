"""The embedded FHIR R4 (4.0.1) store: resources, versions, search (transport-free below api/)."""
