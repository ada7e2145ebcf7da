"""Clock offset estimation: exact on a symmetric link, bounded by half the delay otherwise, and the
least-delayed probe wins."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmix_edge.runtime.timesync import OffsetEstimator, Probe


def probe(true_offset: float, t0: float, up: float, handle: float, down: float) -> Probe:
    t1 = t0 + up + true_offset
    t2 = t1 + handle
    t3 = t2 - true_offset + down
    return Probe(t0, t1, t2, t3)


@given(
    offset=st.floats(-1e4, 1e4),
    t0=st.floats(0, 1e6),
    up=st.floats(0, 0.5),
    down=st.floats(0, 0.5),
    handle=st.floats(0, 0.1),
)
def test_the_true_offset_lies_within_half_the_delay(
    offset: float, t0: float, up: float, down: float, handle: float
) -> None:
    p = probe(offset, t0, up, handle, down)
    assert p.delay == pytest.approx(up + down, abs=1e-6)
    assert abs(p.offset - offset) <= p.delay / 2 + 1e-6


def test_the_least_delayed_probe_gives_the_estimate() -> None:
    est = OffsetEstimator(window=8)
    est.add(probe(3.0, 0.0, 0.2, 0.001, 0.01))  # queued on the way up: 95 ms off
    est.add(probe(3.0, 1.0, 0.001, 0.001, 0.001))  # clean
    est.add(probe(3.0, 2.0, 0.01, 0.001, 0.3))
    assert est.offset == pytest.approx(3.0, abs=1e-9)
    assert est.error_bound == pytest.approx(0.001)
    assert est.to_local(est.to_mission(5.0)) == pytest.approx(5.0)


def test_no_probe_means_no_offset_and_a_jumped_clock_is_ignored() -> None:
    est = OffsetEstimator()
    with pytest.raises(LookupError, match="unknown"):
        _ = est.offset
    est.add(Probe(10.0, 0.0, 0.0, 9.0))  # negative delay: the agent's clock stepped back
    assert not est.ready
