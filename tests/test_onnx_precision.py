"""The ONNX side of TensorRT builds, run here without TensorRT: the fp16 and Q/DQ int8 graphs that TensorRT 11
builds (checked in onnxruntime on the CPU against the fp32 PyTorch module, and for the form TensorRT's parser
needs), which graph each TensorRT major gets, and the input-shape check that runs before tensorrt is imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import model_zoo
from deploy_targets import ExportSpec
from deploy_targets.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_bytes, ort_session
from deploy_targets.onnx_precision import INT8_OPS, check_input_shape, input_dims, to_fp16, to_int8_qdq
from deploy_targets.tensorrt_export import build_engine, engine_onnx, parity_tolerance
from tests.tinynets import tiny_net

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
    reason="onnx and onnxruntime are needed (pip install 'ofa-kit[onnx]')")

SHAPE = (1, 3, 16, 16)


def _spec(dynamic: bool, net: torch.nn.Module | None = None, shape: tuple[int, ...] = SHAPE) -> ExportSpec:
    return ExportSpec(net if net is not None else tiny_net(), shape, Path("unused.engine"), dynamic_batch=dynamic)


def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _outputs(spec: ExportSpec, model: bytes, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(PyTorch fp32 reference, onnxruntime output of ``model``) for inputs ``x``."""
    with torch.no_grad():
        ref = spec.frozen_module()(x).numpy()
    return ref, ort_session(model).run(None, {INPUT_NAME: x.numpy()})[0]


def _graph(model: bytes):
    import onnx

    m = onnx.load_from_string(model)
    onnx.checker.check_model(m)
    return m.graph


@pytest.mark.parametrize("dynamic", [False, True])
def test_fp16_graph_computes_in_fp16_behind_float32_io(dynamic):
    from onnx import TensorProto

    spec = _spec(dynamic)
    fp16 = to_fp16(onnx_bytes(spec))
    graph = _graph(fp16)
    io = [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)]
    assert io == [TensorProto.FLOAT, TensorProto.FLOAT]
    floats = [t.data_type for t in graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and set(floats) == {TensorProto.FLOAT16}  # every weight and bias is fp16
    casts = [n for n in graph.node if n.op_type == "Cast"]
    assert len(casts) == 2 and casts[0].input[0] == INPUT_NAME and casts[1].output[0] == OUTPUT_NAME
    ref, got = _outputs(spec, fp16, _randn((4 if dynamic else 1, 3, 16, 16), 1))
    diff = float(np.abs(got - ref).max())
    assert 0 < diff <= parity_tolerance("fp16", spec.atol, ref)  # not bit-equal to fp32: it really is fp16


@pytest.mark.parametrize("dynamic", [False, True])
def test_int8_graph_has_calibrated_qdq_in_the_form_tensorrt_parses(dynamic):
    from onnx import TensorProto, numpy_helper

    spec = _spec(dynamic)
    calibration = [_randn(SHAPE, i).numpy() for i in range(8)]
    qdq = to_int8_qdq(onnx_bytes(spec), calibration)
    graph = _graph(qdq)
    producer = {out: n for n in graph.node for out in n.output}
    consts = {t.name: t for t in graph.initializer}
    layers = [n for n in graph.node if n.op_type in INT8_OPS]
    assert [n.op_type for n in layers] == ["Conv", "Conv", "Gemm"]
    for layer in layers:  # activation and weight dequantized from int8, per output channel for the weight
        act, weight = (producer[name] for name in layer.input[:2])
        assert act.op_type == weight.op_type == "DequantizeLinear", layer.name
        assert {a.name: a.i for a in weight.attribute}.get("axis", 1) == 0, layer.name
        assert consts[layer.input[2]].data_type == TensorProto.FLOAT, layer.name  # bias stays float
    for node in (n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        zero = consts[node.input[2]]  # TensorRT: signed int8, zero point 0
        assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name
    assert not any(consts[n.input[0]].data_type == TensorProto.INT32 for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in consts)
    ref, got = _outputs(spec, qdq, _randn((4 if dynamic else 1, 3, 16, 16), 99))
    diff = float(np.abs(got - ref).max())
    assert 0 < diff <= parity_tolerance("int8", spec.atol, ref)


def test_a_zoo_subnet_keeps_its_predictions_in_fp16_and_int8():
    """An MobileNetV3 subnet (hswish, squeeze-excite, residual adds), calibrated on other inputs than it is
    tested on: the top-1 class of every input survives, within the documented parity tolerances."""
    net = model_zoo.load_checkpoint("ofa_mbv3_tiny.fmnist")
    cfg = net.space.smallest()
    spec = _spec(True, net.extract(cfg), (1, 1, cfg.r, cfg.r))
    data = onnx_bytes(spec)
    x = _randn((64, 1, cfg.r, cfg.r), 7)
    calibration = [_randn((8, 1, cfg.r, cfg.r), 100 + i).numpy() for i in range(4)]
    for precision, model in (("fp16", to_fp16(data)), ("int8", to_int8_qdq(data, calibration))):
        ref, got = _outputs(spec, model, x)
        assert float(np.abs(got - ref).max()) <= parity_tolerance(precision, spec.atol, ref), precision
        assert (got.argmax(1) == ref.argmax(1)).all(), precision


def test_each_tensorrt_major_gets_its_graph():
    data = onnx_bytes(_spec(True))
    calibration = [_randn(SHAPE, 3).numpy()]
    for precision in ("fp32", "fp16", "int8"):  # TensorRT 10: builder flags, the graph as it is
        assert engine_onnx(data, precision, calibration, 10) == data
    assert engine_onnx(data, "fp32", calibration, 11) == data
    ops = {p: {n.op_type for n in _graph(engine_onnx(data, p, calibration, 11)).node} for p in ("fp16", "int8")}
    assert "Cast" in ops["fp16"] and "QuantizeLinear" not in ops["fp16"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["int8"] and "Cast" not in ops["int8"]


def test_input_dims_read_the_graph():
    assert input_dims(onnx_bytes(_spec(False))) == SHAPE
    assert input_dims(onnx_bytes(_spec(True))) == (-1, 3, 16, 16)
    check_input_shape("input_shape", (64, 3, 16, 16), (-1, 3, 16, 16))  # any batch fits a dynamic model
    with pytest.raises(ValueError, match=r"^the ONNX model cannot be read .*allowed: a serialized ONNX ModelProto$"):
        input_dims(b"\xff not an onnx model")


@pytest.mark.parametrize("dynamic, kwargs, match", [
    (True, {"input_shape": (1, 1, 16, 16)},
     r"^input_shape=\(1, 1, 16, 16\) does not fit the ONNX model's input; allowed: \(N, 3, 16, 16\) for any batch N$"),
    (True, {"input_shape": (2, 3, 16, 20)}, r"^input_shape=\(2, 3, 16, 20\) does not fit .*\(N, 3, 16, 16\)"),
    (True, {"input_shape": (1, 3, 16)}, r"^input_shape=\(1, 3, 16\) does not fit"),
    (True, {}, r"a dynamic-batch ONNX model needs input_shape"),
    (True, {"input_shape": (4, 3, 16, 16), "max_batch": 2},
     r"^max_batch=2 is not supported; allowed: >= the input batch 4$"),
    (False, {"input_shape": (2, 3, 16, 16)},
     r"^input_shape=\(2, 3, 16, 16\) does not fit .*allowed: \(1, 3, 16, 16\)$"),
    (True, {"precision": "int8", "calibration": [np.zeros((4, 1, 16, 16))], "input_shape": SHAPE},
     r"^calibration batch shape=\(4, 1, 16, 16\) does not fit .*allowed: \(N, 3, 16, 16\)"),
])
def test_build_engine_checks_shapes_against_the_onnx_graph_before_tensorrt(dynamic, kwargs, match):
    """A wrong channel count on a dynamic-batch model fails up front with the allowed shape, on any machine
    (where tensorrt is not installed, reaching its import would raise ModuleNotFoundError instead)."""
    with pytest.raises(ValueError, match=match):
        build_engine(onnx_bytes(_spec(dynamic)), **{"precision": "fp32", **kwargs})
