"""The legal-action rule (qmix_edge.runtime.legal): whatever the reply, the applied action is allowed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmix_edge.runtime.legal import Verdict, judge, legal_action, substitute


@st.composite
def step_case(draw: st.DrawFn) -> tuple[np.ndarray, int, int | None]:
    """(mask with at least one allowed action, fallback action in range, a reply of any kind)."""
    n = draw(st.integers(1, 12))
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if not mask.any():
        mask[draw(st.integers(0, n - 1))] = True
    fallback = draw(st.integers(0, n - 1))
    reply = draw(
        st.one_of(
            st.none(),  # missing or late
            st.integers(0, n - 1),  # in range: allowed or masked
            st.integers(n, 2**63 - 1),  # out of range
            st.integers(-(2**63), -1),  # negative
        )
    )
    return mask, fallback, reply


@given(step_case())
def test_legal_applied_action_is_always_allowed(case: tuple[np.ndarray, int, int | None]) -> None:
    mask, fallback, reply = case
    n = mask.size
    applied, verdict = judge(reply, fallback, n, mask)
    assert 0 <= applied < n and mask[applied]
    if reply is not None and 0 <= reply < n and mask[reply]:
        assert (applied, verdict) == (reply, Verdict.APPLIED)
    else:
        assert verdict == (Verdict.MISSING if reply is None else Verdict.INVALID)
        # the fallback when allowed, else the lowest allowed action
        assert applied == (fallback if mask[fallback] else int(np.flatnonzero(mask)[0]))
    assert legal_action(reply, fallback, n, mask) == applied


@given(st.integers(1, 10), st.data())
def test_legal_without_a_mask_every_in_range_reply_stands(n: int, data: st.DataObject) -> None:
    fallback = data.draw(st.integers(0, n - 1))
    reply = data.draw(st.integers(-5, n + 5))
    expected = reply if 0 <= reply < n else fallback
    assert legal_action(reply, fallback, n, None) == expected


@pytest.mark.parametrize(
    ("mask", "fallback", "expected"),
    [
        ([True, True, True], 1, 1),  # fallback allowed
        ([False, False, True, True], 0, 2),  # fallback masked: lowest allowed
        ([False, True], 5, 1),  # a fallback out of range is never applied
        ([False, False], 1, 1),  # nothing allowed: the fallback, in range
    ],
)
def test_legal_substitute_cases(mask: list[bool], fallback: int, expected: int) -> None:
    assert substitute(fallback, len(mask), np.array(mask)) == expected
