"""ONNX graphs at reduced precision (for strongly typed TensorRT builds and for onnxruntime's int8 CPU kernels),
and the input-shape check every build runs on the ONNX graph before TensorRT is imported.

TensorRT 11 removed the fp16/int8 builder flags and the int8 calibrator: the precision is the graph's own.
:func:`to_fp16` casts weights and activations to fp16 (onnxruntime's float16 converter); :func:`to_int8_qdq`
inserts QuantizeLinear/DequantizeLinear pairs calibrated on real input batches (``onnxruntime.quantization``,
with the settings TensorRT's ONNX parser accepts). Both keep float32 inputs and outputs, so engines built from
them are fed and read like fp32 ones. onnx and onnxruntime are imported inside the functions that use them.
"""

from __future__ import annotations

import logging
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
#: Quantization schemes by the runtime that runs the Q/DQ graph. ``tensorrt``: the settings above (signed int8
#: activations). ``cpu``: onnxruntime's x86 fast path, uint8 activations and int8 per-channel weights on
#: Conv/Gemm/MatMul only (signed activations on every op ran 4-9x slower than fp32 here; docs/phones.md).
QDQ_SCHEMES = {
    "tensorrt": {"activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
                 "ops": list(INT8_OPS), "calibration": "min/max", "tool": "onnxruntime.quantization (QDQ)"},
    "cpu": {"activations": "uint8 asymmetric per-tensor", "weights": "int8 symmetric per-channel",
            "ops": list(INT8_OPS), "calibration": "min/max", "tool": "onnxruntime.quantization (QDQ)"},
}


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


class _QuietQuantizer(logging.Filter):
    """Drops onnxruntime.quantization's warnings on the root logger (one line per float bias it leaves alone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def to_int8_qdq(model: bytes, calibration: Sequence[np.ndarray], scheme: str = "tensorrt") -> bytes:
    """``model`` with int8 Q/DQ pairs whose scales are calibrated (min/max) on ``calibration`` batches.

    Weights are quantized per output channel; the remaining layers stay float32. ``scheme`` names the runtime
    (:data:`QDQ_SCHEMES`). A model with a static batch is calibrated on the images in batches of that size.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantType

    if scheme not in QDQ_SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not supported; allowed: {sorted(QDQ_SCHEMES)}")
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("int8 quantization needs calibration batches; none were given")
    batch = input_dims(model)[0]
    if batch > 0 and any(len(b) != batch for b in batches):  # a static batch: re-cut the images to fit it
        images = np.concatenate(batches)
        batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)] or [
            np.resize(images, (batch, *images.shape[1:]))]
    name = _graph_input(model).name

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.pending, None)
            return None if item is None else {name: item}

    if scheme == "tensorrt":
        kinds = {"activation_type": QuantType.QInt8, "extra_options": dict(TENSORRT_QDQ_OPTIONS)}
    else:
        kinds = {"activation_type": QuantType.QUInt8, "extra_options": {"WeightSymmetric": True}}
    quiet, root = _QuietQuantizer(), logging.getLogger()
    root.addFilter(quiet)
    try:
        return _quantize(model, _Batches(), kinds)
    finally:
        root.removeFilter(quiet)


def _quantize(model: bytes, reader, kinds: dict) -> bytes:  # noqa: ANN001 - a CalibrationDataReader
    """onnxruntime's ``quantize_static`` of ``model`` (QDQ, per-channel int8 weights) with ``kinds``' settings."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="ofakit-qdq-") as tmp:
        src, pre, out = (Path(tmp) / f for f in ("model.onnx", "shapes.onnx", "qdq.onnx"))
        src.write_bytes(model)
        # ONNX shape inference only: onnxruntime's graph optimisation would rewrite ops (e.g. HardSwish) for
        # its own kernels, which TensorRT may not parse; onnxruntime optimises the graph again when it loads it.
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS), **kinds)
        return out.read_bytes()
