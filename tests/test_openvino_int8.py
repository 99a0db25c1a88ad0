"""int8 OpenVINO IR: the ONNX exporter's calibrated Q/DQ model converted (OpenVINO folds each Q/DQ pair into a
FakeQuantize and runs int8 kernels), checked like every int8 target, and timed only as int8."""

from __future__ import annotations

import pytest
import torch

from deploy_targets import ExportSpec, ParityError, get_exporter
from tests.tinynets import CLASSIFIER_SHAPE, images, tiny_classifier

EXPORTER = get_exporter("openvino")
pytestmark = pytest.mark.skipif(EXPORTER.unavailable() is not None,
                                reason=f"openvino: unavailable: {EXPORTER.unavailable()}")
SHAPE = CLASSIFIER_SHAPE


def test_int8_ir_is_quantized_and_checked_by_top1_agreement(tmp_path):
    """Checked on 200 images of a static batch-1 model (whole batches): the IR holds FakeQuantize layers, its
    outputs differ from fp32 by quantization noise only, the scheme and the agreement are recorded; calibrated
    on images 1000x dimmer than the checked ones, agreement falls and nothing is written."""
    net, x = tiny_classifier(), images(200, 1)
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "q.xml", precision="int8", inputs=x,
                                     calibration=tuple(images(128, 2).split(32)), options={"min_top1_agreement": 0.9}))
    s = res.settings
    assert s["precision"] == "int8" and s["calibration_images"] == 128 and s["quantization"]["weights"].startswith("int8")
    assert 0.9 <= s["top1_agreement"] <= 1 and 1e-4 < res.max_abs_diff
    assert "FakeQuantize" in res.path.read_text()
    one = images(1, 3)
    with torch.no_grad():
        ref = net(one).numpy()
    got = EXPORTER.bind(res.path, one.numpy())()
    assert 1e-4 < abs(got - ref).max() <= 0.1 * abs(ref).max()
    bad = ExportSpec(tiny_classifier(), SHAPE, tmp_path / "bad.xml", precision="int8", inputs=x,
                     calibration=(images(32, 2) * 1e-3,))
    with pytest.raises(ParityError, match=r"OpenVINO int8 parity check failed: top-1 agrees with torch on .* of 200 "
                                          r"images < 99.0% .*bad.xml was not written"):
        EXPORTER.export(bad)
    with pytest.raises(ValueError, match=r"precision='int8' needs calibration batches"):
        EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "none.xml", precision="int8"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.bin", "q.xml"]


def test_openvino_times_int8_only_as_int8(tmp_path):
    """The openvino runtime measures the ONNX exporter's files: a float model is refused as int8 and a Q/DQ model
    as fp32 (either figure would land in the other precision's table)."""
    from profilers.runtimes import MeasureSpec, get_runtime

    rt, onnx = get_runtime("openvino"), get_exporter("onnx")
    f = onnx.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "f.onnx")).path
    q = onnx.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "q.onnx", precision="int8",
                               calibration=(images(32, 2),))).path
    with pytest.raises(ValueError, match=r"precision='int8', but f.onnx is a float model"):
        rt.check(MeasureSpec(f, SHAPE, precision="int8"))
    with pytest.raises(ValueError, match=r"precision='fp32', but q.onnx is an int8 \(Q/DQ\) model"):
        rt.check(MeasureSpec(q, SHAPE))
    rt.check(MeasureSpec(q, SHAPE, precision="int8"))
    rt.check(MeasureSpec(f, SHAPE))
