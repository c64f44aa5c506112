"""Parsed DICOM JSON of the instances of studies the sync reads again and again."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import orjson

from dicomhub.sync.mapping import MappedDataset

__all__ = ["ParsedInstances"]


class ParsedInstances:
    """Instance JSON parsed once for a study reconciled pass after pass while it is stored.

    Only studies read a second time within `idle_seconds` are kept, and entries unread for that
    long are dropped: every object held here is walked by each full run of Python's cyclic
    garbage collector, which stops the whole process. Holding 64 MB of parsed one-instance
    studies (the previous policy) made those runs last 0.6 s.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        idle_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        # instance key -> (size of its stored JSON, the JSON parsed, last read); stored JSON
        # never changes, so an entry never goes stale, it only stops being useful
        self._parsed: OrderedDict[int, tuple[int, dict[str, Any], float]] = OrderedDict()
        self._bytes = 0
        self._studies: OrderedDict[Hashable, float] = OrderedDict()  # study -> last read

    @property
    def size(self) -> int:
        """Bytes of stored JSON whose parsed form is held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._parsed)

    def study(self, study: Hashable, rows: Sequence[tuple[int, bytes]]) -> list[dict[str, Any]]:
        """The parsed JSON of one study's instances (instance key, stored JSON), in order."""
        now = self._clock()
        self._expire(now)
        keep = study in self._studies
        self._studies[study] = now
        self._studies.move_to_end(study)
        if not keep:
            return [orjson.loads(raw) for _key, raw in rows]
        parsed = self._parsed
        out: list[dict[str, Any]] = []
        for key, raw in rows:
            entry = parsed.get(key)
            if entry is None:
                value: dict[str, Any] = MappedDataset(orjson.loads(raw))
                self._bytes += len(raw)
            else:
                value = entry[1]
                parsed.move_to_end(key)
            parsed[key] = (len(raw), value, now)
            out.append(value)
        while self._bytes > self.max_bytes and parsed:
            _key, (size, _value, _read) = parsed.popitem(last=False)
            self._bytes -= size
        return out

    def _expire(self, now: float) -> None:
        oldest = now - self.idle_seconds
        parsed = self._parsed
        while parsed:
            key = next(iter(parsed))
            size, _value, read = parsed[key]
            if read >= oldest:
                break
            del parsed[key]
            self._bytes -= size
        studies = self._studies
        while studies:
            study = next(iter(studies))
            if studies[study] >= oldest:
                break
            del studies[study]
