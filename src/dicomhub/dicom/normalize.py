"""Normalizers shared by the indexer (store time) and the query builder (search time).

Changing any of these changes what the index holds: bump INDEX_VERSION so that
stored rows can be recognised as stale and re-indexed.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "INDEX_VERSION",
    "normalize_da",
    "normalize_pn",
    "normalize_tm",
    "pn_words",
    "tm_upper_bound",
]

INDEX_VERSION = 1

_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_WORD_SPLIT = re.compile(r"[\^=\s,.\-']+")


def _fold(text: str) -> str:
    # PN matching is insensitive to case and accents (PS3.4 C.2.2.2.1 allows it; users expect it).
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold()


def normalize_pn(value: str) -> str:
    """Case- and accent-folded name with empty trailing components removed (`Doe^John^^` = `doe^john`)."""
    groups = []
    for group in value.strip().split("="):
        components = [c.strip() for c in group.split("^")]
        while components and not components[-1]:
            components.pop()
        groups.append("^".join(components))
    while groups and not groups[-1]:
        groups.pop()
    return _fold("=".join(groups))


def pn_words(value: str) -> list[str]:
    """The folded words of a name, for fuzzy (word-prefix) matching."""
    return [w for w in _WORD_SPLIT.split(_fold(value)) if w]


def normalize_da(value: str) -> str | None:
    """YYYYMMDD, accepting the ACR-NEMA `YYYY.MM.DD` form; None when not a date."""
    text = value.strip().replace(".", "")
    return text if _DA.match(text) else None


def normalize_tm(value: str) -> str | None:
    """HHMMSS.FFFFFF padded with zeros, so that times compare as strings; None when not a time."""
    text = value.strip().replace(":", "")
    m = _TM.match(text)
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return None
    return f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"


def tm_upper_bound(value: str) -> str | None:
    """The last instant a partial time covers: `10` is up to 10:59:59.999999 (range upper bound)."""
    # Same validity rules as a single time: `25` or `1060` is no bound at all.
    if normalize_tm(value) is None:
        return None
    text = value.strip().replace(":", "")
    m = _TM.match(text)
    assert m is not None  # normalize_tm accepted it
    hh, mm, ss, frac = m.groups()
    if frac is not None:
        return f"{hh}{mm or '59'}{ss or '59'}.{frac.ljust(6, '9')}"
    return f"{hh}{mm or '59'}{ss or '59'}.999999"
