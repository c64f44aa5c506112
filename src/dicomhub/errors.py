"""Transport-free error hierarchy; each transport maps these to its own wire format."""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "DicomhubError",
    "Forbidden",
    "Gone",
    "InvalidInput",
    "NotAcceptable",
    "NotFound",
    "PreconditionFailed",
    "StorageFull",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "Unprocessable",
    "Unsupported",
    "UnsupportedMediaType",
]


class DicomhubError(Exception):
    """Base of every error a service raises on purpose; `code` is stable, the message is for people.

    `locations` names what was wrong where the input has a structure (e.g. `Patient.birthDate`).
    """

    code = "error"

    def __init__(self, message: str, *, locations: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.locations = locations


class InvalidInput(DicomhubError):
    code = "invalid-input"


class Unprocessable(DicomhubError):
    """Well-formed input that breaks a rule of its content (a FHIR resource that does not validate)."""

    code = "unprocessable"


class NotFound(DicomhubError):
    code = "not-found"


class Gone(DicomhubError):
    code = "gone"


class AlreadyExists(DicomhubError):
    code = "already-exists"


class Conflict(DicomhubError):
    code = "conflict"


class PreconditionFailed(DicomhubError):
    code = "precondition-failed"


class Forbidden(DicomhubError):
    code = "forbidden"


class Unauthenticated(DicomhubError):
    code = "unauthenticated"


class Unsupported(DicomhubError):
    """A valid request for something this server does not do (yet)."""

    code = "not-supported"


class NotAcceptable(DicomhubError):
    """No representation the client accepts can be produced."""

    code = "not-acceptable"


class UnsupportedMediaType(DicomhubError):
    code = "unsupported-media-type"


class TooLarge(DicomhubError):
    code = "too-large"


class StorageFull(DicomhubError):
    code = "storage-full"


class Unavailable(DicomhubError):
    code = "unavailable"
