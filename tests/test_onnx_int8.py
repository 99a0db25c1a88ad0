"""int8 ONNX for onnxruntime's CPU kernels: a calibrated Q/DQ graph, checked like every int8 target (top-1
agreement on 100+ images, the logit bound below that), with checks that fail."""

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


def test_int8_onnx_top1_agreement_is_checked_and_bad_calibration_fails_it(tmp_path):
    """100+ images: top-1 agreement, recorded with the bar. Calibrated on images 1000x dimmer than the checked
    ones, activations clip, agreement falls and nothing is written."""
    x, good = images(200, 1), tuple(images(128, 2).split(32))
    ok = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "ok.onnx", precision="int8", inputs=x,
                                    calibration=good, options={"min_top1_agreement": 0.9}))
    assert ok.settings["min_top1_agreement"] == 0.9 <= ok.settings["top1_agreement"] <= 1
    bad = ExportSpec(tiny_classifier(), SHAPE, tmp_path / "bad.onnx", precision="int8", inputs=x,
                     calibration=(images(32, 2) * 1e-3,))
    with pytest.raises(ParityError, match=r"ONNX int8 parity check failed: top-1 agrees with torch on .* of 200 "
                                          r"images < 99.0% .*bad.onnx was not written"):
        EXPORTER.export(bad)
    with pytest.raises(ValueError, match=r"precision='int8' needs calibration batches"):
        EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "none.onnx", precision="int8"))
    with pytest.raises(ValueError, match=r"min_top1_agreement=0.9 applies to precision='int8' only"):
        EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "f.onnx", options={"min_top1_agreement": 0.9}))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.onnx"]


def test_a_figure_is_never_filed_under_the_wrong_precision(tmp_path):
    """onnxruntime refuses to time a float model as int8 or a Q/DQ model as fp32 (the figure would land in the
    other precision's table), locally as through the agent (which runs the same check)."""
    from profilers.runtimes import MeasureSpec, get_runtime

    rt = get_runtime("onnxruntime")
    f = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "f.onnx")).path
    q = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "q.onnx", precision="int8",
                                   calibration=(images(32, 2),))).path
    with pytest.raises(ValueError, match=r"precision='int8', but f.onnx is a float model"):
        rt.check(MeasureSpec(f, SHAPE, precision="int8"))
    with pytest.raises(ValueError, match=r"precision='fp32', but q.onnx is an int8 \(Q/DQ\) model"):
        rt.check(MeasureSpec(q, SHAPE))
    rt.check(MeasureSpec(q, SHAPE, precision="int8"))
    rt.check(MeasureSpec(f, SHAPE))
