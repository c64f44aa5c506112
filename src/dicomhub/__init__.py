"""dicomhub: a self-hosted DICOMweb archive with an embedded SQL index."""

__version__ = "0.1.0"
