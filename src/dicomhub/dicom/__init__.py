"""Pure DICOM code: bytes, streams and Datasets in, values out; no settings, database or network."""

from pydicom import config as _pydicom_config

# Archives receive whatever modalities send. pydicom would otherwise emit a
# Python warning per odd value while reading; validation is ours to do
# (dicom/validate.py), reported per instance instead of as process warnings.
_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE
