"""UID syntax (PS3.5 9.1)."""

from __future__ import annotations

import re

__all__ = ["is_valid_uid", "uid_problem"]

# fullmatch, not `^...$`: `$` also matches before a trailing newline.
_CHARS = re.compile(r"[0-9.]+")
# Components of digits joined by single dots: the whole syntax but the length, in one test.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def uid_problem(uid: str) -> str | None:
    """Why `uid` is not a usable UID, or None. Leading zeros are tolerated: real devices send them."""
    if not uid:
        return "is empty"
    if len(uid) > 64:
        return f"is {len(uid)} characters long (at most 64)"
    if not _CHARS.fullmatch(uid):
        return "contains characters other than digits and '.'"
    if any(not part for part in uid.split(".")):
        return "has an empty component"
    return None


def is_valid_uid(uid: str) -> bool:
    """`uid_problem(uid) is None`, faster: the sync asks it of every instance at every pass."""
    return len(uid) <= 64 and _UID.fullmatch(uid) is not None
