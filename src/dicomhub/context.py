"""The explicit context every service call receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["DEFAULT_PARTITION", "Origin", "RequestContext"]

DEFAULT_PARTITION = "Microsoft.Default"


class Origin(StrEnum):
    """Where a request came from (Orthanc's DicomInstanceOrigin, in spirit)."""

    DICOMWEB = "dicomweb"
    FHIR = "fhir"
    DIMSE = "dimse"
    CLI = "cli"
    INTERNAL = "internal"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks, in which partition, from where; services take it instead of a request object."""

    partition: str = DEFAULT_PARTITION
    origin: Origin = Origin.INTERNAL
    principal: str = "anonymous"
    remote: str | None = None
    clock: Callable[[], datetime] = field(default=_utc_now, repr=False, compare=False)

    def now(self) -> datetime:
        return self.clock()
