"""int8 OpenVINO IR: the ONNX exporter's calibrated Q/DQ model converted (OpenVINO folds each Q/DQ pair into a
FakeQuantize and runs int8 kernels). Its agreement gate and the runtime's refusal of a figure under the wrong
precision are tested with onnxruntime's in test_onnx_int8.py."""

from __future__ import annotations

import pytest
import torch

from deploy_targets import ExportSpec, get_exporter
from tests.tinynets import CLASSIFIER_SHAPE, images, tiny_classifier

EXPORTER = get_exporter("openvino")
pytestmark = pytest.mark.skipif(EXPORTER.unavailable() is not None,
                                reason=f"openvino: unavailable: {EXPORTER.unavailable()}")
SHAPE = CLASSIFIER_SHAPE


def test_int8_ir_is_quantized_on_whole_batches(tmp_path):
    """Checked on 200 images of a static batch-1 model (whole batches): the IR holds FakeQuantize layers and
    its outputs differ from fp32 by quantization noise only; the IR and its weights are the only files."""
    net, x = tiny_classifier(), images(200, 1)
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "q.xml", precision="int8", inputs=x,
                                     calibration=tuple(images(128, 2).split(32)), options={"min_top1_agreement": 0.9}))
    assert res.settings["precision"] == "int8" and 0.9 <= res.settings["top1_agreement"] <= 1 < 1e4 * res.max_abs_diff
    assert "FakeQuantize" in res.path.read_text()
    one = images(1, 3)
    with torch.no_grad():
        ref = net(one).numpy()
    got = EXPORTER.bind(res.path, one.numpy())()
    assert 1e-4 < abs(got - ref).max() <= 0.1 * abs(ref).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.bin", "q.xml"]
