"""Reduced-precision copies of an agent's graph, always shipped with their measured agreement.

- ``int8``: onnxruntime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``):
  MatMul weights stored as int8, activations quantized per call (``MatMulInteger``). About 4x
  smaller weights; Q-values move by the quantization error.
- ``fp16``: weights *stored* in half precision and cast to float32 when the session loads
  (compute stays float32, which every CPU onnxruntime build runs). Half the size; the Q-values move
  by the fp16 rounding of the weights.

The inputs and outputs are the fp32 graph's, so the runtime runs a variant exactly like the default.
Neither is used unless asked for (``AgentPolicy.load(..., precision="int8")``); their action
agreement with the fp32 graph on the parity recording goes into the manifest.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ExportConfigError, ExportError

log = logging.getLogger(__name__)

VARIANT_PRECISIONS: tuple[str, ...] = ("int8", "fp16")
"""The reduced precisions ``--quantize`` accepts."""


def make_variant(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """A reduced-precision copy of ``model`` (metadata is set later by the exporter)."""
    if precision == "int8":
        return _int8_dynamic(model)
    if precision == "fp16":
        return _fp16_weights(model)
    raise ExportConfigError(
        f"unknown reduced precision {precision!r}; choose from {list(VARIANT_PRECISIONS)}"
    )


def _int8_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _BelowError()
    root = logging.getLogger()
    root.addFilter(quiet)  # quantize_dynamic logs advice through the root logger
    try:
        return _quantize(model, quantize_dynamic, QuantType.QInt8)
    finally:
        root.removeFilter(quiet)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _quantize(model: onnx.ModelProto, quantize_dynamic: Any, weight_type: Any) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="qmix-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model.SerializeToString())
        try:
            quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], weight_type=weight_type)
        except Exception as e:
            raise ExportError(f"onnxruntime dynamic quantization failed: {e}") from e
        return onnx.load_model_from_string(dst.read_bytes())


def _fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            inits.append(init)
            continue
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), name=f"{init.name}__fp16"
        )
        inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = [*casts, *graph.node]  # casts first keeps the node list topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return out
