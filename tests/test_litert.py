"""The LiteRT target beyond the conformance suites: fp32 and int8 `.tflite` files checked in the interpreter.

Skipped with the exporter's own reason where litert-torch / ai-edge-litert are not installed (``pip install
'ofa-kit[litert]'``; see the README for why they are an extra of their own).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploy_targets import ExportSpec, ParityError, get_exporter
from tests.tinynets import CLASSIFIER_SHAPE, images

EXPORTER = get_exporter("litert")
pytestmark = pytest.mark.skipif(EXPORTER.unavailable() is not None,
                                reason=f"litert: unavailable: {EXPORTER.unavailable()}")
SHAPE = CLASSIFIER_SHAPE


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()


def test_fp32_and_int8_tflite_files(tmp_path):
    """fp32 matches PyTorch within 1e-4; int8 is really quantized (outputs differ, within the logit bound; a
    smaller file) and records its scheme; both are LiteRT flatbuffers that the interpreter runs."""
    net = _classifier()
    fp32 = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "f.tflite", inputs=images(3, 0)))
    assert fp32.max_abs_diff <= 1e-4 and fp32.path.read_bytes()[4:8] == b"TFL3"
    q = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "q.tflite", precision="int8", inputs=images(4, 1),
                                   calibration=tuple(images(64, 2).split(16))))
    s = q.settings
    assert s["precision"] == "int8" and s["calibration_images"] == 64 and s["quantization"]["scheme"] == "pt2e-litert"
    assert 1e-4 < q.max_abs_diff <= s["parity_tolerance"] and q.path.stat().st_size < 0.6 * fp32.path.stat().st_size
    x = images(1, 3)
    with torch.no_grad():
        ref = net(x).numpy()
    assert abs(EXPORTER.bind(fp32.path, x.numpy())() - ref).max() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tflite", "q.tflite"]


def test_litert_refusals(tmp_path):
    with pytest.raises(ValueError, match="litert exports a static batch"):
        EXPORTER.export(ExportSpec(_classifier(), SHAPE, tmp_path / "d.tflite", dynamic_batch=True))
    with pytest.raises(ValueError, match="precision='int8' needs calibration batches"):
        EXPORTER.export(ExportSpec(_classifier(), SHAPE, tmp_path / "n.tflite", precision="int8"))
    bad = ExportSpec(_classifier(), SHAPE, tmp_path / "bad.tflite", precision="int8", inputs=images(200, 1),
                     calibration=(images(16, 2) * 1e-3,))
    with pytest.raises(ParityError, match=r"LiteRT int8 parity check failed: top-1 agrees with torch on .* of 200"):
        EXPORTER.export(bad)
    with pytest.raises(ValueError, match=r"does not fit the LiteRT model's input \[1, 3, 16, 16\]"):
        EXPORTER.bind(EXPORTER.export(ExportSpec(_classifier(), SHAPE, tmp_path / "ok.tflite")).path,
                      images(2, 0).numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tflite"]
