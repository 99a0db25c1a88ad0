"""int8 ONNX for onnxruntime's CPU kernels: a calibrated Q/DQ graph, checked like every int8 target (top-1
agreement on 100+ images, the logit bound below that), with checks that fail; OpenVINO's int8, which converts the
same graph, goes through the same checks."""

from __future__ import annotations

import onnx
import pytest
import torch

from deploy_targets import ExportSpec, ParityError, get_exporter
from tests.tinynets import CLASSIFIER_SHAPE, images, tiny_classifier

EXPORTER = get_exporter("onnx")
pytestmark = pytest.mark.skipif(EXPORTER.unavailable() is not None,
                                reason=f"onnx: unavailable: {EXPORTER.unavailable()}")
SHAPE = CLASSIFIER_SHAPE


def test_int8_onnx_is_a_calibrated_qdq_graph_within_the_logit_bound(tmp_path):
    """Few example images: the logit bound. The file holds Q/DQ pairs around every conv and the classifier,
    runs in onnxruntime with outputs that differ from fp32 (it really is quantized) and records its scheme."""
    net = tiny_classifier()
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "q.onnx", precision="int8", inputs=images(4, 1),
                                     calibration=tuple(images(96, 2).split(32))))
    s = res.settings
    assert s["precision"] == "int8" and s["calibration_images"] == 96 and s["top1_agreement"] is None
    assert s["quantization"]["activations"].startswith("uint8") and s["quantization"]["ops"] == ["Conv", "Gemm", "MatMul"]
    assert 1e-4 < res.max_abs_diff <= s["parity_tolerance"]
    ops = [n.op_type for n in onnx.load(str(res.path)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("Conv") == 2 and "Gemm" in ops
    x = images(1, 3)
    with torch.no_grad():
        ref = net(x).numpy()
    got = EXPORTER.bind(res.path, x.numpy())()
    assert 1e-4 < abs(got - ref).max() <= 0.1 * abs(ref).max()
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]


@pytest.mark.parametrize("target, suffix, label", [("onnx", ".onnx", "ONNX"), ("openvino", ".xml", "OpenVINO")])
def test_int8_top1_agreement_is_checked_and_bad_calibration_fails_it(target, suffix, label, tmp_path):
    """100+ images: top-1 agreement, recorded with the bar (OpenVINO converts the same Q/DQ model). Calibrated
    on images 1000x dimmer than the checked ones, activations clip, agreement falls and nothing is written."""
    exporter = get_exporter(target)
    if exporter.unavailable() is not None:
        pytest.skip(f"unavailable: {target}: {exporter.unavailable()}")
    x, good = images(200, 1), tuple(images(128, 2).split(32))
    ok = exporter.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / f"ok{suffix}", precision="int8", inputs=x,
                                    calibration=good, options={"min_top1_agreement": 0.9}))
    assert ok.settings["min_top1_agreement"] == 0.9 <= ok.settings["top1_agreement"] <= 1
    assert ok.settings["calibration_images"] == 128 and ok.settings["quantization"]["weights"].startswith("int8")
    bad = ExportSpec(tiny_classifier(), SHAPE, tmp_path / f"bad{suffix}", precision="int8", inputs=x,
                     calibration=(images(32, 2) * 1e-3,))
    with pytest.raises(ParityError, match=rf"{label} int8 parity check failed: top-1 agrees with torch on .* of 200 "
                                          rf"images < 99.0% .*bad{suffix} was not written"):
        exporter.export(bad)
    with pytest.raises(ValueError, match=r"precision='int8' needs calibration batches"):
        exporter.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / f"none{suffix}", precision="int8"))
    with pytest.raises(ValueError, match=r"min_top1_agreement=0.9 applies to precision='int8' only"):
        exporter.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / f"f{suffix}",
                                   options={"min_top1_agreement": 0.9}))
    assert sorted(p.stem for p in tmp_path.iterdir()) == ["ok"] * len(list(tmp_path.iterdir()))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_figure_is_never_filed_under_the_wrong_precision(runtime, tmp_path):
    """The runtimes that time the ONNX exporter's files refuse a float model as int8 and a Q/DQ model as fp32 (the
    figure would land in the other precision's table), locally as through the agent (which runs the same check)."""
    from profilers.runtimes import MeasureSpec, get_runtime

    rt = get_runtime(runtime)
    if rt.unavailable() is not None:
        pytest.skip(f"unavailable: {runtime}: {rt.unavailable()}")
    f = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "f.onnx")).path
    q = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "q.onnx", precision="int8",
                                   calibration=(images(32, 2),))).path
    with pytest.raises(ValueError, match=r"precision='int8', but f.onnx is a float model"):
        rt.check(MeasureSpec(f, SHAPE, precision="int8"))
    with pytest.raises(ValueError, match=r"precision='fp32', but q.onnx is an int8 \(Q/DQ\) model"):
        rt.check(MeasureSpec(q, SHAPE))
    rt.check(MeasureSpec(q, SHAPE, precision="int8"))
    rt.check(MeasureSpec(f, SHAPE))
