"""Make the FHIR view of one study equal to what the archive holds now (state, not events).

Each change-feed event only names a study; the reconciler reads the study's current instances
and writes the difference, so replaying an event (at-least-once delivery) changes nothing.
Writes are conditional: creates with If-None-Exist, updates and deletes with If-Match, so a
concurrent writer makes them fail with 412 and the study is reconciled again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from dicomhub.fhir.search.values import escape
from dicomhub.sync.mapping import (
    MappingOptions,
    endpoint_identifier,
    map_endpoint,
    map_imaging_study,
    map_patient,
    patient_identifier,
    study_identifier,
)
from dicomhub.sync.parsed import ParsedInstances
from dicomhub.sync.targets import FhirTarget, TargetError

__all__ = ["NO_PATIENT_ID_SYSTEM", "StudyKey", "StudyReconciler"]

log = logging.getLogger(__name__)

StudyKey = tuple[int, str]  # (partition key, study UID)

# A study without PatientID still needs a subject (ImagingStudy.subject is 1..1): one Patient
# per such study, identified by the study.
NO_PATIENT_ID_SYSTEM = "urn:dicomhub:study-without-patient-id"
# The elements of a Patient that DICOM data keeps current, on Patients this server created.
_DEMOGRAPHICS = ("name", "gender", "birthDate")
_PATIENT_CACHE = 10_000


def _token(system: str, value: str) -> str:
    """The search value `system|value` of an identifier: a PatientID or accession number may
    hold `,` `|` or `$`, which a search value escapes (R4 3.1.1.6)."""
    return f"{escape(system)}|{escape(value)}"


def _if_none_exist(token: str) -> str:
    """The query of a conditional create (If-None-Exist): URL-encoded, as `&`, `+`, `#` or
    `%` in a DICOM value would otherwise change it."""
    return urlencode([("identifier", token)])


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    return str(version) if version is not None else None


@dataclass
class StudyReconciler:
    target: FhirTarget
    options: MappingOptions
    # studies (partition key, study UID) -> (instance key, DICOM JSON) of each one's instances
    load: Callable[[Sequence[StudyKey]], dict[StudyKey, list[tuple[int, bytes]]]]
    _endpoint: str | None = None
    # identifier -> (Patient reference, the demographics last written or seen)
    _patients: OrderedDict[tuple[str, str], tuple[str, bytes]] = field(default_factory=OrderedDict)
    # a study being stored is read again at every pass, and parsing its instances was a third
    # of the sync's time during ingest
    parsed: ParsedInstances = field(default_factory=ParsedInstances)
    _loaded: dict[StudyKey, list[tuple[int, bytes]]] = field(default_factory=dict)

    @contextmanager
    def prefetched(self, studies: Sequence[StudyKey]) -> Iterator[None]:
        """Read the instances of the studies about to be reconciled in one transaction, for
        `sync_study` calls inside this block only: what is read stays fresh, as a study
        reconciled later (after a failure and a pause, say) must be read again."""
        self._loaded = self.load(studies)
        try:
            yield
        finally:
            self._loaded = {}

    def sync_study(self, partition_key: int, study_uid: str) -> str:
        """Reconcile one study; returns what was done (created, updated, unchanged, deleted…)."""
        key = (partition_key, study_uid)
        rows = self._loaded.pop(key, None)
        if rows is None:
            rows = self.load([key])[key]
        instances = self.parsed.study(key, rows)
        ident = study_identifier(study_uid)
        token = _token(ident["system"], ident["value"])
        found = self.target.search("ImagingStudy", [("identifier", token)])
        if len(found) > 1:
            raise TargetError(
                f"{len(found)} ImagingStudy resources carry the identifier {token}",
                retryable=False,
            )
        current = found[0] if found else None
        if not instances:
            return self._emptied(current)
        patient_ref = self._patient(instances[-1], study_uid)
        mapped = map_imaging_study(
            instances,
            self.options,
            patient_ref=patient_ref,
            endpoint_ref=self._endpoint_ref(),
            based_on=self._orders(instances[-1]),
        )
        if current is None:
            created = self.target.create(mapped, if_none_exist=_if_none_exist(token))
            if not self._ours(created):
                # another writer created it between our search and our create: start again
                raise TargetError(f"ImagingStudy {token} appeared meanwhile", retryable=True)
            return "created"
        merged = self._merge(current, mapped)
        if _without_meta(merged) == _without_meta(current):
            return "unchanged"
        self.target.update(merged, _version(current))
        return "updated"

    def _merge(self, current: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
        """The mapped elements replace the current ones; elements others added are kept,
        except the ones the mapping owns but no longer produces (a description removed)."""
        owned = set(mapped) | {"started", "description", "procedureCode", "reasonCode", "referrer"}
        owned |= {"basedOn", "endpoint", "modality", "series"}
        merged = {k: v for k, v in current.items() if k not in owned or k in ("id", "meta")}
        merged.update({k: v for k, v in mapped.items() if k != "meta"})
        merged["id"] = current["id"]
        merged["meta"] = current.get("meta") or {}
        return merged

    def _emptied(self, current: dict[str, Any] | None) -> str:
        """Every instance is gone: delete the ImagingStudy if this server made it, else empty it."""
        if current is None:
            return "absent"
        if self._ours(current):
            self.target.delete("ImagingStudy", current["id"], _version(current))
            return "deleted"
        emptied = {k: v for k, v in current.items() if k not in ("series", "modality")}
        emptied["numberOfSeries"] = 0
        emptied["numberOfInstances"] = 0
        if emptied == current:
            return "unchanged"
        self.target.update(emptied, _version(current))
        return "emptied"

    def _patient(self, instance: dict[str, Any], study_uid: str) -> str:
        """Reference to the Patient of the study: an existing one with the same identifier is
        linked (never a duplicate); one this server created follows the DICOM demographics."""
        mapped = map_patient(instance, self.options)
        ident = patient_identifier(instance, self.options)
        if ident is None:
            ident = (NO_PATIENT_ID_SYSTEM, study_uid)
            mapped["identifier"] = [{"system": ident[0], "value": ident[1]}]
        demographics = orjson.dumps([mapped.get(k) for k in _DEMOGRAPHICS])
        cached = self._patients.get(ident)
        if cached is not None and cached[1] == demographics:
            self._patients.move_to_end(ident)
            return cached[0]
        token = _token(*ident)
        found = sorted(
            self.target.search("Patient", [("identifier", token)]),
            key=lambda p: str(p.get("id")),
        )
        if not found:
            created = self.target.create(mapped, if_none_exist=_if_none_exist(token))
            ref = f"Patient/{created['id']}"
        else:
            patient = found[0]  # several: link the first, as a conditional create would refuse
            ref = f"Patient/{patient['id']}"
            ours = self._ours(patient)
            changed = any(patient.get(k) != mapped.get(k) for k in _DEMOGRAPHICS)
            if ours and changed:
                updated = {k: v for k, v in patient.items() if k not in _DEMOGRAPHICS}
                updated.update({k: mapped[k] for k in _DEMOGRAPHICS if k in mapped})
                self.target.update(updated, _version(patient))
        self._patients[ident] = (ref, demographics)
        if len(self._patients) > _PATIENT_CACHE:
            self._patients.popitem(last=False)
        return ref

    def _ours(self, resource: dict[str, Any]) -> bool:
        """Created by this server: meta.source is ours (HAPI appends `#request-id` to it)."""
        source = str((resource.get("meta") or {}).get("source") or "")
        return source == self.options.source or source.startswith(self.options.source + "#")

    def forget(self) -> None:
        """Drop cached references (after an error: the target may have changed under us)."""
        self._patients.clear()
        self._endpoint = None

    def _endpoint_ref(self) -> str:
        if self._endpoint is None:
            endpoint = map_endpoint(self.options)
            token = _token(*endpoint_identifier(self.options))
            found = self.target.search("Endpoint", [("identifier", token)])
            if found:
                self._endpoint = f"Endpoint/{found[0]['id']}"
            else:
                created = self.target.create(endpoint, if_none_exist=_if_none_exist(token))
                self._endpoint = f"Endpoint/{created['id']}"
        return self._endpoint

    def _orders(self, instance: dict[str, Any]) -> list[str]:
        """ServiceRequests carrying the study's accession number (ImagingStudy.basedOn)."""
        values = (instance.get("00080050") or {}).get("Value") or []
        accession = str(values[0]).strip() if values else ""
        if not accession:
            return []
        found = self.target.search("ServiceRequest", [("identifier", escape(accession))])
        return sorted(f"ServiceRequest/{r['id']}" for r in found)
