"""What the sync keeps parsed between passes: only studies read again, only while they are."""

from __future__ import annotations

import gc

import orjson

from dicomhub.sync.mapping import MappedDataset
from dicomhub.sync.parsed import ParsedInstances


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(study: int, count: int, first_key: int = 0) -> list[tuple[int, bytes]]:
    return [
        (
            study * 10_000 + first_key + i,
            orjson.dumps({"0020000D": {"vr": "UI", "Value": [f"1.2.{study}"]}, "n": i}),
        )
        for i in range(count)
    ]


def test_a_study_read_once_is_not_kept() -> None:
    cache = ParsedInstances(clock=Clock())
    # a load of one-instance studies, each reconciled once: none of them is held
    for study in range(1000):
        (parsed,) = cache.study(study, _rows(study, 1))
        assert parsed["0020000D"]["Value"] == [f"1.2.{study}"]
    assert len(cache) == 0 and cache.size == 0


def test_a_study_read_again_is_kept_and_answers_the_same() -> None:
    clock = Clock()
    cache = ParsedInstances(clock=clock)
    rows = _rows(7, 3)
    first = cache.study(7, rows)
    clock.now += 1
    second = cache.study(7, [*rows, *_rows(7, 2, first_key=3)])  # the study grew
    assert len(cache) == 5 and cache.size == sum(len(r) for _k, r in rows) + sum(
        len(r) for _k, r in _rows(7, 2, first_key=3)
    )
    assert second[:3] == first and [p["n"] for p in second] == [0, 1, 2, 0, 1]
    third = cache.study(7, rows)
    assert all(a is b for a, b in zip(third, second[:3], strict=True))  # not parsed again
    # what the mapping derives from each instance is kept with it, for the next pass
    assert all(isinstance(p, MappedDataset) for p in third)


def test_entries_not_read_for_a_while_are_dropped() -> None:
    clock = Clock()
    cache = ParsedInstances(clock=clock, idle_seconds=30)
    cache.study(1, _rows(1, 4))
    cache.study(1, _rows(1, 4))
    clock.now += 20
    cache.study(2, _rows(2, 2))
    cache.study(2, _rows(2, 2))
    assert len(cache) == 6
    clock.now += 15  # study 1 last read 35 s ago, study 2 15 s ago
    cache.study(3, _rows(3, 1))
    assert len(cache) == 2
    clock.now += 31
    cache.study(1, _rows(1, 4))  # study 1 is new again: read once, not kept
    assert len(cache) == 0 and cache.size == 0


def test_the_byte_budget_drops_the_least_recently_read() -> None:
    clock = Clock()
    rows = _rows(1, 10)
    each = len(rows[0][1])
    cache = ParsedInstances(clock=clock, max_bytes=each * 4)
    cache.study(1, rows)
    cache.study(1, rows)
    assert len(cache) == 4 and cache.size <= each * 4
    again = cache.study(1, rows[-4:])  # the four kept are the last read
    assert [p["n"] for p in again] == [6, 7, 8, 9] and len(cache) == 4


def test_what_is_held_is_all_the_garbage_collector_walks() -> None:
    """The reason for the policy: every object held here is scanned by each full collection."""
    cache = ParsedInstances(clock=Clock())
    gc.collect()
    before = len(gc.get_objects())
    for study in range(2000):
        cache.study(study, _rows(study, 1))
    gc.collect()
    assert len(gc.get_objects()) - before < 200  # not 2,000 dictionaries and their lists
