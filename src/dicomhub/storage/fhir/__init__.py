"""SQL of the FHIR store: resources and versions, index rows, search queries."""
