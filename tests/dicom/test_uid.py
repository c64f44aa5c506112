"""UID syntax: the fast test the sync uses agrees with the one that explains a refusal."""

from __future__ import annotations

import pytest

from dicomhub.dicom.uid import is_valid_uid, uid_problem

GOOD = ["1", "1.2", "1.2.840.10008.1.2.1", "0.01.2", "1." + "2" * 62]
BAD = ["", ".1", "1.", "1..2", "1.2a", "1.2 ", "1.2.3\n", "\n1.2", "1." + "2" * 63, "1,2"]


@pytest.mark.parametrize("uid", GOOD)
def test_valid(uid: str) -> None:
    assert uid_problem(uid) is None
    assert is_valid_uid(uid)


@pytest.mark.parametrize("uid", BAD)
def test_invalid(uid: str) -> None:
    assert uid_problem(uid) is not None
    assert not is_valid_uid(uid)
