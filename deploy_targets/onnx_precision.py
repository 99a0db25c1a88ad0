"""ONNX graphs at reduced precision for strongly typed TensorRT builds, and the input-shape check every build
runs on the ONNX graph before TensorRT is imported.

TensorRT 11 removed the fp16/int8 builder flags and the int8 calibrator: the precision is the graph's own.
:func:`to_fp16` casts weights and activations to fp16 (onnxruntime's float16 converter); :func:`to_int8_qdq`
inserts QuantizeLinear/DequantizeLinear pairs calibrated on real input batches (``onnxruntime.quantization``,
with the settings TensorRT's ONNX parser accepts). Both keep float32 inputs and outputs, so engines built from
them are fed and read like fp32 ones. onnx and onnxruntime are imported inside the functions that use them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

#: ops given Q/DQ inputs (weights per output channel): the compute-heavy layers, as TensorRT places them.
INT8_OPS = ("Conv", "Gemm", "MatMul")
#: The TensorRT-guided settings of NVIDIA's ModelOpt on top of onnxruntime's quantizer: signed int8 with zero
#: point 0 everywhere (TensorRT's only scheme), float biases (TensorRT dequantizes only 8-bit tensors and
#: folds the bias into the layer), Q/DQ pairs on float weights (folded at build) and no Q/DQ on the outputs
#: of the quantized layers (TensorRT fuses the next layer's input quantization instead).
TENSORRT_QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                        "AddQDQPairToWeight": True, "OpTypesToExcludeOutputQuantization": list(INT8_OPS)}


def _graph_input(model: bytes):
    """The ONNX model's single input (a ``ValueInfoProto``); initializers listed as inputs do not count."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        graph = onnx.load_from_string(model).graph
    except DecodeError as exc:
        raise ValueError(f"the ONNX model cannot be read ({exc}); allowed: a serialized ONNX ModelProto") from None
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"the ONNX model has {len(inputs)} inputs {[i.name for i in inputs]}; one input is supported")
    return inputs[0]


def input_dims(model: bytes) -> tuple[int, ...]:
    """The dims of the ONNX model's single input; ``-1`` for a symbolic (dynamic) dim."""
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in _graph_input(model).type.tensor_type.shape.dim)


def check_input_shape(name: str, shape: Sequence[int], dims: Sequence[int]) -> None:
    """Raise a one-line ``ValueError`` when ``shape`` (called ``name``) does not fit the ONNX input ``dims``."""
    shape, dims = tuple(int(v) for v in shape), tuple(dims)
    if len(shape) == len(dims) and all(d == -1 or s == d for s, d in zip(shape, dims)):
        return
    allowed = f"({', '.join('N' if d == -1 else str(d) for d in dims)})"
    if -1 in dims:
        allowed += " for any batch N"
    raise ValueError(f"{name}={shape} does not fit the ONNX model's input; allowed: {allowed}")


def to_fp16(model: bytes) -> bytes:
    """``model`` with fp16 weights and activations, float32 input and output (Cast nodes at both ends)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True)
    _sort_nodes(converted.graph)  # the converter appends its input Cast last; a valid ONNX graph is sorted
    return converted.SerializeToString()


def _sort_nodes(graph) -> None:
    """Reorder ``graph.node`` topologically in place, keeping the order of nodes that are already ready."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"the ONNX graph has a cycle or undefined inputs at node {waiting[0].name!r}")
        pending = waiting
    graph.ClearField("node")
    graph.node.extend(ordered)


def to_int8_qdq(model: bytes, calibration: Sequence[np.ndarray]) -> bytes:
    """``model`` with int8 Q/DQ pairs whose scales are calibrated (min/max) on ``calibration`` batches.

    Weights are quantized per output channel; the remaining layers stay float32.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("int8 quantization needs calibration batches; none were given")
    name = _graph_input(model).name

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {name: batch}

    with tempfile.TemporaryDirectory(prefix="ofakit-qdq-") as tmp:
        src, pre, out = (Path(tmp) / f for f in ("model.onnx", "shapes.onnx", "qdq.onnx"))
        src.write_bytes(model)
        # ONNX shape inference only: onnxruntime's graph optimisation would rewrite ops (e.g. HardSwish) for
        # its own kernels, and TensorRT is the target here.
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(INT8_OPS), extra_options=dict(TENSORRT_QDQ_OPTIONS))
        return out.read_bytes()

