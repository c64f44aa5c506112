"""Pure FHIR search: the parameter registry, write-time index extraction, query parsing."""
