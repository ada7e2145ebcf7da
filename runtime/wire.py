"""The wire codec of protocol qmix_edge.v1: typed tensors in and out, and the protocol constants.

Owns the conversion between numpy arrays and `Tensor` messages (raw little-endian bytes, C order)
and the validation every receiver applies: dtype, shape against what the manifest says, byte
length, finiteness, bool bytes in {0, 1}. Float32 observations travel bit for bit, so an agent sees
exactly the array the coordinator's environment produced. No torch here.
"""

from __future__ import annotations

import math
import sys
from typing import Final

import numpy as np

from .errors import WireError
from .proto.v1 import team_pb2 as pb

PROTOCOL_VERSION: Final = pb.PROTOCOL_VERSION_2
"""The protocol version this package speaks."""
HEALTH_SERVICE: Final = "qmix_edge.v1.Team"
"""The service name the coordinator reports on grpc.health.v1."""
MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Default receive limit on both sides: a step message is a few hundred bytes."""

_DTYPES: Final[dict[int, np.dtype]] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_BOOL: np.dtype("bool"),
    pb.DTYPE_INT64: np.dtype("<i8"),
}
_CODES: Final[dict[np.dtype, int]] = {v: k for k, v in _DTYPES.items()}
_LITTLE_ENDIAN_HOST: Final = sys.byteorder == "little"


def encode(array: np.ndarray) -> pb.Tensor:
    """Pack a float32, bool or int64 array into a Tensor (little-endian, C order)."""
    arr = np.asarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = _CODES.get(np.dtype(dtype))
    if code is None:
        raise WireError(
            f"cannot send dtype {arr.dtype}; the wire carries float32, bool and int64. "
            "Convert the array first (observations are float32)."
        )
    data = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    return pb.Tensor(dtype=code, shape=arr.shape, data=data)  # type: ignore[arg-type]


def decode(
    tensor: pb.Tensor,
    *,
    name: str,
    dtype: int,
    shape: tuple[int, ...],
) -> np.ndarray:
    """Unpack and validate a Tensor; raise `WireError` naming `name` on any mismatch.

    `dtype` is the expected `pb.DType` code and `shape` the expected shape (from the manifest).
    Float tensors must be finite; bool tensors must hold only bytes 0 and 1. The array returned
    is a read-only view of the tensor's bytes (no copy).
    """
    found_dtype = tensor.dtype
    if found_dtype != dtype:
        raise WireError(
            f"{name}: expected dtype {pb.DType.Name(dtype)}, found {pb.DType.Name(found_dtype)}"
            if found_dtype in pb.DType.values()
            else f"{name}: expected dtype {pb.DType.Name(dtype)}, found unknown code {found_dtype}"
        )
    found = tuple(tensor.shape)
    if found != shape:
        raise WireError(f"{name}: expected shape {list(shape)}, found {list(found)}")
    np_dtype = _DTYPES[dtype]
    data = tensor.data
    expected_bytes = math.prod(shape) * np_dtype.itemsize
    if len(data) != expected_bytes:
        raise WireError(
            f"{name}: shape {list(shape)} of {np_dtype.name} needs {expected_bytes} bytes, "
            f"found {len(data)}"
        )
    if dtype == pb.DTYPE_BOOL:
        # Deleting every 0 and 1 byte leaves nothing exactly when all are valid bools (one C pass,
        # no array yet).
        if data.translate(None, b"\x00\x01"):
            raw = np.frombuffer(data, dtype=np.uint8)
            raise WireError(f"{name}: bool bytes must be 0 or 1, found {int(raw.max())}")
        arr = np.frombuffer(data, dtype=np_dtype)  # bytes 0/1 are exactly numpy's bools: no copy
    else:
        arr = np.frombuffer(data, dtype=np_dtype)
        if dtype == pb.DTYPE_FLOAT32 and not _all_finite(arr):
            bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
            raise WireError(f"{name}: values must be finite, found NaN or inf at flat index {bad}")
        if not _LITTLE_ENDIAN_HOST:
            arr = arr.astype(np_dtype.newbyteorder("="))
    # frombuffer already gave the one-dimensional shape the byte count was checked against.
    return arr if len(shape) == 1 else arr.reshape(shape)


_SMALL: Final = 64
"""Up to this many elements, the finiteness test runs on Python floats (no ufunc call overhead)."""
_isfinite: Final = math.isfinite


def _all_finite(arr: np.ndarray) -> bool:
    """Whether a float array holds no NaN or inf (without numpy's floating-point warnings)."""
    if arr.size <= _SMALL:
        # float32 -> Python float is exact, so this is the same test as np.isfinite.
        return all(map(_isfinite, arr.tolist()))
    return bool(np.isfinite(arr).all())
