"""The wire codec: float32 passes bit for bit; every malformed tensor is refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qmix_edge.runtime import wire
from qmix_edge.runtime.errors import WireError
from qmix_edge.runtime.proto.v1 import team_pb2 as pb


@given(
    hnp.arrays(
        np.float32,
        st.integers(0, 40),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_float32_round_trip_is_bit_exact(x: np.ndarray) -> None:
    t = pb.Tensor.FromString(wire.encode(x).SerializeToString())
    y = wire.decode(t, name="obs", dtype=pb.DTYPE_FLOAT32, shape=x.shape)
    assert y.dtype == np.float32 and y.tobytes() == x.tobytes()


def test_bool_mask_round_trip() -> None:
    m = np.array([True, False, True])
    assert wire.decode(wire.encode(m), name="m", dtype=pb.DTYPE_BOOL, shape=(3,)).tolist() == [
        True,
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (
            pb.Tensor(dtype=pb.DTYPE_INT64, shape=[2], data=bytes(16)),
            "expected dtype DTYPE_FLOAT32",
        ),
        (pb.Tensor(dtype=99, shape=[2], data=bytes(8)), "unknown code 99"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[3], data=bytes(12)), r"expected shape \[2\]"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2], data=bytes(7)), "needs 8 bytes, found 7"),
        (
            pb.Tensor(
                dtype=pb.DTYPE_FLOAT32, shape=[2], data=np.array([0, np.nan], "<f4").tobytes()
            ),
            "NaN or inf at flat index",
        ),
        (
            pb.Tensor(
                dtype=pb.DTYPE_FLOAT32, shape=[2], data=np.array([np.inf, 0], "<f4").tobytes()
            ),
            "NaN or inf",
        ),
    ],
)
def test_bad_float_tensors_are_refused(tensor: pb.Tensor, match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.decode(tensor, name="obs", dtype=pb.DTYPE_FLOAT32, shape=(2,))


def test_bool_bytes_other_than_0_1_are_refused() -> None:
    t = pb.Tensor(dtype=pb.DTYPE_BOOL, shape=[2], data=b"\x01\x07")
    with pytest.raises(WireError, match="bool bytes must be 0 or 1"):
        wire.decode(t, name="mask", dtype=pb.DTYPE_BOOL, shape=(2,))


def test_unsupported_dtype_cannot_be_sent() -> None:
    with pytest.raises(WireError, match="cannot send dtype float64"):
        wire.encode(np.zeros(2))


@pytest.mark.parametrize("size", [1, 18, 64, 65, 300])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused_at_any_size(size: int, bad: float) -> None:
    x = np.full(size, 3e38, np.float32)  # large but finite: must not be mistaken for inf
    assert wire.decode(wire.encode(x), name="obs", dtype=pb.DTYPE_FLOAT32, shape=(size,)).tolist()
    x[size - 1] = bad
    with pytest.raises(WireError, match=rf"NaN or inf at flat index \[{size - 1}\]"):
        wire.decode(wire.encode(x), name="obs", dtype=pb.DTYPE_FLOAT32, shape=(size,))


@pytest.mark.parametrize(
    "x", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False, True, True])]
)
def test_decoded_arrays_have_the_expected_shape_and_dtype(x: np.ndarray) -> None:
    code = pb.DTYPE_BOOL if x.dtype == np.bool_ else pb.DTYPE_FLOAT32
    y = wire.decode(wire.encode(x), name="t", dtype=code, shape=x.shape)
    assert y.shape == x.shape and y.dtype == x.dtype and (y == x).all()


def test_the_largest_bad_bool_byte_is_named() -> None:
    t = pb.Tensor(dtype=pb.DTYPE_BOOL, shape=[4], data=b"\x01\x02\x00\xff")
    with pytest.raises(WireError, match="found 255"):
        wire.decode(t, name="mask", dtype=pb.DTYPE_BOOL, shape=(4,))
