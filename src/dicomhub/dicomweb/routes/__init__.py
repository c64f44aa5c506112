"""One router per DICOMweb service; app.py mounts them under each URL prefix."""
